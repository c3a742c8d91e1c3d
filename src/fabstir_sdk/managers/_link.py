"""The I/O half of a session: one WebSocket that carries a :class:`ClientSession`.

The protocol state lives in the sans-I/O core (``protocol/_client.py``); this only moves
frames and keeps deadlines. A reader task feeds each frame to the core and queues the event;
waits take an absolute deadline on the loop's clock, so what counts as progress (and when a
deadline starts) is the caller's choice, not a side effect of whatever frame arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.protocol import State as WsState

from ..errors import (
    HostKeyMismatchError,
    HostUnreachableError,
    ProtocolError,
    StreamTimeoutError,
    ValidationError,
)
from ..protocol import MAX_FRAME_BYTES, ClientSession, HostErrorEvent, SessionInitAck

__all__ = ["Link", "ws_url"]

_INIT_KEY_ERRORS = {"DECRYPTION_FAILED", "ENCRYPTION_FAILED"}
_TICK = object()  # put on the queue by the timer: the waiter's deadline may have passed
_EARLY = 1e-3  # the event loop may run a timer up to its clock resolution early


def ws_url(api_url: str) -> str:
    """The host's WebSocket endpoint: ``http(s)://h:p`` -> ``ws(s)://h:p/v1/ws``."""
    base = api_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/v1/ws"
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + "/v1/ws"
    raise ValidationError(f"host api_url must be http(s)://..., got {api_url!r}")


class Link:
    """One WebSocket to a host; :meth:`next_event` returns the core's events in order.

    Opened in two steps so that the handshake can run before the session's job exists
    (while the payment is prepared): :meth:`dial` connects, :meth:`start` binds the
    session's :class:`ClientSession` and inits. Frames the host sends in between wait in
    the socket's buffer; no reader runs until :meth:`start`.
    """

    proto: ClientSession  # set by start()

    def __init__(self, ws: ClientConnection, url: str) -> None:
        self.ws = ws
        self.url = url
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self._deadline: float | None = None  # of the wait in progress
        self._timer: asyncio.TimerHandle | None = None
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def dial(cls, url: str, within: float) -> Link:
        """The WebSocket handshake alone; HostUnreachableError unless done in ``within`` s."""
        try:
            ws = await connect(url, open_timeout=within, max_size=MAX_FRAME_BYTES, ping_interval=20)
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise HostUnreachableError(f"cannot open {url}: {exc}") from None
        return cls(ws, url)

    @classmethod
    async def open(cls, url: str, proto: ClientSession, within: float) -> Link:
        """Connect and init; raises unless the host acknowledged within ``within`` s."""
        link = await cls.dial(url, within)
        await link.start(proto, within)
        return link

    @property
    def usable(self) -> bool:
        """Dialled and not closed by either side (a host may drop an idle connection)."""
        return not self.closed and self.ws.state is WsState.OPEN

    async def start(self, proto: ClientSession, within: float) -> None:
        """Bind ``proto`` and init; raises (and closes) unless the host acknowledged within
        ``within`` s."""
        self.proto = proto
        self._reader = self.loop.create_task(self._read())
        try:
            await self.send(proto.init_frame())
            due = self.loop.time() + within
            while True:
                event = await self.next_event(due, "session init", within)
                if isinstance(event, SessionInitAck):
                    return
                if isinstance(event, HostErrorEvent):
                    if event.code in _INIT_KEY_ERRORS:
                        raise HostKeyMismatchError(
                            f"the host could not open our session init ({event.code}): its "
                            "key differs from the publicKey in its registry metadata"
                        )
                    raise event.error
        except BaseException:
            await self.close()
            raise

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                try:
                    event = self.proto.receive(frame)
                except ProtocolError as exc:
                    self.events.put_nowait(exc)
                    continue
                if event is not None:
                    self.events.put_nowait(event)
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            self.proto.connection_lost()
            self.events.put_nowait(HostUnreachableError("the host closed the connection"))

    async def send(self, frame: str) -> None:
        if self.closed:
            raise HostUnreachableError("the connection to the host is closed")
        try:
            await self.ws.send(frame)
        except ConnectionClosed:
            raise HostUnreachableError("the host closed the connection") from None

    def pending(self) -> Any:
        """The next queued event without waiting, or None."""
        try:
            return self.events.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def next_event(self, due: float | None, waiting_for: str = "", within: float = 0) -> Any:
        """The next event, or :class:`StreamTimeoutError` once the loop's clock passes
        ``due`` (None: no deadline; ``waiting_for`` and ``within`` word the error). Errors
        the reader queued are raised.

        Called once per token, so it arms no timer of its own: one timer per link, moved
        only when a deadline comes sooner, ticks the queue when the waiter's deadline passes.
        """
        while True:
            try:
                event = self.events.get_nowait()  # the hot path: tokens arrive in bursts
            except asyncio.QueueEmpty:
                if due is not None:
                    self._arm(due)
                try:
                    event = await self.events.get()
                finally:
                    self._deadline = None
            if event is not _TICK:
                break
            if due is not None and self.loop.time() >= due - _EARLY:
                raise StreamTimeoutError(f"no {waiting_for} from the host in {within:.3g} s")
        if isinstance(event, BaseException):
            if isinstance(event, HostUnreachableError):
                self.events.put_nowait(event)  # every later wait sees it too
            raise event
        return event

    def _arm(self, deadline: float) -> None:
        self._deadline = deadline
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(deadline, self._ring)

    def _ring(self) -> None:
        self._timer, deadline = None, self._deadline
        if deadline is None:
            return  # nobody waits; the next wait arms it again
        if self.loop.time() >= deadline - _EARLY:
            self.events.put_nowait(_TICK)
        else:
            self._timer = self.loop.call_at(deadline, self._ring)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()
        self.closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
