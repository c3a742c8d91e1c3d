"""The client's side of a host session as one sans-I/O state machine.

:class:`ClientSession` holds every piece of a session's protocol state, so the code that owns
the socket only moves frames and keeps deadlines:

- the state (:class:`State`): connecting, ready, streaming, cancelling, closed;
- the message index of the next prompt (``message_{n}``) and the chunk index of the answer;
- the session key, and a new one on each re-init (upstream clients re-init before every
  prompt; ours may keep one key, the core handles both);
- which answer is current, and which ones the caller gave up on: their late chunks are
  dropped without being decrypted, their late ``stream_end`` still counted in
  :attr:`ClientSession.tokens_reported`, since the host bills them;
- how much text each answer brought (UTF-8 bytes, from the ciphertext's length for frames
  dropped undecrypted), which bounds the tokens its ``stream_end`` may claim
  (:func:`tokens_bound`): a claim above it is counted at the bound and kept as a
  :class:`TokenOverreport` in :attr:`ClientSession.overreports`;
- the correlation of the final checkpoint request with its answer or its error;
- every ``proof_submitted`` notice seen (:attr:`ClientSession.proofs`).

:meth:`ClientSession.receive` returns one event per frame, or None for a frame the core
absorbed (one of an answer given up). The host's error frames are events
(:class:`HostErrorEvent`, :class:`CheckpointFailed`), never raised; a frame that breaks the
protocol (undecodable, out of order, not decryptable) raises :class:`ProtocolError`.
"""

from __future__ import annotations

import enum
import os
from collections import deque
from dataclasses import dataclass

from ..errors import HandshakeError, HostError, MessageIndexError, ProtocolError, ValidationError
from . import _crypto as c
from ._chunks import read_chunk_fields, read_chunk_text
from ._messages import (
    DEFAULT_CHAIN_ID,
    MAX_FRAME_BYTES,
    ChatMessage,
    CheckpointRequest,
    CheckpointSubmitted,
    Connected,
    EncryptedChunk,
    EncryptedResponse,
    EncryptedSessionInit,
    ErrorFrame,
    HostNotice,
    Inference,
    Ping,
    PongFrame,
    PromptRequest,
    ProofSubmitted,
    Response,
    SessionEnd,
    SessionInit,
    SessionInitAck,
    SessionInitData,
    StreamCancel,
    StreamChunkFrame,
    StreamEnd,
    VectorDatabase,
    decode_frame,
    hex_bytes,
    parse_host_message,
    same_hex,
)
from ._session import (
    FINAL_AAD,
    PreparedInit,
    ResponseDone,
    TokenChunk,
    chunk_aad,
    dumps,
    message_aad,
    private_key_bytes,
    seal_prepared,
    seal_session_init,
    utf8,
)

__all__ = [
    "TOKENS_WITHOUT_TEXT",
    "CheckpointFailed",
    "ClientEvent",
    "ClientSession",
    "HostErrorEvent",
    "SessionEvent",
    "State",
    "TokenOverreport",
    "tokens_bound",
]

_fromhex = bytes.fromhex

#: Tokens an answer may bill beyond one per byte of its text: those that print nothing (an
#: end-of-turn or end-of-text token, a beginning-of-text token, a lone leading space that a
#: detokenizer strips). Every other token of a byte-level or byte-fallback tokenizer prints
#: at least one byte.
TOKENS_WITHOUT_TEXT = 8


def tokens_bound(received_bytes: int) -> int:
    """The most tokens an answer whose text was ``received_bytes`` UTF-8 bytes can hold."""
    return received_bytes + TOKENS_WITHOUT_TEXT


@dataclass(frozen=True, slots=True)
class TokenOverreport:
    """An answer's ``stream_end`` claimed more tokens than its text can hold."""

    answer_id: str | None
    claimed: int
    received_bytes: int

    @property
    def bound(self) -> int:
        """What was counted instead: :func:`tokens_bound` of the bytes received."""
        return tokens_bound(self.received_bytes)


class State(enum.Enum):
    """Where a client session is; the frames it may make depend on it."""

    CONNECTING = "connecting"  # init sent (or about to be), no ack yet
    READY = "ready"  # may send a prompt
    STREAMING = "streaming"  # an answer is coming
    CANCELLING = "cancelling"  # stream_cancel sent, the answer's stream_end is due
    CLOSED = "closed"


#: The states in which the host has acknowledged the init.
_LIVE = (State.READY, State.STREAMING, State.CANCELLING)  # a tuple: enums hash in Python


@dataclass(frozen=True, slots=True)
class HostErrorEvent:
    """An error frame from the host about the current answer or the session."""

    error: HostError

    @property
    def code(self) -> str:
        return self.error.code


