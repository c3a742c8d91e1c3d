"""The I/O half of a session: one WebSocket that carries a :class:`ClientSession`.

The protocol state lives in the sans-I/O core (``protocol/_client.py``); this only moves
frames and keeps deadlines. Each message is fed to the core as the connection parses it
(no reader task, no second queue: one per streamed token, so it is the hot path) and its
event queued; waits take an absolute deadline on the loop's clock, so what counts as
progress (and when a deadline starts) is the caller's choice, not a side effect of whatever
frame arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import deque
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import Frame, Opcode
from websockets.protocol import State as WsState
from websockets.proxy import get_proxy
from websockets.uri import WebSocketURI, parse_uri

from ..errors import (
    HostKeyMismatchError,
    HostUnreachableError,
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


def _proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (as websockets finds it), or None."""
    try:
        uri = parse_uri(url)
    except InvalidURI:
        return None  # connect() raises it
    return _proxy_for(uri.host, uri.port, uri.secure)


@functools.lru_cache(maxsize=1024)
def _proxy_for(host: str, port: int, secure: bool) -> str | None:
    """Read once per host and process: websockets reads every proxy variable of the
    environment at each connection (about a millisecond of CPU)."""
    return get_proxy(WebSocketURI(secure, host, port, "/", "", None, None))


class _Connection(ClientConnection):
    """A client connection that hands each whole message to :attr:`deliver` as it parses
    it, instead of queueing it for ``recv()`` (which is then never used). Messages parsed
    before a :class:`Link` takes the connection wait in :attr:`early`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.early: deque[str | bytes] = deque()
        self.deliver: Callable[[str | bytes], None] = self.early.append
        self.lost: Callable[[], None] | None = None
        self._fragments: list[bytes] | None = None
        self._text = False

    def process_event(self, event: Any) -> None:
        if self.response is None or not isinstance(event, Frame):
            super().process_event(event)  # the handshake's response
            return
        opcode, data = event.opcode, bytes(event.data)  # bytes already: not copied
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if not event.fin:  # the first of a fragmented message
                self._fragments, self._text = [data], opcode is Opcode.TEXT
                return
            text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            if self._fragments is None:  # pragma: no cover - the protocol refuses it first
                return
            self._fragments.append(data)
            if not event.fin:
                return
            data, text, self._fragments = b"".join(self._fragments), self._text, None
        else:
            super().process_event(event)  # ping, pong, close
            return
        if text:
            try:
                self.deliver(data.decode())
            except UnicodeDecodeError:
                self.deliver(data)  # the core refuses it as not JSON
        else:
            self.deliver(data)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.lost is not None:
            self.lost()


class Link:
    """One WebSocket to a host; :meth:`next_event` returns the core's events in order.

    Opened in two steps so that the handshake can run before the session's job exists
    (while the payment is prepared): :meth:`dial` connects, :meth:`start` binds the
    session's :class:`ClientSession` and inits. Messages the host sends in between wait in
    the connection (``_Connection.early``) until :meth:`start` feeds them to the core.
    """

    proto: ClientSession  # set by start()

    def __init__(self, ws: _Connection, url: str) -> None:
        self.ws = ws
        self.url = url
        self.events: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self._deadline: float | None = None  # of the wait in progress
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    async def dial(cls, url: str, within: float) -> Link:
        """The WebSocket handshake alone; HostUnreachableError unless done in ``within`` s."""
        try:
            ws = await connect(
                url,
                open_timeout=within,
                max_size=MAX_FRAME_BYTES,
                ping_interval=20,
                create_connection=_Connection,
                proxy=_proxy(url),
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise HostUnreachableError(f"cannot open {url}: {exc}") from None
        assert isinstance(ws, _Connection)
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
        ws = self.ws
        while ws.early:  # what came before the session existed, in order
            self._receive(ws.early.popleft())
        ws.deliver = self._receive
        ws.lost = self._lost
        if ws.protocol.state is WsState.CLOSED:
            self._lost()
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

    def _receive(self, frame: str | bytes) -> None:
        """A message from the host: its event (or the error it makes) is queued."""
        if self.closed:
            return
        try:
            event = self.proto.receive(frame)
        except Exception as exc:  # a protocol break (or a bug): the waiter raises it
            self._put(exc)
            return
        if event is not None:
            self._put(event)

    def _lost(self) -> None:
        if self.closed:
            return
        self.closed = True
        if hasattr(self, "proto"):  # started
            self.proto.connection_lost()
        self._put(HostUnreachableError("the host closed the connection"))

    def _put(self, event: Any) -> None:
        self.events.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def send(self, frame: str) -> None:
        if self.closed:
            raise HostUnreachableError("the connection to the host is closed")
        try:
            await self.ws.send(frame)
        except ConnectionClosed:
            raise HostUnreachableError("the host closed the connection") from None

    def pending(self) -> Any:
        """The next queued event without waiting, or None."""
        return self.events.popleft() if self.events else None

    def queued(self) -> Any:
        """The next queued event if it is a plain one (no timer tick, no error), else None
        and nothing taken: the per-token path, without a coroutine a token."""
        events = self.events
        if events:
            event = events[0]
            if event is not _TICK and not isinstance(event, BaseException):
                return events.popleft()
        return None

    async def next_event(self, due: float | None, waiting_for: str = "", within: float = 0) -> Any:
        """The next event, or :class:`StreamTimeoutError` once the loop's clock passes
        ``due`` (None: no deadline; ``waiting_for`` and ``within`` word the error). Errors
        the reader queued are raised.

        Called once per token, so it arms no timer of its own: one timer per link, moved
        only when a deadline comes sooner, ticks the queue when the waiter's deadline passes.
        """
        events = self.events
        while True:
            if not events:
                if due is not None:
                    self._arm(due)
                self._waiter = waiter = self.loop.create_future()
                try:
                    await waiter
                finally:
                    self._waiter = self._deadline = None
                continue
            event = events.popleft()  # the hot path: tokens arrive in bursts
            if event is not _TICK:
                break
            if due is not None and self.loop.time() >= due - _EARLY:
                raise StreamTimeoutError(f"no {waiting_for} from the host in {within:.3g} s")
        if isinstance(event, BaseException):
            if isinstance(event, HostUnreachableError):
                events.appendleft(event)  # every later wait sees it too
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
            self._put(_TICK)
        else:
            self._timer = self.loop.call_at(deadline, self._ring)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._lost()
