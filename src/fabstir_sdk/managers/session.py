"""SessionManager and Session: a paid, end-to-end encrypted conversation with a host.

A session is a session job on chain (the escrowed deposit), a WebSocket to the host carrying
the wire protocol of :mod:`fabstir_sdk.protocol`, and a conversation in the user's S5 storage.
The protocol state machine (:class:`~fabstir_sdk.protocol.ClientSession`) does the crypto;
this module only moves frames, keeps deadlines and records what was said and billed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from .._display import html_table, native_amount
from ..chain.addresses import ZERO_ADDRESS, checksum_address
from ..chain.client import Read
from ..chain.model_id import model_id as to_model_id
from ..chain.units import Amount, to_base_units
from ..config import SessionTimeouts
from ..errors import (
    FabstirError,
    HostError,
    HostKeyMismatchError,
    HostNotActiveError,
    HostOverclaimError,
    HostUnreachableError,
    ModelNotApprovedError,
    NoHostAvailableError,
    PriceAboveMaximumError,
    ProtocolError,
    SessionClosedError,
    SessionNotActiveError,
    StreamTimeoutError,
    ValidationError,
)
from ..models import (
    Conversation,
    HostInfo,
    Message,
    PromptResult,
    Proof,
    SessionJob,
    SessionState,
    SessionStatus,
    Settlement,
    StoredRef,
    StreamChunk,
    TokenUsage,
)
from ..protocol import (
    MAX_FRAME_BYTES,
    ChatMessage,
    CheckpointSubmitted,
    ClientSession,
    ProofSubmitted,
    ResponseDone,
    StreamEnd,
    TokenChunk,
)
from ._context import Context

if TYPE_CHECKING:
    from .discovery import DiscoveryManager
    from .host import HostManager
    from .payment import PaymentManager
    from .storage import StorageManager

__all__ = ["Failover", "PromptStream", "Session", "SessionManager"]

log = logging.getLogger("fabstir_sdk.session")

Payment = Literal["usdc", "eth", "deposit"]
_INIT_KEY_ERRORS = {"DECRYPTION_FAILED", "ENCRYPTION_FAILED"}
_CANCEL_DRAIN = 5.0  # seconds to wait for stream_end after stream_cancel
_TICK = object()  # put on a link's queue by its timer: a waiter's deadline may have passed
_EARLY = 1e-3  # the event loop may run a timer up to its clock resolution early


def ws_url(api_url: str) -> str:
    """The host's WebSocket endpoint: ``http(s)://h:p`` -> ``ws(s)://h:p/v1/ws``."""
    base = api_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/v1/ws"
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + "/v1/ws"
    raise ValidationError(f"host api_url must be http(s)://..., got {api_url!r}")


@dataclass(frozen=True)
class _Plan:
    """What a session was bought with: enough to buy the same from another host."""

    model: str
    model_id: str
    payment: Payment
    currency: Literal["usdc", "eth"]
    token: str
    deposit: Amount
    max_price_per_token: int | None
    duration: int
    proof_interval: int
    proof_timeout_window: int
    encryption: bool
    failover: bool


@dataclass(frozen=True)
class Failover:
    """A session moved to another host: the old job was settled (``settlement``)."""

    reason: str
    old_host: str
    old_job_id: int
    new_host: str
    new_job_id: int
    settlement: Settlement | None


