"""One WebSocket connection to the host: the session state machine on top of HostSession.

A connection starts unbound; ``encrypted_session_init`` (or, when allowed, the plaintext
``session_init``) binds it to a session job after the chain checks. Prompts then stream on a
task of their own so that ``stream_cancel`` and pings are read while tokens flow. Every bad
frame is answered with an error frame ``{type: "error", code, message}`` and the connection
goes on; nothing a client sends can stop the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from aiohttp import WSCloseCode, WSMsgType, web

from ..chain.model_id import model_id as to_model_id
from ..errors import (
    BackendError,
    ContextTooLongError,
    FabstirError,
    ProtocolError,
    SessionRefusedError,
    ValidationError,
)
from ..models import ModelInfo
from ..protocol import (
    ChatMessage,
    CheckpointRequest,
    CheckpointSubmitted,
    Connected,
    EncryptedMessage,
    EncryptedSessionInit,
    ErrorFrame,
    HostSession,
    Inference,
    LegacyCancel,
    Ping,
    PongFrame,
    Prompt,
    PromptRequest,
    ProofSubmitted,
    SessionEnd,
    SessionInit,
    SessionInitAck,
    StreamCancel,
    StreamChunkFrame,
    StreamEnd,
    UnsupportedRequest,
    Usage,
    parse_client_message,
)
from ._backends import Generation
from ._billing import SubmittedProof
from ._checkpoints import MessageRecord
from ._limits import FrameRate
from ._replay import init_fingerprints

if TYPE_CHECKING:
    from ._node import HostNode, JobState

__all__ = ["Connection"]

log = logging.getLogger("fabstir_sdk.host")


def model_matches(name: str, model_id: str, info: ModelInfo | None, spec: str) -> bool:
    """Whether an init's ``modelName`` names the job's model.

    Upstream clients put there what they were given: the bytes32 id (any case), ``repo:file``
    or ``repo/file``, the file name, or a short name such as ``tinyllama`` for a file
    ``tinyllama-1.1b-chat.Q4_K_M.gguf``. All are matched against the model's on-chain record
    (``info``; ``spec``, the name the host was started with, when the record is missing).
    """
    if not name:
        return True
    try:
        if to_model_id(name) == model_id:
            return True
    except ValidationError:
        pass
    if info is not None:
        repo, file = info.repo, info.file
    else:
        repo, _, file = spec.partition(":")
    wanted = name.strip().lower()
    stem = file.lower().removesuffix(".gguf")
    known = {file.lower(), stem, repo.lower(), repo.lower().rpartition("/")[2]}
    if wanted in known:
        return True
    # a short name: the start of the file name, up to a separator
    return len(wanted) >= 3 and any(stem.startswith(wanted + sep) for sep in "-._")


class Connection:
    """The host's end of one ``/v1/ws`` connection."""

    def __init__(self, node: HostNode, ws: web.WebSocketResponse) -> None:
        self.node = node
        self.ws = ws
        self.session: HostSession | None = None
        self.job: JobState | None = None
        self.client_address: str | None = None
        #: Whose conversation this connection continues (the init's signer).
        self.client_key = ""
        self._stream: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.frames_in = 0
        self.errors_sent = 0
        config = node.config
        self._rate = FrameRate(config.frames_per_second, config.frame_burst)
        self._refused = 0  # frames refused in a row for the rate

    def __repr__(self) -> str:
        job = self.job.billing.job.id if self.job else None
        return f"Connection(job={job}, encrypted={self.session is not None})"

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        await self.send(Connected().to_json())
        idle = self.node.config.idle_timeout
        try:
            while not self.ws.closed:
                try:
                    msg = await self.ws.receive(timeout=idle)
                except TimeoutError:
                    if self._stream is not None and not self._stream.done():
                        continue  # the client is listening to an answer
                    log.debug("closing a WebSocket idle for %g s", idle)
                    await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"idle")
                    break
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self.frames_in += 1
                    # a queued frame is read without suspending: yield, or a client that
                    # sends without pause holds the event loop and starves every other one
                    await asyncio.sleep(0)
                    if self._rate.allow():
                        self._refused = 0
                        await self.handle(msg.data)
                    elif self._refused < self._rate.burst:
                        self._refused += 1
                        await self.error("RATE_LIMITED", "too many frames: slow down")
                    else:  # a burst's worth refused in a row: a flood, not a client
                        log.debug("closing a WebSocket that ignores the frame rate limit")
                        await self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"rate")
                        break
                elif msg.type == WSMsgType.ERROR:
                    log.debug("websocket error: %s", self.ws.exception())
                    break
                elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    break
        finally:
            await self._stop_stream()
            for task in list(self._tasks):
                task.cancel()
            self.node.detach(self)

    async def send(self, text: str) -> None:
        """Send, or drop a client that has not read for ``idle_timeout`` (it holds memory)."""
        if not self.ws.closed:
            try:
                async with asyncio.timeout(self.node.config.idle_timeout):  # no task per frame
                    await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                pass
            except TimeoutError:
                log.debug("dropping a WebSocket client that stopped reading")
                transport = self.ws._req.transport if self.ws._req is not None else None
                if transport is not None:
                    transport.abort()

    async def error(self, code: str, message: str, *, id: Any = None, **extra: Any) -> None:
        self.errors_sent += 1
        sid = None if self.job is None else str(self.job.billing.job.id)
        frame = ErrorFrame(code=code, message=message, session_id=sid, id=id, **extra)
        await self.send(frame.to_json())

    def notify_proof(self, proof: SubmittedProof) -> None:
        """Tell the client a proof is on chain (a notice; the client may ignore it)."""
        if self.job is None:
            return
        job = self.job.billing.job
        notice = ProofSubmitted(
            session_id=str(job.id),
            job_id=job.id,
            checkpoint_index=proof.checkpoint_index,
            tokens_claimed=proof.tokens,
            total_tokens=proof.total,
            proof_hash=proof.proof_hash,
            tx_hash=proof.tx_hash,
        )
        self._spawn(self.send(notice.to_json()))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- dispatch -------------------------------------------------------------------------

    async def handle(self, data: str | bytes) -> None:
        try:
            message = parse_client_message(data, max_bytes=self.node.config.max_frame_bytes)
        except ProtocolError as exc:
            await self.error(exc.code, str(exc))
            return
        cid = getattr(message, "id", None)
        try:
            if isinstance(message, EncryptedSessionInit):
                await self._encrypted_init(message)
            elif isinstance(message, SessionInit):
                await self._plaintext_init(message)
            elif isinstance(message, EncryptedMessage):
                await self._encrypted_prompt(message)
            elif isinstance(message, Prompt | Inference):
                await self._plaintext_prompt(message)
            elif isinstance(message, StreamCancel | LegacyCancel):
                await self._stop_stream()
            elif isinstance(message, Ping):
                await self.send(PongFrame().to_json())
            elif isinstance(message, CheckpointRequest):
                if self.job is None:
                    raise ProtocolError(
                        "no session on this connection", code="SESSION_NOT_INITIALIZED"
                    )
                self._spawn(self._checkpoint(message))
            elif isinstance(message, SessionEnd):
                await self._stop_stream()
                await self.ws.close()
            elif isinstance(message, UnsupportedRequest):
                raise ProtocolError(
                    f"{message.type} is not supported by this host", code="NOT_SUPPORTED"
                )
        except ProtocolError as exc:
            await self.error(exc.code, str(exc), id=cid, **getattr(exc, "details", {}))

    # -- session init ---------------------------------------------------------------------

    def _check_chain(self, chain_id: int | None) -> None:
        if chain_id is not None and chain_id != self.node.chain.chain_id:
            raise ProtocolError(
                f"this host serves chain {self.node.chain.chain_id}, not {chain_id}",
                code="WRONG_CHAIN",
            )

    def _check_rekey(self, job_id: int) -> None:
        """A second init on a bound connection: a re-key of the same job, between answers."""
        assert self.job is not None
        bound = self.job.billing.job.id
        if job_id != bound:
            raise ProtocolError(
                f"this connection serves job {bound}: open a new connection for job {job_id}",
                code="SESSION_ALREADY_INITIALIZED",
            )
        if self._stream is not None and not self._stream.done():
            raise ProtocolError(
                "a response is still streaming: re-key after its stream_end",
                code="STREAM_IN_PROGRESS",
            )

    def _check_capacity(self, job_id: int) -> None:
        """A new job beyond ``max_sessions`` live ones is refused (a resumed one is not)."""
        jobs = self.node.jobs
        live = sum(1 for state in jobs.values() if state.connections)
        known = job_id in jobs and bool(jobs[job_id].connections)
        if not known and live >= self.node.config.max_sessions:
            raise ProtocolError(
                f"this host serves {live} sessions, its maximum: try later or another host",
                code="HOST_BUSY",
            )

    async def _encrypted_init(self, init: EncryptedSessionInit) -> None:
        """Open a session, or re-key the bound one (new key, indexes from 0, same context).

        Every init is accepted once per job (``node.inits``): a captured init sent again,
        on this connection or any other, before or after a host restart, is refused with
        ``REPLAYED_INIT`` before anything is billed.
        """
        self._check_chain(init.chain_id)
        rekey = self.job is not None
        if rekey:
            if self.session is None:
                raise ProtocolError(
                    "this connection holds a plaintext session", code="SESSION_ALREADY_INITIALIZED"
                )
            self._check_rekey(init.job_number)
        # The job's chain read (its id is in the clear) is started here and leaves at this
        # coroutine's first await, after the decryption, so that the durable write of the
        # init's fingerprints starts first: with a loaded disk that write (ms) is what the
        # ack waits for, not the read (<1 ms). A refused init cancels the read.
        reading = asyncio.ensure_future(self.node.chain.read_session(init.job_number))
        try:
            session, opened = self.node.e2ee.accept(init)
            if rekey and opened.client_address != self.client_address:
                raise ProtocolError(
                    "a re-key must be signed by the client that opened the session",
                    code="CLIENT_CHANGED",
                )
            prints = init_fingerprints(
                opened.ephemeral_public_key, bytes.fromhex(opened.data.session_key_hex)
            )
            inits = self.node.inits
            inits.claim(opened.job_id, prints)  # no await before: a copy sent at once is refused
        except BaseException:
            reading.cancel()
            reading.add_done_callback(_retrieved)
            raise
        # the fingerprints' durable write overlaps the chain check too (the ack waits for it)
        written = inits.record(opened.job_id, prints)
        try:
            signer = None if self.node.config.accept_any_signer else opened.client_address
            job, model_id = await self.node.chain.check_session(
                opened.job_id, signer, self.node.served, reading
            )
            spec = self.node.served[model_id]
            info = next((m for m in self.node.model_infos if m.model_id == model_id), None)
            if not model_matches(opened.data.model_name, model_id, info, spec):
                raise SessionRefusedError(
                    f"the init names model {opened.data.model_name[:80]!r}, the job is for {spec}",
                    code="WRONG_MODEL",
                )
            if not rekey:
                self._check_capacity(job.id)  # refused here, the init may be sent again
        except BaseException:
            inits.release(opened.job_id, prints)
            written.add_done_callback(_retrieved)  # an OSError there is not this init's error
            raise
        try:
            await inits.commit(job.id, prints, written)
        except OSError as exc:
            log.error("cannot record an accepted session init: %s", exc)
            raise ProtocolError(
                "the host cannot record session inits now: try again later",
                code="HOST_STATE_UNAVAILABLE",
            ) from None
        if not rekey:  # again: no await from here to attach, so the bound is exact
            self._check_capacity(job.id)
        self.session = session
        if not rekey:
            self.client_address = opened.client_address
            self.client_key = opened.client_address
            self.job = self.node.attach(self, job, model_id, opened.data.recovery_public_key)
        ack = SessionInitAck(
            session_id=opened.session_id,
            job_id=job.id,
            chain_id=self.node.chain.chain_id,
            client_address=opened.client_address,
            message="Encrypted session re-keyed" if rekey else "Encrypted session initialized",
            id=init.id,
        )
        await self.send(ack.to_json())

    async def _plaintext_init(self, init: SessionInit) -> None:
        if not self.node.config.allow_plaintext:
            raise ProtocolError(
                "this host only serves encrypted sessions (encrypted_session_init)",
                code="PLAINTEXT_DISABLED",
            )
        self._check_chain(init.chain_id)
        rekey = self.job is not None
        if rekey:  # upstream's client repeats session_init before every prompt
            if self.session is not None:
                raise ProtocolError(
                    "this connection holds an encrypted session",
                    code="SESSION_ALREADY_INITIALIZED",
                )
            self._check_rekey(init.job_number)
        self.node.check_unauthenticated_job(init.job_number)
        job, model_id = await self.node.chain.check_session(init.job_number, None, self.node.served)
        if init.user_address is not None and init.user_address.lower() != job.depositor.lower():
            raise SessionRefusedError(
                f"user_address is not the depositor of job {job.id}", code="NOT_DEPOSITOR"
            )
        if not rekey:
            self._check_capacity(job.id)
            self.client_address = job.depositor
            self.client_key = "plaintext"  # unauthenticated: never shares an encrypted context
            self.job = self.node.attach(self, job, model_id, None)
        else:
            self._check_rekey(job.id)
        ack = SessionInitAck(
            session_id=str(job.id),
            job_id=job.id,
            chain_id=self.node.chain.chain_id,
            message="Plaintext session initialized",
            id=init.id,
        )
        await self.send(ack.to_json())

    # -- prompts --------------------------------------------------------------------------

    def _ready_for_prompt(self) -> JobState:
        if self.job is None:
            raise ProtocolError("send encrypted_session_init first", code="SESSION_NOT_INITIALIZED")
        if self._stream is not None and not self._stream.done():
            raise ProtocolError(
                "a response is still streaming (stream_cancel stops it)",
                code="STREAM_IN_PROGRESS",
            )
        return self.job

    async def _encrypted_prompt(self, message: EncryptedMessage) -> None:
        job = self._ready_for_prompt()
        if self.session is None:
            raise ProtocolError(
                "encrypted_message in a plaintext session", code="ENCRYPTION_REQUIRED"
            )
        request = self.session.open_message(message)
        self._start(job, request, message.id)

    async def _plaintext_prompt(self, message: Prompt | Inference) -> None:
        job = self._ready_for_prompt()
        if self.session is not None:
            raise ProtocolError(
                "plaintext prompt in an encrypted session", code="ENCRYPTION_REQUIRED"
            )
        if isinstance(message, Inference):
            request = message.request
        elif message.request is not None:  # upstream's form: the options are in the request
            request = message.request.model_copy(update={"prompt": message.prompt})
        else:
            options: dict[str, Any] = {"prompt": message.prompt}
            if message.max_tokens is not None:
                options["max_tokens"] = message.max_tokens
            if message.temperature is not None:
                options["temperature"] = message.temperature
            request = PromptRequest.model_validate(options)
        self._start(job, request, message.id)

    def _start(self, job: JobState, request: PromptRequest, cid: Any) -> None:
        if request.action is not None:  # upstream's image, video and transcode requests
            raise ProtocolError(
                f"action {request.action[:40]!r} is not supported by this host (text only)",
                code="NOT_SUPPORTED",
            )
        backend = self.node.backend
        history = job.history(self.client_key)
        if request.messages is not None:  # the client replays its history (a resume)
            history[:] = request.messages
        context = [*history, ChatMessage(role="user", content=request.prompt)]
        prompt_tokens = backend.count_tokens(context)
        room = backend.context_window - prompt_tokens
        if room < 1:
            raise ContextTooLongError(prompt_tokens, backend.context_window)
        budget = job.billing.ledger.remaining
        if budget < 1:
            raise ProtocolError("the session's deposit is used up", code="DEPOSIT_EXHAUSTED")
        max_tokens = min(request.max_tokens, room, budget)
        self._stream = asyncio.get_running_loop().create_task(
            self._respond(job, context, request, max_tokens, prompt_tokens, cid)
        )

    async def _respond(
        self,
        job: JobState,
        context: list[ChatMessage],
        request: PromptRequest,
        max_tokens: int,
        prompt_tokens: int,
        cid: Any,
    ) -> None:
        backend, billing = self.node.backend, job.billing
        result = Generation(prompt_tokens=prompt_tokens)
        pieces: list[str] = []
        reason = "complete"
        started = int(time.time())
        sid = str(billing.job.id)
        try:
            async for piece in backend.stream(
                context, max_tokens=max_tokens, temperature=request.temperature, result=result
            ):
                pieces.append(piece)
                if self.session is not None:
                    await self.send(self.session.chunk_frame(piece, id=cid))
                else:
                    frame = StreamChunkFrame(content=piece, tokens=1, session_id=sid, id=cid)
                    await self.send(frame.to_json())
                billing.record(1)
        except asyncio.CancelledError:
            reason, result.finish_reason = "cancelled", "cancelled"
        except BackendError as exc:
            reason, result.finish_reason = "error", "error"
            await self.error("INFERENCE_FAILED", str(exc), id=cid)
        # a backend that reports more tokens than pieces (several tokens a piece) is billed so
        extra = max(0, result.completion_tokens - len(pieces)) if reason == "complete" else 0
        if extra:
            billing.record(extra)
        used = len(pieces) + extra
        text = "".join(pieces)
        job.history(self.client_key).extend(
            [context[-1], ChatMessage(role="assistant", content=text)]
        )
        billing.records += [
            MessageRecord("user", context[-1].content, started),
            MessageRecord("assistant", text, int(time.time()), partial=reason != "complete"),
        ]
        if self.session is not None:
            if reason == "complete":
                await self.send(self.session.chunk_frame("", tokens=0, final=True, id=cid))
                await self.send(self.session.response_frame(result.finish_reason, id=cid))
            else:
                self.session.reset_response()
        usage = Usage(
            prompt_tokens=result.prompt_tokens,
            completion_tokens=used,
            total_tokens=result.prompt_tokens + used,
            context_window_size=self.node.backend.context_window,
        )
        end = StreamEnd(
            reason=reason,
            tokens_used=used,
            finish_reason=result.finish_reason,
            usage=usage,
            session_id=sid,
            id=cid,
        )
        await self.send(end.to_json())

    async def _stop_stream(self) -> None:
        task, self._stream = self._stream, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _checkpoint(self, message: CheckpointRequest) -> None:
        """Bill everything so far; runs beside the reader, since proofs can take seconds."""
        assert self.job is not None
        billing = self.job.billing
        try:
            proof = await billing.flush()
        except FabstirError as exc:
            await self.error("CHECKPOINT_FAILED", f"checkpoint failed: {exc}", id=message.id)
            return
        answer = CheckpointSubmitted(
            session_id=str(billing.job.id),
            job_id=billing.job.id,
            checkpoint_index=proof.checkpoint_index if proof else 0,
            tokens_claimed=proof.tokens if proof else 0,
            total_tokens=billing.ledger.billed,
            proof_hash=proof.proof_hash if proof else "",
            tx_hash=proof.tx_hash if proof else "",
            id=message.id,
        )
        await self.send(answer.to_json())


def _retrieved(task: asyncio.Future[Any]) -> None:
    """A task nobody awaits any more: its outcome is retrieved (not logged as lost)."""
    if not task.cancelled():
        task.exception()
