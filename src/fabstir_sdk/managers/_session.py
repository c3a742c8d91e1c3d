"""A session with a host, and its streamed answers.

A :class:`Session` is a paid job, a :class:`~fabstir_sdk.managers._link.Link` to the host
(whose sans-I/O core holds the protocol state) and a conversation in S5. A
:class:`PromptStream` is one answer; it exists only inside ``async with session.stream(...)``:
entering takes the session's turn and leaving gives it back, however it is left (end,
``break``, exception, cancellation), so an answer left half-read cannot keep the session busy.

Deadlines measure the answer's progress: ``first_token`` runs from the prompt to the first
token with text, ``idle`` from each token to the next, ``total`` from the prompt to the end.
Keep-alives (pongs, notices, empty chunks, ``response_done``) move none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Literal

from .._display import html_table, native_amount
from ..config import SessionTimeouts
from ..errors import (
    FabstirError,
    HostError,
    HostFailedError,
    HostOverclaimError,
    HostUnreachableError,
    ProtocolError,
    SessionClosedError,
    StreamNotOpenError,
    StreamTimeoutError,
    ValidationError,
)
from ..models import HostInfo, PromptResult, SessionJob, Settlement, StreamChunk, TokenUsage
from ..protocol import (
    ChatMessage,
    CheckpointFailed,
    CheckpointSubmitted,
    HostErrorEvent,
    ProofSubmitted,
    ResponseDone,
    StreamEnd,
    TokenChunk,
)
from ._backend import Failover, Plan, SessionBackend
from ._link import Link
from ._proofs import ProofLog

__all__ = ["PromptStream", "Session"]

log = logging.getLogger("fabstir_sdk.session")

_CANCEL_DRAIN = 5.0  # seconds to wait for stream_end after stream_cancel


class PromptStream:
    """One streamed answer: ``async with session.stream(prompt) as s: async for chunk in s``.

    Leaving the ``async with`` before the end cancels the answer on the host
    (``stream_cancel``). ``usage`` and ``finish_reason`` are set once the answer is complete.
    """

    def __init__(
        self,
        session: Session,
        prompt: str,
        options: dict[str, Any],
        history: list[ChatMessage] | None = None,
    ) -> None:
        self._session = session
        self._prompt = prompt
        self._options = options
        self._history = history
        self._parts: list[str] = []
        self._index = 0
        self._state: Literal["new", "open", "done"] = "new"
        self._started = 0.0
        self._due: float | None = None  # of the next token, on the loop's clock
        self._within = 0.0  # the deadline's length, for the error's wording
        self._answer_id: str | None = None  # the correlation id of the prompt sent
        self.usage: TokenUsage | None = None
        self.finish_reason: str | None = None

    def __repr__(self) -> str:
        return f"PromptStream(session_id={self._session.session_id!r}, state={self._state!r})"

    @property
    def text(self) -> str:
        """Everything received so far."""
        return "".join(self._parts)

    async def __aenter__(self) -> PromptStream:
        if self._state != "new":
            raise StreamNotOpenError("a PromptStream can be entered once")
        session = self._session
        await session._turn.acquire()
        try:
            await self._send_prompt()
        except BaseException:
            session._turn.release()
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
        session = self._session
        try:
            while True:
                # a closed link still holds what came before the close: read it first
                link = session._link or session._require_link()
                try:
                    event = await link.next_event(
                        self._due, "token" if self._parts else "first token", self._within
                    )
                    if isinstance(event, HostErrorEvent):
                        raise event.error
                except (HostError, HostFailedError) as exc:  # a failed host, or its refusal
                    if isinstance(exc, HostFailedError):  # not offered again until re-checked
                        session._backend.discovery.report_failure(session.host.address)
                    if not session._plan.failover:
                        raise
                    await self._move(exc)
                    continue
                if isinstance(event, TokenChunk):
                    if not event.text:
                        continue  # the empty closing chunk some hosts send: no progress
                    self._parts.append(event.text)
                    self._index += 1
                    self._arm(session.timeouts.idle)
                    return StreamChunk(text=event.text, index=self._index - 1)
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
        total = self._session.timeouts.total
        if total is not None and self._started + total < due:
            due, self._within = self._started + total, total
        self._due = due

    async def _send_prompt(self) -> None:
        session = self._session
        link = session._require_link()
        history = self._history if self._history is not None else session._replay
        frame = link.proto.prompt_frame(self._prompt, messages=history, **self._options)
        self._answer_id = link.proto.answer_id
        await link.send(frame)
        session._replay = None
        self._started = asyncio.get_running_loop().time()
        self._arm(session.timeouts.first_token)

    async def _abandon(self) -> None:
        """We stopped waiting for this answer: ask the host to stop generating (and billing)
        it. What it still sends is dropped by the protocol core, its stream_end counted."""
        link = self._session._link
        if link is None:
            return
        if not link.closed:
            with contextlib.suppress(FabstirError):
                await link.send(link.proto.cancel_frame())
        link.proto.give_up()

    async def _move(self, cause: FabstirError) -> None:
        """Fail over mid-answer: the next host answers the prompt afresh, so what the failed
        host sent is dropped from ``text`` (the chunks already yielded stay yielded)."""
        await self._session._failover(cause)
        self._parts.clear()
        self.finish_reason = None
        await self._send_prompt()

    async def _end(self, end: StreamEnd) -> None:
        usage = end.usage
        self.usage = TokenUsage(
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else end.tokens_used,
            total_tokens=usage.total_tokens if usage else end.tokens_used,
        )
        self.finish_reason = self.finish_reason or end.finish_reason
        await self._record()

    async def _cancel(self) -> None:
        """Ask the host to stop, and read until its ``stream_end`` (bounded)."""
        session = self._session
        link = session._link
        try:
            if link is not None and not link.closed:
                await link.send(link.proto.cancel_frame())
                drain = min(_CANCEL_DRAIN, session.timeouts.idle)
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
            log.debug("cancelling the stream of session %s: %s", session.session_id, exc)
            if link is not None:
                link.proto.give_up()
        except FabstirError as exc:
            log.debug("cancelling the stream of session %s: %s", session.session_id, exc)
            await session._drop_link()
        await self._fail()

    async def _fail(self) -> None:
        if self._state == "open":
            link = self._session._link
            if link is not None:
                link.proto.give_up()
            await self._record(partial=True)

    async def _record(self, *, partial: bool = False) -> None:
        """Keep the exchange in S5 (even a broken one) and free the session for the next."""
        self._state = "done"
        session = self._session
        try:
            await session._append(self._prompt, self.text, partial=partial)
        finally:
            session._turn.release()


class Session:
    """A paid session with a host. Use :meth:`stream` or :meth:`send_prompt`, then
    :meth:`end` (the host settles, no gas) or :meth:`complete` (you settle now)."""

    def __init__(
        self,
        backend: SessionBackend,
        *,
        job: SessionJob,
        host: HostInfo,
        model: str,
        link: Link | None,
        timeouts: SessionTimeouts,
        plan: Plan,
    ) -> None:
        self._backend = backend
        self._plan = plan
        self.failovers: list[Failover] = []
        self._failed_hosts: set[str] = set()
        self.conversation_id = str(job.id)
        self.model = model
        self.timeouts = timeouts
        self._link: Link | None = None
        self._bind(job, host, link)
        self._turn = asyncio.Lock()
        self._replay: list[ChatMessage] | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"Session(job_id={self.job_id}, host={self.host.address!r}, {state})"

    def _repr_html_(self) -> str:
        return html_table(
            f"Session {self.session_id}",
            [
                ("state", "closed" if self._closed else "open"),
                ("connected", self.connected),
                ("model", self.model),
                ("host", self.host.address),
                ("host API", self.host.api_url),
                ("price / 1000 tokens", native_amount(self.price_per_token, self.payment_token)),
                ("tokens reported", self.tokens_reported),
                ("conversation", self.conversation_id),
            ],
        )

    def _bind(self, job: SessionJob, host: HostInfo, link: Link | None) -> None:
        """Attach the session to ``job`` with ``host`` (at creation, and after a failover)."""
        self.job_id = job.id
        self.session_id = str(job.id)
        self.host = host
        self.price_per_token = job.price_per_token
        self.payment_token = job.payment_token
        self.proof_interval = job.proof_interval
        #: Who pays: you, or the owner whose delegate opened the session (``payer=``).
        self.depositor = job.depositor
        self._tokens_before = 0  # reported on this job's earlier connections
        self._proofs = ProofLog(job.id)
        self._link = link

    @property
    def tokens_reported(self) -> int:
        """Tokens the host reported for this job (``stream_end``), answers given up included."""
        link = self._link
        return self._tokens_before + (link.proto.tokens_reported if link else 0)

    @tokens_reported.setter
    def tokens_reported(self, value: int) -> None:
        link = self._link
        self._tokens_before = value - (link.proto.tokens_reported if link else 0)

    @property
    def proofs(self) -> ProofLog:
        """The proofs the host announced on this job so far."""
        link = self._link
        if link is not None:
            for proof in link.proto.proofs:
                self._proofs.add(proof)
        return self._proofs

    @property
    def connected(self) -> bool:
        return self._link is not None and not self._link.closed

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.end()

    def stream(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        history: list[ChatMessage] | None = None,
    ) -> PromptStream:
        """Stream the answer to ``prompt`` (use it in ``async with``).

        The host keeps the conversation's context; ``history`` (the messages before this
        prompt) makes it start from those instead.
        """
        if not isinstance(prompt, str) or not prompt:
            raise ValidationError("prompt must be a non-empty string")
        options: dict[str, Any] = {}
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        if temperature is not None:
            options["temperature"] = temperature
        if history is not None:
            history = [ChatMessage.model_validate(m) for m in history]
        return PromptStream(self, prompt, options, history)

    async def send_prompt(
        self,
        prompt: str,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        history: list[ChatMessage] | None = None,
    ) -> PromptResult:
        """The whole answer to ``prompt`` at once."""
        async with self.stream(
            prompt, max_tokens=max_tokens, temperature=temperature, history=history
        ) as s:
            async for _ in s:
                pass
        assert s.usage is not None
        return PromptResult(text=s.text, usage=s.usage, finish_reason=s.finish_reason)

    async def end(self) -> None:
        """Disconnect; the host submits its last proof and settles (no gas for you)."""
        if self._closed:
            return
        self._closed = True
        if self._link is not None and not self._link.closed:
            with contextlib.suppress(FabstirError):
                await self._link.send(self._link.proto.end_frame())
        await self._drop_link()
        self._backend.record_proofs_soon(self._proofs)
        await self._backend.metadata_written(self.job_id, quiet=True)
        self._backend.sessions.pop(self.session_id, None)

    async def complete(self) -> Settlement:
        """Settle now: the host bills what it streamed, then you complete the job.

        Asks the host for its final proof (``timeouts.settle``), waits for that proof's
        transaction, keeps every proof announced on the session in S5 (``"proofs"``,
        checked against the chain), stores the conversation and passes its CID to
        ``completeSessionJob``. If the chain holds more tokens than the host reported to us,
        it completes at once and warns with :class:`HostOverclaimError`.
        """
        if self._closed:
            raise SessionClosedError(f"session {self.session_id} is already closed")
        backend = self._backend
        if self.depositor != backend.ctx.require_sender().address:
            raise ValidationError(
                f"session {self.session_id} is paid by {self.depositor}: only the depositor or "
                "the host can complete it; end() lets the host settle"
            )
        async with self._turn:
            # the conversation is final: stored while the host proves its last tokens
            stored = backend.conversation_stored(self.conversation_id)
            try:
                answer = await self._final_checkpoint()
                if answer is not None and answer.tx_hash:
                    try:
                        await backend.proof_mined(answer.tx_hash, within=self.timeouts.settle)
                    except FabstirError as exc:
                        log.warning("the final proof of %s is not mined: %s", self.session_id, exc)
                reported = self.tokens_reported
                expected = max(reported, self.proof_interval) if reported else 0
                job, proofs = await backend.billed(self.job_id, self.proofs)
                overclaim = job.tokens_used > expected
                await backend.metadata_written(self.job_id)
                ref = await stored
            finally:
                await backend.drop(stored)
            settlement = await backend.settle(self.job_id, ref.cid)
            backend.store_soon(self.job_id, "proofs", {**proofs, "settled": True})
        self._closed = True
        await self._drop_link()
        self._backend.sessions.pop(self.session_id, None)
        if overclaim:
            backend.discovery.report_overclaim(
                self.host.address, claimed=job.tokens_used, reported=reported
            )
            warnings.warn(
                HostOverclaimError(
                    f"host {self.host.address} claimed {job.tokens_used} tokens on session "
                    f"{self.session_id} but reported {reported} "
                    f"(at most {expected} billable); the session was completed at once"
                ),
                stacklevel=2,
            )
        return settlement

    async def _final_checkpoint(self) -> CheckpointSubmitted | None:
        """Ask the host to bill everything now; its answer (None: it did not answer)."""
        link = self._link
        if link is None or link.closed or not self.tokens_reported:
            return None
        try:
            await link.send(link.proto.checkpoint_request_frame())
            settle = self.timeouts.settle
            due = link.loop.time() + settle
            while True:
                event = await link.next_event(due, "final checkpoint", settle)
                self._note(event)
                if isinstance(event, CheckpointSubmitted):
                    return event
                if isinstance(event, CheckpointFailed):
                    log.warning("no final checkpoint from %s: %s", self.host.address, event.error)
                    return None
        except FabstirError as exc:
            log.warning("no final checkpoint from %s: %s", self.host.address, exc)
            return None

    def _note(self, event: object) -> None:
        """Keep the proofs the host announces (stream events pass through here too)."""
        if isinstance(event, ProofSubmitted) and event.job_id in (None, self.job_id):
            self._proofs.add(event)

    async def _failover(self, cause: FabstirError) -> None:
        """Settle the failed host's job (you pay its proven tokens only) and continue with
        the next best host for the model, replaying the conversation from S5."""
        backend = self._backend
        old_host, old_job = self.host.address, self.job_id
        log.warning("session %s: host %s failed (%s); failing over", old_job, old_host, cause)
        self._failed_hosts.add(old_host)
        backend.discovery.report_failure(old_host)
        self._backend.sessions.pop(self.session_id, None)
        await self._drop_link()
        backend.record_proofs_soon(self._proofs)
        settlement: Settlement | None
        try:
            settlement = await backend.settle(old_job)
        except FabstirError as exc:  # e.g. the host completed it already
            log.warning("could not settle abandoned job %s: %s", old_job, exc)
            settlement = None
        history = await backend.history(self.conversation_id)
        info, price = await backend.next_host(self._plan, exclude=self._failed_hosts)
        job, link = await backend.open(self._plan, info, price, self.timeouts)
        self._bind(job, info, link)
        self._replay = history or None
        backend.sessions[self.session_id] = self
        event = Failover(
            reason=str(cause),
            old_host=old_host,
            old_job_id=old_job,
            new_host=info.address,
            new_job_id=job.id,
            settlement=settlement,
        )
        self.failovers.append(event)
        log.info(
            "session moved from job %s on %s to job %s on %s",
            old_job,
            old_host,
            job.id,
            info.address,
        )

    def _require_link(self) -> Link:
        if self._closed:
            raise SessionClosedError(f"session {self.session_id} is closed")
        if self._link is None or self._link.closed:
            raise HostUnreachableError(
                f"the connection to host {self.host.address} is closed: resume the session"
            )
        return self._link

    async def _drop_link(self) -> None:
        link = self._link
        if link is not None:
            for proof in link.proto.proofs:
                self._proofs.add(proof)
            self._tokens_before += link.proto.tokens_reported
            self._link = None
            await link.close()

    async def _append(self, prompt: str, answer: str, *, partial: bool) -> None:
        await self._backend.metadata_written(self.job_id)
        await self._backend.append(self.conversation_id, prompt, answer, partial=partial)