@dataclass(frozen=True, slots=True)
class CheckpointFailed:
    """The host's error answer to the final checkpoint request."""

    error: HostError


SessionEvent = (
    Connected
    | SessionInitAck
    | TokenChunk
    | ResponseDone
    | StreamEnd
    | PongFrame
    | ProofSubmitted
    | CheckpointSubmitted
    | CheckpointFailed
    | HostNotice
    | HostErrorEvent
)
ClientEvent = SessionEvent


class ClientSession:
    """The client's side of one session with a host (encrypted unless ``encrypted=False``).

    ``client_private_key`` signs the init: use the wallet key of the job's depositor, since
    our host checks that the signature recovers to the depositor. ``host_public_key`` is the
    host's ``publicKey`` from its registry metadata. Instead of the key, ``prepared_init``
    (:func:`prepare_session_init`) carries the first init's crypto made ahead, signed by the
    key or by a wallet outside the process (``presigned=PresignedInit(...)``, see
    :func:`presign_session_init`); it serves that one init.
    """

    def __init__(
        self,
        *,
        job_id: int,
        chain_id: int = DEFAULT_CHAIN_ID,
        host_public_key: bytes | str | None = None,
        client_private_key: bytes | str | None = None,
        model_name: str = "",
        price_per_token: int = 0,
        recovery_public_key: str | None = None,
        vector_database: VectorDatabase | None = None,
        encrypted: bool = True,
        user_address: str | None = None,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        session_key: bytes | None = None,
        prepared_init: PreparedInit | None = None,
    ) -> None:
        if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id <= 0:
            raise ValidationError("job_id must be a positive int")
        self.job_id = job_id
        self.session_id = str(job_id)
        self.chain_id = chain_id
        self.encrypted = encrypted
        self.model_name = model_name
        self.price_per_token = price_per_token
        self.recovery_public_key = recovery_public_key
        self.vector_database = vector_database
        self.max_frame_bytes = max_frame_bytes
        self.user_address = user_address
        self.state = State.CONNECTING
        #: Tokens the host claimed in every ``stream_end``, answers given up included.
        self.tokens_claimed = 0
        #: The same claims, each capped at :func:`tokens_bound` of its answer's text.
        self.tokens_reported = 0
        #: Each answer whose claim was above that bound, oldest first (the caller drains it).
        self.overreports: list[TokenOverreport] = []
        #: Every ``proof_submitted`` notice, in arrival order.
        self.proofs: list[ProofSubmitted] = []
        #: The correlation id of the final checkpoint request.
        self.final_id = f"{self.session_id}-final"
        self._host_key: bytes | None = None
        self._signer: bytes | None = None
        if encrypted:
            if host_public_key is None or (client_private_key is None and prepared_init is None):
                raise ValidationError(
                    "an encrypted session needs host_public_key and client_private_key "
                    "(or prepared_init)"
                )
            try:
                self._host_key = c.compressed_public_key(host_public_key)
            except HandshakeError as exc:
                raise ValidationError(f"host_public_key: {exc}") from None
            if client_private_key is not None:
                self._signer = private_key_bytes(client_private_key, "client_private_key")
                self.user_address = c.address_of_secret(self._signer)
        #: All of the first init's crypto made ahead (the job was not known yet, or a signer
        #: outside the process signed it: ``prepare_session_init(key, presigned=...)``).
        if prepared_init is not None and prepared_init.recipient != self._host_key:
            raise ValidationError("prepared_init was made for another host key")
        self._prepared = prepared_init
        if session_key is not None and len(session_key) != c.KEY_SIZE:
            raise ValidationError("session_key must be 32 bytes")
        self._key = session_key or os.urandom(c.KEY_SIZE)
        self._inits = 0
        self._before_reinit: tuple[bytes, int] | None = None
        self._next_message = 0
        self._next_chunk = 0
        self._prompts = 0
        self._answer: str | None = None  # the id of the answer streaming now
        self._given_up: deque[str] = deque()  # answers given up, their stream_end not seen
        self._received = 0  # UTF-8 bytes of the current answer's text
        self._received_given_up: dict[str, int] = {}  # the same, of each answer given up
        self._counted: dict[str, int] = {}  # tokens counted for ends returned, by answer id
        self._checkpoint_pending = False

    def __repr__(self) -> str:
        mode = "encrypted" if self.encrypted else "plaintext"
        return f"ClientSession(session_id={self.session_id!r}, {mode}, state={self.state.value})"

    @property
    def ready(self) -> bool:
        """Whether the host acknowledged the init (the session is usable)."""
        return self.state in _LIVE

    @property
    def answer_id(self) -> str | None:
        """The correlation id of the answer streaming now."""
        return self._answer

    @property
    def next_message(self) -> int:
        return self._next_message

    # -- frames to send ----------------------------------------------------------------

    def init_frame(self, *, new_key: bool = False) -> str:
        """``encrypted_session_init`` (or the plaintext ``session_init``).

        Again once ready (not while an answer streams) it re-keys the session: with
        ``new_key`` a fresh session key, and either way the message index restarts at 0.
        """
        if self.state is State.CLOSED:
            raise ProtocolError("the session is closed")
        if self.state in (State.STREAMING, State.CANCELLING):
            raise ProtocolError("cannot re-init while an answer is streaming")
        # a refused re-init leaves the session as it was
        self._before_reinit = (self._key, self._next_message) if self._inits else None
        if self._inits and new_key:
            self._key = os.urandom(c.KEY_SIZE)
        self._inits += 1
        self._next_message = 0
        self._next_chunk = 0
        self.state = State.CONNECTING
        if not self.encrypted:
            return SessionInit(
                session_id=self.session_id,
                job_id=self.session_id,
                chain_id=self.chain_id,
                user_address=self.user_address,
            ).to_json()
        assert self._host_key is not None
        prepared, self._prepared = self._prepared, None  # one init only
        if prepared is None and self._signer is None:
            raise ProtocolError("a prepared init serves one init: connect again to re-key")
        inner = SessionInitData(
            session_key_hex=self._key.hex(),
            job_id=self.session_id,
            model_name=self.model_name,
            price_per_token=self.price_per_token,
            recovery_public_key=self.recovery_public_key,
            vector_database=self.vector_database,
        )
        plaintext = inner.to_json().encode()
        if prepared is not None:
            payload = seal_prepared(prepared, plaintext)
        else:
            payload = seal_session_init(
                plaintext,
                recipient_public_key=self._host_key,
                sender_private_key=self._signer,
            )
        return EncryptedSessionInit(
            payload=payload,
            chain_id=self.chain_id,
            session_id=self.session_id,
            job_id=self.session_id,
        ).to_json()

    def prompt_frame(
        self,
        prompt: str | PromptRequest,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        messages: list[ChatMessage] | None = None,
        id: str | None = None,
    ) -> str:
        """A prompt (sealed with the next ``message_{n}``); its answer becomes current.

        Its correlation id is ``{session_id}-{k}`` unless ``id`` names one. An answer still
        streaming is given up (:meth:`give_up`): a session answers one prompt at a time.
        """
        if self.state in (State.CONNECTING, State.CLOSED):
            raise ProtocolError(f"cannot send a prompt while {self.state.value}")
        self.give_up()
        if isinstance(prompt, str):
            options: dict[str, object] = {"prompt": prompt}
            if max_tokens is not None:
                options["max_tokens"] = max_tokens
            if temperature is not None:
                options["temperature"] = temperature
            if messages is not None:
                options["messages"] = messages
            request = PromptRequest.model_validate(options)
        else:
            request = prompt
        answer = id if id is not None else f"{self.session_id}-{self._prompts}"
        self._prompts += 1
        if self.encrypted:
            n = self._next_message
            aad = message_aad(n)
            nonce = c.random_nonce()
            ciphertext = c.seal_aead(self._key, nonce, request.to_json().encode(), aad)
            self._next_message = n + 1
            frame = dumps(
                {
                    "type": "encrypted_message",
                    "session_id": self.session_id,
                    "id": answer,
                    "payload": {
                        "ciphertextHex": ciphertext.hex(),
                        "nonceHex": nonce.hex(),
                        "aadHex": aad.hex(),
                    },
                }
            )
        else:
            frame = Inference(request=request, session_id=self.session_id, id=answer).to_json()
        self._answer = answer
        self._received = 0
        self._next_chunk = 0
        self.state = State.STREAMING
        return frame

    def cancel_frame(self, reason: str = "user_cancelled") -> str:
        """``stream_cancel``: the current answer stops; its ``stream_end`` is still due."""
        if self.state is State.STREAMING:
            self.state = State.CANCELLING
        return StreamCancel(session_id=self.session_id, reason=reason).to_json()

    def give_up(self) -> None:
        """The caller stopped waiting for the current answer: what the host still sends of
        it is dropped (its ``stream_end`` counted) and the session may take the next prompt."""
        if self._answer is not None:
            self._given_up.append(self._answer)
            self._received_given_up[self._answer] = self._received
            self._answer, self._received = None, 0
        if self.state in (State.STREAMING, State.CANCELLING):
            self.state = State.READY

    def end_frame(self) -> str:
        self.state = State.CLOSED
        return SessionEnd(session_id=self.session_id).to_json()

    def ping_frame(self) -> str:
        return Ping().to_json()

    def checkpoint_request_frame(self, *, id: str | int | None = None) -> str:
        """Ask the host to bill everything now: answered by ``checkpoint_submitted`` (or by
        :class:`CheckpointFailed`) with :attr:`final_id` (``id`` names another)."""
        if id is not None:
            self.final_id = str(id)
        self._checkpoint_pending = True
        return CheckpointRequest(session_id=self.session_id, id=self.final_id).to_json()

    def connection_lost(self) -> None:
        self.state = State.CLOSED
        self._answer = None

    # -- frames received -----------------------------------------------------------------

    def receive(self, data: str | bytes) -> SessionEvent | None:
        """The event a host frame stands for; None for a frame of an answer given up."""
        if type(data) is str and len(data) <= self.max_frame_bytes:
            fast = read_chunk_text(data)  # a token as hosts write it: no JSON parse
            if fast is not None:
                # an answer given up is rare: look only if there is one
                if self._given_up and self._stale(fast[5]):
                    self._count_stale(fast[5], len(fast[1]) // 2 - c.TAG_SIZE)
                    return None
                return self._open_chunk(*fast)
        obj = decode_frame(data, max_bytes=self.max_frame_bytes)
        if obj["type"] == "encrypted_chunk":
            fast = read_chunk_fields(obj)
            if fast is not None:
                if self._stale(fast[5]):
                    self._count_stale(fast[5], len(fast[1]) // 2 - c.TAG_SIZE)
                    return None
                return self._open_chunk(*fast)
        message = parse_host_message(obj)
        if isinstance(message, ErrorFrame):
            return self._error(message.to_exception())
        if isinstance(message, CheckpointSubmitted):
            self._checkpoint_pending = False
            return message
        if isinstance(message, ProofSubmitted):
            self.proofs.append(message)
            return message
        if isinstance(message, SessionInitAck):
            self._ack(message)
            return message
        if isinstance(message, Connected | PongFrame | HostNotice):
            return message
        cid = getattr(message, "id", None)
        if isinstance(message, StreamEnd):
            return self._stream_end(message)
        if self._stale(cid):
            self._count_stale(cid, _text_bytes(message))
            return None
        if isinstance(message, EncryptedChunk):
            p = message.payload
            return self._open_chunk(
                message.tokens,
                p.ciphertext_hex,
                p.nonce_hex,
                p.aad_hex,
                p.index,
                message.id,
                message.final,
            )
        if isinstance(message, EncryptedResponse):
            return self._final(message)
        assert isinstance(message, StreamChunkFrame | Response)
        return self._plaintext(message)

    def _stale(self, cid: object) -> bool:
        """Whether a frame belongs to an answer given up. Hosts that echo no ``id`` cannot
        be told apart: their frames are stale only when no answer is current."""
        if cid is None:
            return self._answer is None and bool(self._given_up)
        return str(cid) != self._answer and str(cid) in self._given_up

    def _stream_end(self, end: StreamEnd) -> StreamEnd | None:
        cid = None if end.id is None else str(end.id)
        if cid is not None and cid != self._answer and cid not in self._given_up:
            # the end of an answer we never asked for: it neither ends the current answer
            # nor counts; with none current it is shown (a raw client's business)
            return None if self._answer is not None else end
        if self._stale(cid):
            if cid is None:
                cid = self._given_up.popleft()
            else:
                self._given_up.remove(cid)
            self._count(cid, end.tokens_used, self._received_given_up.pop(cid, 0))
            return None
        counted = self._count(self._answer, end.tokens_used, self._received)
        if self._answer is not None:
            self._counted[self._answer] = counted
        self._answer, self._received = None, 0
        self._next_chunk = 0
        if self.state in (State.STREAMING, State.CANCELLING):
            self.state = State.READY
        return end

    def _count_stale(self, cid: object, size: int) -> None:
        """``size`` bytes of text arrived for an answer given up (``cid``, or the oldest)."""
        answer = self._given_up[0] if cid is None else str(cid)
        self._received_given_up[answer] = self._received_given_up.get(answer, 0) + max(size, 0)

    def _count(self, answer: str | None, claimed: int, received: int) -> int:
        """Count an answer's claim, capped at what its ``received`` bytes can hold."""
        bound = tokens_bound(received)
        counted = min(claimed, bound)
        self.tokens_claimed += claimed
        self.tokens_reported += counted
        if claimed > bound:
            self.overreports.append(TokenOverreport(answer, claimed, received))
        return counted

    def take_count(self, answer_id: str | None) -> int | None:
        """The tokens counted for the answer's ``stream_end`` (its claim, capped at
        :func:`tokens_bound`), once; None if no such end was returned."""
        if answer_id is None:
            return None
        return self._counted.pop(answer_id, None)

    def _error(self, error: HostError) -> HostErrorEvent | CheckpointFailed | None:
        if error.id == self.final_id or (error.id is None and self._checkpoint_pending):
            self._checkpoint_pending = False
            return CheckpointFailed(error)
        if self.state is State.CONNECTING and self._inits:
            if self._before_reinit is None:  # the host refused the init: it may be retried
                self._inits = 0
            else:  # it refused a re-init: the session goes on as before
                (self._key, self._next_message), self._before_reinit = self._before_reinit, None
                self.state = State.READY
            return HostErrorEvent(error)
        if error.id is not None and self._stale(error.id):
            return None  # about an answer given up (an id-less error is always shown)
        if self._answer is not None and error.id in (None, self._answer):
            # The answer is over. Upstream hosts send no stream_end after an error, ours
            # does: decided here, as the frames arrive, a late one is counted, not shown.
            self.give_up()
        return HostErrorEvent(error)

    def _ack(self, ack: SessionInitAck) -> None:
        if self.state is not State.CONNECTING:
            raise ProtocolError("session_init_ack without a session init")
        if ack.status != "success":
            raise ProtocolError(f"session init answered with status {ack.status!r}")
        if ack.session_id is not None and ack.session_id != self.session_id:
            raise ProtocolError(f"ack names session {ack.session_id}, expected {self.session_id}")
        self._before_reinit = None
        self.state = State.READY

    def _open_chunk(
        self,
        tokens: int,
        ciphertext_hex: str,
        nonce_hex: str,
        aad_hex: str,
        index: int,
        id: str | int | None,
        final: bool | None,
    ) -> TokenChunk:
        # once per streamed token: the cheap checks first, no helper calls on the usual path
        if not self.encrypted or self.state not in _LIVE:
            raise ProtocolError("encrypted frame outside an established encrypted session")
        expected = self._next_chunk
        aad = chunk_aad(expected)
        if index != expected or (aad_hex and aad_hex != aad.hex() and not same_hex(aad_hex, aad)):
            raise MessageIndexError(f"chunk {index} arrived where chunk {expected} was due")
        try:  # the usual, unprefixed hex (the text reader's is always)
            nonce, ciphertext = _fromhex(nonce_hex), _fromhex(ciphertext_hex)
        except ValueError:  # "0x"-prefixed
            nonce, ciphertext = hex_bytes(nonce_hex), hex_bytes(ciphertext_hex)
        text = c.open_aead(self._key, nonce, ciphertext, aad)
        self._next_chunk = expected + 1
        self._received += len(text)
        try:
            return TokenChunk(text.decode(), expected, tokens, final is True, id)
        except UnicodeDecodeError:
            return TokenChunk(utf8(text), expected, tokens, final is True, id)  # raises

    def _final(self, message: EncryptedResponse) -> ResponseDone:
        if not self.encrypted or not self.ready:
            raise ProtocolError("encrypted frame outside an established encrypted session")
        payload = message.payload
        if payload.aad_hex and not same_hex(payload.aad_hex, FINAL_AAD):
            raise MessageIndexError("encrypted_response carries an unexpected AAD")
        reason = c.open_aead(
            self._key, hex_bytes(payload.nonce_hex), hex_bytes(payload.ciphertext_hex), FINAL_AAD
        )
        self._next_chunk = 0
        return ResponseDone(utf8(reason), message.id)

    def _plaintext(self, message: StreamChunkFrame | Response) -> TokenChunk:
        if self.encrypted:
            raise ProtocolError(
                "plaintext content inside an encrypted session", code="ENCRYPTION_REQUIRED"
            )
        index = self._next_chunk
        self._next_chunk += 1
        self._received += _text_bytes(message)
        if isinstance(message, Response):
            return TokenChunk(message.content, index, message.tokens_used or 0, True, message.id)
        return TokenChunk(
            message.content, index, message.tokens or 0, bool(message.final), message.id
        )


def _text_bytes(message: object) -> int:
    """UTF-8 bytes of the text a chunk frame carries (sealed: its ciphertext less the tag)."""
    if isinstance(message, EncryptedChunk):
        return max(len(message.payload.ciphertext_hex) // 2 - c.TAG_SIZE, 0)
    if isinstance(message, StreamChunkFrame | Response):
        return len(message.content.encode())
    return 0