class _Link:
    """One WebSocket to a host: a reader task turns frames into events on a queue."""

    def __init__(self, ws: ClientConnection, proto: ClientSession) -> None:
        self.ws = ws
        self.proto = proto
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.checkpoints: asyncio.Queue[CheckpointSubmitted | BaseException] = asyncio.Queue()
        self.proofs: list[ProofSubmitted] = []
        self.closed = False
        #: The correlation id of the final checkpoint request (``Session.complete``).
        self.final_id = f"{proto.session_id}-final"
        self._loop = asyncio.get_running_loop()
        self._deadline: float | None = None  # of the wait in progress, on the loop's clock
        self._timer: asyncio.TimerHandle | None = None
        self._reader = self._loop.create_task(self._read())

    @classmethod
    async def open(cls, url: str, proto: ClientSession, timeouts: SessionTimeouts) -> _Link:
        try:
            ws = await connect(
                url, open_timeout=timeouts.connect, max_size=MAX_FRAME_BYTES, ping_interval=20
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise HostUnreachableError(f"cannot open {url}: {exc}") from None
        link = cls(ws, proto)
        try:
            await link.send(proto.init_frame())
            deadline = time.monotonic() + timeouts.connect
            while not proto.ready:
                try:
                    await link.next_event(deadline - time.monotonic(), "session init")
                except HostError as exc:
                    if exc.code in _INIT_KEY_ERRORS:
                        raise HostKeyMismatchError(
                            f"the host could not open our session init ({exc.code}): its key "
                            "differs from the publicKey in its registry metadata"
                        ) from None
                    raise
        except BaseException:
            await link.close()
            raise
        return link

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                try:
                    event = self.proto.receive(frame)
                except (HostError, ProtocolError) as exc:
                    if isinstance(exc, HostError) and exc.id == self.final_id:
                        self.checkpoints.put_nowait(exc)  # the final checkpoint failed
                    else:
                        self.events.put_nowait(exc)
                    continue
                if isinstance(event, CheckpointSubmitted):
                    self.checkpoints.put_nowait(event)
                elif isinstance(event, ProofSubmitted):
                    self.proofs.append(event)
                else:
                    self.events.put_nowait(event)
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            gone = HostUnreachableError("the host closed the connection")
            self.events.put_nowait(gone)
            self.checkpoints.put_nowait(gone)

    async def send(self, frame: str) -> None:
        if self.closed:
            raise HostUnreachableError("the connection to the host is closed")
        try:
            await self.ws.send(frame)
        except ConnectionClosed:
            raise HostUnreachableError("the host closed the connection") from None

    async def next_event(self, within: float, waiting_for: str) -> Any:
        """The next event within ``within`` seconds, else :class:`StreamTimeoutError`.

        Called once per token, so it arms no timer of its own (``asyncio.timeout`` per wait
        cost more than the rest of a token): one timer per link, moved only when a deadline
        comes sooner, puts a tick on the queue when the waiting caller's deadline passes.
        """
        deadline: float | None = None
        while True:
            try:
                event = self.events.get_nowait()  # the hot path: tokens arrive in bursts
            except asyncio.QueueEmpty:
                if deadline is None:
                    deadline = self._loop.time() + max(within, 0)
                self._arm(deadline)
                try:
                    event = await self.events.get()
                finally:
                    self._deadline = None
            if event is not _TICK:
                break
            if deadline is not None and self._loop.time() >= deadline - _EARLY:
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
            self._timer = self._loop.call_at(deadline, self._ring)

    def _ring(self) -> None:
        """The timer: tick the waiter whose deadline passed, or wait for the current one."""
        self._timer, deadline = None, self._deadline
        if deadline is None:
            return  # nobody waits; the next wait arms it again
        if self._loop.time() >= deadline - _EARLY:
            self.events.put_nowait(_TICK)
        else:
            self._timer = self._loop.call_at(deadline, self._ring)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


class PromptStream:
    """One streamed answer: ``async with session.stream(prompt) as s: async for chunk in s``.

    Leaving the ``async with`` before the end cancels the answer on the host
    (``stream_cancel``). ``usage`` and ``finish_reason`` are set once the answer is complete.
    """

    def __init__(self, session: Session, prompt: str, options: dict[str, Any]) -> None:
        self._session = session
        self._prompt = prompt
        self._options = options
        self._parts: list[str] = []
        self._index = 0
        self._state: Literal["new", "open", "done"] = "new"
        self._id: str | None = None  # the correlation id of the prompt frame sent
        self._deadline: float | None = None
        self._started = 0.0
        self.usage: TokenUsage | None = None
        self.finish_reason: str | None = None

    def __repr__(self) -> str:
        return f"PromptStream(session_id={self._session.session_id!r}, state={self._state!r})"

    @property
    def text(self) -> str:
        """Everything received so far."""
        return "".join(self._parts)

    async def __aenter__(self) -> PromptStream:
        await self._begin()
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
            await self._begin()
        if self._state == "done":
            raise StopAsyncIteration
        session = self._session
        timeouts = session.timeouts
        try:
            while True:
                wait = timeouts.first_token if not self._parts else timeouts.idle
                if self._deadline is not None:
                    wait = min(wait, self._deadline - time.monotonic())
                try:
                    # a closed link still holds what came before the close: read it first
                    link = session._link or session._require_link()
                    event = await link.next_event(wait, "token" if self._parts else "first token")
                except HostError as exc:
                    if self._stale(exc.id):
                        log.debug("session %s: an earlier answer's %s", session.session_id, exc)
                        continue
                    if not session._plan.failover:
                        raise
                    await self._move(exc)
                    continue
                except (HostUnreachableError, StreamTimeoutError) as exc:
                    if not session._plan.failover:
                        raise
                    await self._move(exc)
                    continue
                if self._stale(getattr(event, "id", None)):
                    session._absorb(event)
                    continue
                if isinstance(event, TokenChunk):
                    if not event.text:
                        continue  # the empty closing chunk some hosts send
                    self._parts.append(event.text)
                    self._index += 1
                    return StreamChunk(text=event.text, index=self._index - 1)
                if isinstance(event, ResponseDone):
                    self.finish_reason = event.finish_reason
                elif isinstance(event, StreamEnd):
                    await self._end(event)
                    raise StopAsyncIteration
        except (FabstirError, asyncio.CancelledError) as exc:
            if isinstance(exc, StreamTimeoutError | asyncio.CancelledError):
                await self._abandon()
            await self._fail()
            raise

    async def _abandon(self) -> None:
        """We stopped waiting for this answer: ask the host to stop generating (and billing)
        it. What it sent before it stopped is skipped later, its stream_end still counted."""
        link = self._session._link
        if link is not None and not link.closed:
            with contextlib.suppress(FabstirError):
                await link.send(link.proto.cancel_frame())

    async def _begin(self) -> None:
        if self._state != "new":
            return
        session = self._session
        await session._turn.acquire()
        try:
            await self._send_prompt()
        except BaseException:
            session._turn.release()
            raise
        self._state = "open"
        self._started = time.monotonic()
        total = session.timeouts.total
        self._deadline = None if total is None else self._started + total

    def _stale(self, cid: object) -> bool:
        """Whether an event belongs to an earlier answer (one that failed or was cancelled
        before its ``stream_end``). Hosts that echo no ``id`` cannot be told apart."""
        return cid is not None and str(cid) != self._id

    async def _send_prompt(self) -> None:
        session = self._session
        link = session._require_link()
        self._id = f"{session.session_id}-{next(session._ids)}"
        frame = link.proto.prompt_frame(
            self._prompt,
            id=self._id,
            messages=session._replay,
            **self._options,
        )
        await link.send(frame)
        session._replay = None

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
        self._session.tokens_reported += end.tokens_used
        await self._record()

    async def _cancel(self) -> None:
        """Ask the host to stop, and read until its ``stream_end`` (bounded)."""
        session = self._session
        link = session._link
        try:
            if link is not None and not link.closed:
                await link.send(link.proto.cancel_frame())
                deadline = time.monotonic() + min(_CANCEL_DRAIN, session.timeouts.idle)
                while True:
                    event = await link.next_event(deadline - time.monotonic(), "stream end")
                    if self._stale(getattr(event, "id", None)):
                        session._absorb(event)
                    elif isinstance(event, TokenChunk) and event.text:
                        self._parts.append(event.text)
                    elif isinstance(event, StreamEnd):
                        await self._end(event)
                        return
        except FabstirError as exc:
            log.debug("cancelling the stream of session %s: %s", session.session_id, exc)
            await session._drop_link()
        await self._fail()

    async def _fail(self) -> None:
        if self._state == "open":
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
        manager: SessionManager,
        *,
        job: SessionJob,
        host: HostInfo,
        model: str,
        link: _Link | None,
        timeouts: SessionTimeouts,
        plan: _Plan,
    ) -> None:
        self._manager = manager
        self._plan = plan
        self.failovers: list[Failover] = []
        self._failed_hosts: set[str] = set()
        self.conversation_id = str(job.id)
        self.model = model
        self.timeouts = timeouts
        self._bind(job, host)
        self._link = link
        self._turn = asyncio.Lock()
        self._ids = itertools.count()
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

    def _bind(self, job: SessionJob, host: HostInfo) -> None:
        """Attach the session to ``job`` with ``host`` (at creation, and after a failover)."""
        self.job_id = job.id
        self.session_id = str(job.id)
        self.host = host
        self.price_per_token = job.price_per_token
        self.payment_token = job.payment_token
        self.proof_interval = job.proof_interval
        self.tokens_reported = 0

    async def _failover(self, cause: FabstirError) -> None:
        """Settle the failed host's job (you pay its proven tokens only) and continue with
        the next best host for the model, replaying the conversation from S5."""
        manager = self._manager
        old_host, old_job = self.host.address, self.job_id
        log.warning("session %s: host %s failed (%s); failing over", old_job, old_host, cause)
        self._failed_hosts.add(old_host)
        manager._discovery.report_failure(old_host)
        manager._sessions.pop(self.session_id, None)
        await self._drop_link()
        settlement: Settlement | None
        try:
            settlement = await manager._payments.complete_session_job(old_job)
        except FabstirError as exc:  # e.g. the host completed it already
            log.warning("could not settle abandoned job %s: %s", old_job, exc)
            settlement = None
        history = await manager._history(self.conversation_id)
        info = await manager._next_host(self._plan, exclude=self._failed_hosts)
        job, link = await manager._open(self._plan, info, self.timeouts)
        self._bind(job, info)
        self._link = link
        self._replay = history or None
        manager._sessions[self.session_id] = self
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

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.end()

    @property
    def connected(self) -> bool:
        return self._link is not None and not self._link.closed

    def stream(
        self, prompt: str, *, max_tokens: int | None = None, temperature: float | None = None
    ) -> PromptStream:
        """Stream the answer to ``prompt``; the host keeps the conversation's context."""
        if not isinstance(prompt, str) or not prompt:
            raise ValidationError("prompt must be a non-empty string")
        options: dict[str, Any] = {}
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        if temperature is not None:
            options["temperature"] = temperature
        return PromptStream(self, prompt, options)

    async def send_prompt(
        self, prompt: str, *, max_tokens: int | None = None, temperature: float | None = None
    ) -> PromptResult:
        """The whole answer to ``prompt`` at once."""
        async with self.stream(prompt, max_tokens=max_tokens, temperature=temperature) as s:
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
        await self._manager._metadata_written(self.job_id, quiet=True)
        self._manager._forget(self)

    async def complete(self) -> Settlement:
        """Settle now: the host bills what it streamed, then you complete the job.

        Waits (``timeouts.settle``) for the host's final proof, stores the conversation and
        passes its CID to ``completeSessionJob``. If the host's proofs claim more tokens than
        it reported to us, it completes at once and warns with :class:`HostOverclaimError`.
        """
        if self._closed:
            raise SessionClosedError(f"session {self.session_id} is already closed")
        async with self._turn:
            self._absorb_stale()
            answered = await self._request_final_proof()
            self._absorb_stale()  # the host sent them before its answer
            expected = max(self.tokens_reported, self.proof_interval) if self.tokens_reported else 0
            job = await self._manager._payments.get_session_job(self.job_id)
            # the proof is awaited only from a host that answered: a gone host proves nothing
            deadline = time.monotonic() + (self.timeouts.settle if answered else 0.0)
            while job.tokens_used < expected and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                job = await self._manager._payments.get_session_job(self.job_id)
            overclaim = job.tokens_used > expected
            await self._manager._metadata_written(self.job_id)
            ref = await self._manager._store_conversation(self.conversation_id)
            settlement = await self._manager._payments.complete_session_job(self.job_id, ref.cid)
        self._closed = True
        await self._drop_link()
        self._manager._forget(self)
        if overclaim:
            self._manager._discovery.report_overclaim(
                self.host.address, claimed=job.tokens_used, reported=self.tokens_reported
            )
            warnings.warn(
                HostOverclaimError(
                    f"host {self.host.address} claimed {job.tokens_used} tokens on session "
                    f"{self.session_id} but reported {self.tokens_reported} "
                    f"(at most {expected} billable); the session was completed at once"
                ),
                stacklevel=2,
            )
        return settlement

    async def _request_final_proof(self) -> bool:
        """Ask the host to bill everything now; whether it answered that it did."""
        link = self._link
        if link is None or link.closed or not self.tokens_reported:
            return False
        try:
            await link.send(link.proto.checkpoint_request_frame(id=link.final_id))
            answer = await asyncio.wait_for(link.checkpoints.get(), self.timeouts.settle)
        except (FabstirError, TimeoutError) as exc:
            log.warning("no final checkpoint from %s: %s", self.host.address, exc)
            return False
        if isinstance(answer, BaseException):
            log.warning("no final checkpoint from %s: %s", self.host.address, answer)
            return False
        return True

    def _absorb(self, event: object) -> None:
        """Count the tokens of a stream end that arrived after its answer was given up."""
        if isinstance(event, StreamEnd):
            self.tokens_reported += event.tokens_used

    def _absorb_stale(self) -> None:
        """Absorb what earlier, failed answers left queued (no answer is streaming now)."""
        link = self._link
        while link is not None and not link.events.empty():
            event = link.events.get_nowait()
            if isinstance(event, HostUnreachableError):
                link.events.put_nowait(event)
                return
            self._absorb(event)

    def _require_link(self) -> _Link:
        if self._closed:
            raise SessionClosedError(f"session {self.session_id} is closed")
        if self._link is None or self._link.closed:
            raise HostUnreachableError(
                f"the connection to host {self.host.address} is closed: resume the session"
            )
        return self._link

    async def _drop_link(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            await link.close()

    async def _append(self, prompt: str, answer: str, *, partial: bool) -> None:
        storage = self._manager._storage
        await self._manager._metadata_written(self.job_id)
        await storage.append_message(self.conversation_id, Message(role="user", content=prompt))
        if answer or not partial:
            await storage.append_message(
                self.conversation_id, Message(role="assistant", content=answer)
            )


class SessionManager:
    """Opens, resumes and settles sessions; keeps their conversations in S5."""

    def __init__(
        self,
        ctx: Context,
        *,
        payments: PaymentManager,
        hosts: HostManager,
        storage: StorageManager,
        discovery: DiscoveryManager,
    ) -> None:
        self._ctx = ctx
        self._payments = payments
        self._hosts = hosts
        self._storage = storage
        self._discovery = discovery
        self._sessions: dict[str, Session] = {}
        self._approvals: dict[str, asyncio.Lock] = {}
        #: Session metadata being written to S5, by job id (see :meth:`_metadata_written`).
        self._meta_writes: dict[int, asyncio.Task[StoredRef]] = {}

    def __repr__(self) -> str:
        return f"SessionManager(open_sessions={len(self._sessions)})"

    async def create_session(
        self,
        *,
        model: str,
        host: str | HostInfo | None = None,
        payment: Payment = "usdc",
        deposit: Amount = "1.0",
        max_price_per_token: int | None = None,
        duration: int = 3600,
        proof_interval: int = 1000,
        proof_timeout_window: int = 300,
        encryption: bool = True,
        failover: bool = False,
        timeouts: SessionTimeouts | None = None,
        deposit_token: Literal["usdc", "eth"] = "usdc",  # noqa: S107 (not a secret)
    ) -> Session:
        """Pay for a session with ``host`` (or the best registered host for ``model``),
        connect and open the encrypted channel.

        The price is the host's on-chain price for the model and payment token; above
        ``max_price_per_token`` the session is refused before any transaction. With
        ``failover=True`` a host that dies, stalls or refuses mid-session is replaced by the
        next best one (within the price cap): see :attr:`Session.failovers`.
        """
        self._ctx.require_sender()
        if payment not in ("usdc", "eth", "deposit"):
            raise ValidationError(f"payment must be 'usdc', 'eth' or 'deposit', got {payment!r}")
        currency: Literal["usdc", "eth"] = deposit_token if payment == "deposit" else payment
        plan = _Plan(
            model=model,
            model_id=to_model_id(model),
            payment=payment,
            currency=currency,
            token=ZERO_ADDRESS
            if currency == "eth"
            else self._ctx.config.contract_addresses.usdc_token,
            deposit=deposit,
            max_price_per_token=max_price_per_token,
            duration=duration,
            proof_interval=proof_interval,
            proof_timeout_window=proof_timeout_window,
            encryption=encryption,
            failover=failover,
        )
        if host is None:
            info = await self._next_host(plan, exclude=set())
        else:
            info = await self._given_host(host, plan)
        limits = timeouts or self._ctx.config.session_timeouts
        job, link = await self._open(plan, info, limits)
        return self._track(
            Session(self, job=job, host=info, model=model, link=link, timeouts=limits, plan=plan)
        )

    async def resume_session(
        self,
        session_id: str | int,
        *,
        timeouts: SessionTimeouts | None = None,
        failover: bool = False,
    ) -> Session:
        """A new connection for an existing, active job; its history is replayed from S5."""
        job = await self._own_job(session_id)
        if job.status != SessionState.ACTIVE:
            raise SessionNotActiveError(f"session {job.id} is {job.status.name}")
        await self._metadata_written(job.id, quiet=True)
        meta = await self._metadata(str(job.id)) or {}
        info = await self._hosts.get_host_info(job.host)
        model = str(meta.get("model") or job.id)
        currency: Literal["usdc", "eth"] = "eth" if int(job.payment_token, 16) == 0 else "usdc"
        plan = _Plan(
            model=model,
            model_id=str(meta.get("model_id", "")),
            payment=currency,
            currency=currency,
            token=job.payment_token,
            deposit=str(meta.get("deposit_human", "1.0")),
            max_price_per_token=None,
            duration=job.max_duration,
            proof_interval=job.proof_interval,
            proof_timeout_window=job.proof_timeout_window,
            encryption=True,
            failover=failover,
        )
        limits = timeouts or self._ctx.config.session_timeouts
        link = await self._connect(job, info, plan, limits)
        session = Session(
            self, job=job, host=info, model=model, link=link, timeouts=limits, plan=plan
        )
        session._replay = await self._history(str(job.id)) or None
        return self._track(session)

    async def complete_session(self, session_id: str | int) -> Settlement:
        """Settle a session now (as its depositor), whether or not it is open here."""
        sid = str(session_id)
        session = self._sessions.get(sid)
        if session is not None:
            return await session.complete()
        job = await self._own_job(sid)
        ref = await self._store_conversation(str(job.id))
        return await self._payments.complete_session_job(job.id, ref.cid)

    async def submit_proof(self, session_id: str | int, proof: Proof) -> str:
        """Host role: claim ``proof.tokens`` of proven work on this session."""
        if not isinstance(proof, Proof):
            raise ValidationError("proof must be a fabstir_sdk.Proof")
        return await self._hosts.submit_proof_of_work(
            _job_id(session_id), proof.tokens, proof.proof_hash, proof.proof_cid, proof.delta_cid
        )

    async def store_session_data(self, session_id: str | int, key: str, data: Any) -> StoredRef:
        return await self._storage.store_session_data(str(_job_id(session_id)), key, data)

    async def get_session_data(self, session_id: str | int, key: str) -> Any:
        return await self._storage.get_session_data(str(_job_id(session_id)), key)

    async def get_session_status(self, session_id: str | int) -> SessionStatus:
        job = await self._payments.get_session_job(_job_id(session_id))
        session = self._sessions.get(str(job.id))
        try:
            messages = len((await self._storage.load_conversation(str(job.id))).messages)
        except FabstirError:
            messages = 0
        link = session._link if session else None
        return SessionStatus(
            session_id=str(job.id),
            job=job,
            connected=bool(session and session.connected),
            tokens_reported=session.tokens_reported if session else 0,
            tokens_billed=job.tokens_used,
            proofs=len(link.proofs) if link else 0,
            messages=messages,
        )

    async def list_sessions(self) -> list[SessionJob]:
        """Every session job this account opened, oldest first (read in batches)."""
        user = self._ctx.require_sender().address
        mp = self._ctx.contract("job_marketplace")
        ids: list[int] = []
        batch = 32
        while True:
            calls = [mp.call("userSessions", user, len(ids) + i) for i in range(batch)]
            results = await self._ctx.client.rpc.batch(
                [("eth_call", Read.of(c).params) for c in calls], return_errors=True
            )
            for call, result in zip(calls, results, strict=True):
                if isinstance(result, BaseException) or result in (None, "0x"):
                    break
                ids.append(int(call.decode(bytes.fromhex(result[2:]))))
            else:
                continue
            break
        return [await self._payments.get_session_job(i) for i in ids]

    async def aclose(self) -> None:
        """Drop every open connection (no settlement: hosts settle on disconnect)."""
        for session in list(self._sessions.values()):
            await session.end()
        for job_id in list(self._meta_writes):
            await self._metadata_written(job_id, quiet=True)

    # -- internals ------------------------------------------------------------------------

    async def _given_host(self, host: str | HostInfo, plan: _Plan) -> HostInfo:
        address = (
            host.address if isinstance(host, HostInfo) else checksum_address(host, what="host")
        )
        info = await self._hosts.get_host_info(address)
        if not info.is_active:
            raise HostNotActiveError(f"host {address} is not registered or not active")
        if plan.model_id not in info.models:
            raise ModelNotApprovedError(f"host {address} does not serve model {plan.model}")
        return info

    async def _next_host(self, plan: _Plan, *, exclude: set[str]) -> HostInfo:
        """The best healthy host for the plan's model and price cap, not in ``exclude``."""
        hosts = await self._discovery.find_hosts(
            required_models=[plan.model],
            max_price_per_token=plan.max_price_per_token,
            payment=plan.currency,
            limit=len(exclude) + 1,
        )
        for info in hosts:
            if info.address not in exclude:
                return info
        raise NoHostAvailableError(
            f"no other host serves {plan.model} within the price cap "
            f"(excluded after failures: {', '.join(sorted(exclude))})"
        )

    async def _open(
        self,
        plan: _Plan,
        info: HostInfo,
        limits: SessionTimeouts,
    ) -> tuple[SessionJob, _Link]:
        """Buy a job with ``info`` per ``plan``, record it in S5 and connect to the host."""
        sender = self._ctx.require_sender()
        if plan.encryption and not info.public_key:
            raise ValidationError(f"host {info.address} publishes no publicKey: cannot encrypt")
        nr = self._ctx.contract("node_registry")
        price = int(
            await self._ctx.client.read(
                nr.call("getModelPricing", info.address, plan.model_id, plan.token)
            )
        )
        if plan.max_price_per_token is not None and price > plan.max_price_per_token:
            raise PriceAboveMaximumError(price, plan.max_price_per_token)
        pm = self._payments
        args = (info.address, plan.deposit, price, plan.duration, plan.proof_interval)
        kw: dict[str, Any] = {
            "model": plan.model,
            "proof_timeout_window": plan.proof_timeout_window,
        }
        if plan.payment == "eth":
            created = await pm.create_eth_session_job(*args, **kw)
        elif plan.payment == "usdc":
            # Approve-then-spend must not interleave: concurrent sessions would each set the
            # allowance to one deposit, and all but the first transferFrom would fail.
            async with self._approvals.setdefault(plan.token, asyncio.Lock()):
                await self._approve(plan.token, plan.deposit)
                created = await pm.create_usdc_session_job(
                    info.address,
                    plan.token,
                    plan.deposit,
                    price,
                    plan.duration,
                    plan.proof_interval,
                    **kw,
                )
        else:
            token = None if plan.currency == "eth" else plan.token
            created = await pm.create_session_job_from_deposit(*args, token=token, **kw)
        job = await pm.get_session_job(created.job_id)
        # Off the critical path (it takes longer than the rest of create_session on a local
        # portal): written while we connect and stream, awaited before this session's first
        # other S5 write, at end() and at complete().
        self._meta_writes[job.id] = asyncio.get_running_loop().create_task(
            self._storage.store_session_data(
                str(job.id),
                "metadata",
                {
                    "job_id": job.id,
                    "host": info.address,
                    "model": plan.model,
                    "model_id": plan.model_id,
                    "price_per_token": price,
                    "payment_token": job.payment_token,
                    "deposit": job.deposit,
                    "deposit_human": str(plan.deposit),
                    "user": sender.address,
                    "created_tx": created.tx_hash,
                },
            )
        )
        try:
            return job, await self._connect(job, info, plan, limits)
        except FabstirError as exc:
            if isinstance(exc, HostUnreachableError | StreamTimeoutError):
                self._discovery.report_failure(info.address)  # not offered again until re-checked
            await self._metadata_written(job.id, quiet=True)
            # Paid but never connected: settle at once, so the deposit comes straight back.
            exc.add_note(f"session job {job.id} was opened; it has been settled (full refund)")
            try:
                await pm.complete_session_job(job.id)
            except FabstirError as settle_error:
                log.warning(
                    "could not settle job %s after a failed connect: %s", job.id, settle_error
                )
                exc.add_note(f"settling job {job.id} failed too: complete it with complete_session")
            raise

    async def _approve(self, token: str, deposit: Amount) -> None:
        """Approve exactly the deposit unless the allowance already covers it."""
        owner = self._ctx.require_sender().address
        value = to_base_units(deposit, await self._ctx.decimals(token))
        spender = self._ctx.config.contract_addresses.job_marketplace
        allowance = int(
            await self._ctx.client.read(self._ctx.erc20(token).call("allowance", owner, spender))
        )
        if allowance < value:
            await self._payments.approve_usdc(token, deposit)

    async def _connect(
        self, job: SessionJob, info: HostInfo, plan: _Plan, limits: SessionTimeouts
    ) -> _Link:
        account = self._ctx.account
        assert account is not None
        proto = ClientSession(
            job_id=job.id,
            chain_id=self._ctx.config.chain_id,
            host_public_key=info.public_key if plan.encryption else None,
            client_private_key=bytes(account.key) if plan.encryption else None,
            model_name=plan.model,
            price_per_token=job.price_per_token,
            encrypted=plan.encryption,
            user_address=account.address,
        )
        return await _Link.open(ws_url(info.api_url), proto, limits)

    def _track(self, session: Session) -> Session:
        self._sessions[session.session_id] = session
        return session

    async def _metadata_written(self, job_id: int, *, quiet: bool = False) -> None:
        """Wait for the job's metadata write, if one is in flight; its error is raised once
        (or only logged when ``quiet``)."""
        write = self._meta_writes.pop(job_id, None)
        if write is None:
            return
        try:
            await write
        except FabstirError as exc:
            if not quiet:
                raise
            log.warning("storing the metadata of session %s failed: %s", job_id, exc)

    def _forget(self, session: Session) -> None:
        self._sessions.pop(session.session_id, None)

    async def _history(self, conversation_id: str) -> list[ChatMessage]:
        """The stored conversation as the host protocol's chat messages."""
        try:
            conversation = await self._storage.load_conversation(conversation_id)
        except FabstirError:
            return []
        return [ChatMessage(role=m.role, content=m.content) for m in conversation.messages]

    async def _own_job(self, session_id: str | int) -> SessionJob:
        job = await self._payments.get_session_job(_job_id(session_id))
        if job.depositor != self._ctx.require_sender().address:
            raise ValidationError(f"session {job.id} belongs to {job.depositor}, not to you")
        return job

    async def _metadata(self, session_id: str) -> dict[str, Any] | None:
        try:
            meta = await self._storage.get_session_data(session_id, "metadata")
        except FabstirError:
            return None
        return meta if isinstance(meta, dict) else None

    async def _store_conversation(self, conversation_id: str) -> StoredRef:
        """Write the conversation once more and return where it is (its CID)."""
        try:
            conversation = await self._storage.load_conversation(conversation_id)
        except FabstirError:
            conversation = Conversation(id=conversation_id)
        return await self._storage.store_conversation(conversation)


def _job_id(session_id: str | int) -> int:
    try:
        value = int(session_id)
    except (TypeError, ValueError):
        raise ValidationError(f"session id must be a job id, got {session_id!r}") from None
    if value <= 0 or isinstance(session_id, bool):
        raise ValidationError(f"session id must be a positive job id, got {session_id!r}")
    return value
