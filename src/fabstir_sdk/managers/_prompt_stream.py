"""One streamed answer of a session.

A :class:`PromptStream` exists only inside ``async with session.stream(...)``: entering takes
the session's turn and leaving gives it back, however it is left (end, ``break``, exception,
cancellation), so an answer left half-read cannot keep the session busy.

Deadlines measure the answer's progress: ``first_token`` runs from the prompt to the first
token with text, ``idle`` from each token to the next (from when the stream waits for it:
the caller's time with a token is not the host's), ``total`` from the prompt to the end.
Keep-alives (pongs, notices, empty chunks, ``response_done``) move none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Literal

from ..errors import (
    FabstirError,
    HostError,
    HostFailedError,
    ProtocolError,
    StreamNotOpenError,
    StreamTimeoutError,
)
from ..models import StreamChunk, TokenUsage
from ..protocol import ChatMessage, HostErrorEvent, ResponseDone, StreamEnd, TokenChunk
from ._channel import Channel

__all__ = ["PromptStream"]

log = logging.getLogger("fabstir_sdk.session")

_CANCEL_DRAIN = 5.0  # seconds to wait for stream_end after stream_cancel


class PromptStream:
    """One streamed answer: ``async with session.stream(prompt) as s: async for chunk in s``.

    Leaving the ``async with`` before the end cancels the answer on the host
    (``stream_cancel``). ``usage`` and ``finish_reason`` are set once the answer is complete.
    """

    def __init__(
        self,
        channel: Channel,
        prompt: str,
        options: dict[str, Any],
        history: list[ChatMessage] | None = None,
    ) -> None:
        self._channel = channel
        self._prompt = prompt
        self._options = options
        self._history = history
        self._parts: list[str] = []
        self._index = 0
        self._state: Literal["new", "open", "done"] = "new"
        self._started = 0.0
        self._due: float | None = None  # of the next token, on the loop's clock
        self._idle = False  # a token came: the idle deadline starts at the next wait
        self._within = 0.0  # the deadline's length, for the error's wording
        self._answer_id: str | None = None  # the correlation id of the prompt sent
        self.usage: TokenUsage | None = None
        self.finish_reason: str | None = None

    def __repr__(self) -> str:
        return f"PromptStream(session_id={self._channel.session_id!r}, state={self._state!r})"

    @property
    def text(self) -> str:
        """Everything received so far."""
        return "".join(self._parts)

    async def __aenter__(self) -> PromptStream:
        if self._state != "new":
            raise StreamNotOpenError("a PromptStream can be entered once")
        turn = self._channel.turn
        await turn.acquire()
        try:
            await self._send_prompt()
        except BaseException:
            turn.release()
            raise
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._state == "open":
            await self._cancel()

    def __aiter__(self) -> AsyncIterator[StreamChunk]:
        return self

    async def __anext__(self) -> StreamChunk:
        if self._state == "new":
            raise StreamNotOpenError(
                "iterate a stream inside `async with session.stream(prompt) as stream:`"
            )
        if self._state == "done":
            raise StopAsyncIteration
        channel = self._channel
        try:
            while True:
                # a closed link still holds what came before the close: read it first
                link = channel.link or channel.require_link()
                try:
                    event = link.queued()  # tokens arrive in bursts: most are here already
                    if event is None:
                        if self._idle:  # the clock is read once a wait, not once a token
                            self._idle = False
                            self._arm(channel.timeouts.idle)
                        event = await link.next_event(
                            self._due, "token" if self._parts else "first token", self._within
                        )
                    if isinstance(event, HostErrorEvent):
                        raise event.error
                except (HostError, HostFailedError) as exc:  # a failed host, or its refusal
                    if not await channel.recover(exc):
                        raise
                    # the next host answers afresh: what the failed one sent is dropped from
                    # ``text`` (the chunks already yielded stay yielded)
                    self._parts.clear()
                    self.finish_reason = None
                    await self._send_prompt()
                    continue
                if isinstance(event, TokenChunk):
                    if not event.text:
                        continue  # the empty closing chunk some hosts send: no progress
                    self._parts.append(event.text)
                    self._index += 1
                    self._idle = True
                    return StreamChunk(event.text, self._index - 1)
                if isinstance(event, ResponseDone):
                    self.finish_reason = event.finish_reason
                elif isinstance(event, StreamEnd) and self._ours(event):
                    await self._end(event)
                    raise StopAsyncIteration
        except (FabstirError, asyncio.CancelledError) as exc:
            if isinstance(exc, StreamTimeoutError | asyncio.CancelledError | ProtocolError):
                await self._abandon()
            await self._fail()
            raise

    def _ours(self, end: StreamEnd) -> bool:
        """Whether ``end`` ends this answer: the core passes another answer's end only when
        none is current, so one queued while idle is skipped here."""
        return end.id is None or str(end.id) == self._answer_id

    def _arm(self, seconds: float) -> None:
        """The next token is due within ``seconds`` (and within ``total`` of the prompt)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        due, self._within = now + seconds, seconds
        total = self._channel.timeouts.total
        if total is not None and self._started + total < due:
            due, self._within = self._started + total, total
        self._due = due

    async def _send_prompt(self) -> None:
        channel = self._channel
        self._answer_id = await channel.send_prompt(self._prompt, self._options, self._history)
        self._started = asyncio.get_running_loop().time()
        self._idle = False
        self._arm(channel.timeouts.first_token)

    async def _abandon(self) -> None:
        """We stopped waiting for this answer: ask the host to stop generating (and billing)
        it. What it still sends is dropped by the protocol core, its stream_end counted."""
        link = self._channel.link
        if link is None:
            return
        if not link.closed:
            with contextlib.suppress(FabstirError):
                await link.send(link.proto.cancel_frame())
        link.proto.give_up()

    async def _end(self, end: StreamEnd) -> None:
        """The answer's usage: the host's, its completion tokens capped at what the text we
        received can hold (the protocol core's count of this answer)."""
        usage = end.usage
        link = self._channel.link
        counted = link.proto.take_count(self._answer_id) if link else None
        claimed = usage.completion_tokens if usage else end.tokens_used
        completion = claimed if counted is None else min(claimed, counted)
        prompt = usage.prompt_tokens if usage else 0
        total = usage.total_tokens if usage and completion == claimed else prompt + completion
        self.usage = TokenUsage(
            prompt_tokens=prompt, completion_tokens=completion, total_tokens=total
        )
        self.finish_reason = self.finish_reason or end.finish_reason
        await self._record()

    async def _cancel(self) -> None:
        """Ask the host to stop, and read until its ``stream_end`` (bounded)."""
        channel = self._channel
        link = channel.link
        try:
            if link is not None and not link.closed:
                await link.send(link.proto.cancel_frame())
                drain = min(_CANCEL_DRAIN, channel.timeouts.idle)
                due = asyncio.get_running_loop().time() + drain
                while True:
                    event = await link.next_event(due, "stream end", drain)
                    if isinstance(event, HostErrorEvent):
                        break  # the answer is over (the core gave it up)
                    if isinstance(event, TokenChunk) and event.text:
                        self._parts.append(event.text)
                    elif isinstance(event, StreamEnd) and self._ours(event):
                        await self._end(event)
                        return
        except StreamTimeoutError as exc:
            log.debug("cancelling the stream of session %s: %s", channel.session_id, exc)
            if link is not None:
                link.proto.give_up()
        except FabstirError as exc:
            log.debug("cancelling the stream of session %s: %s", channel.session_id, exc)
            await channel.drop_link()
        await self._fail()

    async def _fail(self) -> None:
        if self._state == "open":
            link = self._channel.link
            if link is not None:
                link.proto.give_up()
            await self._record(partial=True)

    async def _record(self, *, partial: bool = False) -> None:
        """Keep the exchange in S5 (even a broken one) and free the session for the next."""
        self._state = "done"
        channel = self._channel
        try:
            await channel.append(self._prompt, self.text, partial=partial)
        finally:
            channel.turn.release()
            channel.audit_claims()
