"""Every WebSocket message of the host protocol, both directions, as typed models.

Parsing is tolerant where upstream is: snake_case or camelCase keys (``session_id`` /
``sessionId``, ``job_id`` / ``jobId``, ...), job ids as numbers or strings, unknown fields
ignored, both shapes of host error frames. It is strict where safety needs it: a size cap
before any parsing, a JSON object with a known ``type``, hex where hex belongs. Every failure
is a :class:`~fabstir_sdk.errors.ProtocolError` whose ``code`` is what a host sends back.

Models serialise (:meth:`WireModel.to_json`) with the exact field names the newest upstream
SDK and node use, omitting absent optional fields.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from ..errors import ContextLimitError, FrameTooLargeError, HostError, ProtocolError

__all__ = [
    "CLIENT_MESSAGES",
    "DEFAULT_CHAIN_ID",
    "E2EE_ALG",
    "HOST_MESSAGES",
    "MAX_FRAME_BYTES",
    "ChatMessage",
    "CheckpointRequest",
    "CheckpointSubmitted",
    "CipherPayload",
    "ChunkPayload",
    "ClientMessage",
    "Connected",
    "EncryptedChunk",
    "EncryptedMessage",
    "EncryptedResponse",
    "EncryptedSessionInit",
    "EphemeralCipherPayload",
    "ErrorFrame",
    "HostMessage",
    "HostNotice",
    "Inference",
    "LegacyCancel",
    "Ping",
    "PongFrame",
    "Prompt",
    "PromptRequest",
    "ProofSubmitted",
    "Response",
    "SessionEnd",
    "SessionInit",
    "SessionInitAck",
    "SessionInitData",
    "StreamCancel",
    "StreamChunkFrame",
    "StreamEnd",
    "UnsupportedRequest",
    "Usage",
    "VectorDatabase",
    "WireModel",
    "decode_frame",
    "hex_bytes",
    "load_json",
    "same_hex",
    "parse_client_message",
    "parse_host_message",
]

#: Frames above this many bytes are refused before parsing (images travel base64 in prompts).
MAX_FRAME_BYTES = 4 * 1024 * 1024
#: The chain a node assumes when a frame names none (Base Sepolia).
DEFAULT_CHAIN_ID = 84532
#: Recursion limit under which deeply nested JSON is parsed (CPython's default is 1000).
_SAFE_RECURSION = 1000
E2EE_ALG = "secp256k1-ecdh(ephemeral→static)+hkdf(sha256)+xchacha20-poly1305"


def _either(snake: str, camel: str) -> Any:
    return Field(
        default=None, validation_alias=AliasChoices(snake, camel), serialization_alias=snake
    )


def _job_id_text(value: object) -> object:
    """A job id as decimal text: ``42`` and ``"42"`` are the same job."""
    if isinstance(value, bool):
        return value  # refused by the str validation below
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip().isdigit():
        return str(int(value.strip()))
    return value


def _job_id_int(value: object) -> object:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


@dataclass(frozen=True, slots=True)
class Plain:
    """The plain form of a type's values, which the per-token ``encrypted_chunk`` readers
    (protocol/_chunks.py) take without the model: it sits in the type's ``Annotated`` beside
    the model's own rules, so the two are written together and the readers' field table is
    made from the models (a model field of a type without one cannot be read fast: import
    fails).

    ``check``: a parsed JSON value the model reads unchanged (exact types, no coercion;
    None, where the field takes it, is the readers' to allow).
    ``text``: a regex (one group) of such a value's compact JSON spelling, no escapes.
    ``read``: that group's text to the value ``json.loads`` gives (None: the text itself).
    ``even``: the text's length must be even too (checked after the match: a regex for
    pairs is about three times slower).
    Each is a subset of what the model accepts; tests/unit/test_protocol_fast_chunk.py feeds
    both the same frames.
    """

    check: Callable[[Any], bool]
    text: str
    read: Callable[[str], Any] | None = None
    even: bool = False


_HEX_PATTERN = r"(?:0[xX])?(?:[0-9a-fA-F]{2})*"
_is_hex = re.compile(_HEX_PATTERN).fullmatch
#: A job id as the model leaves it (decimal, no sign, space or leading zero).
_is_job_id = re.compile(r"[1-9][0-9]{0,77}").fullmatch
#: A count's compact text: at most 18 digits (exact in any JSON reader's int).
_COUNT_TEXT = r"(0|[1-9][0-9]{0,17})"


def _is_count(value: object) -> bool:
    return type(value) is int and value >= 0


def _is_id(value: object) -> bool:
    return type(value) is str or type(value) is int


def read_id(text: str) -> str | int:
    """A correlation id from its compact JSON text (a string without escapes, or digits)."""
    return text[1:-1] if text[0] == '"' else int(text)


def read_flag(text: str) -> bool:
    return text == "true"


JobIdText = Annotated[
    str,
    BeforeValidator(_job_id_text),
    Field(pattern=r"^[0-9]{1,78}$"),
    Plain(lambda v: type(v) is str and _is_job_id(v) is not None, r'"([1-9][0-9]{0,77})"'),
]
JobIdInt = Annotated[int, BeforeValidator(_job_id_int), Field(ge=0)]
#: Hex fields are checked (even length, optional 0x, any case) but kept as sent;
#: :func:`hex_bytes` and :func:`same_hex` read them. The compact text: unprefixed.
Hex = Annotated[
    str,
    Field(pattern=f"^{_HEX_PATTERN}$"),
    Plain(lambda v: type(v) is str and _is_hex(v) is not None, r'"([0-9a-fA-F]*)"', even=True),
]
#: A count (tokens, an index): a non-negative int.
Count = Annotated[int, Field(ge=0), Plain(_is_count, _COUNT_TEXT, int)]
#: A correlation id: the text is printable ASCII without quotes or backslashes.
CorrelationId = Annotated[
    str | int | None,
    Plain(_is_id, rf'("[\x20\x21\x23-\x5b\x5d-\x7e]*"|{_COUNT_TEXT[1:-1]})', read_id),
]
#: An optional flag (``final``).
Flag = Annotated[bool | None, Plain(lambda v: type(v) is bool, "(true|false)", read_flag)]


def hex_bytes(text: str) -> bytes:
    """Bytes of a hex field a model (or the chunk reader) has checked."""
    try:
        return bytes.fromhex(text)  # the usual, unprefixed spelling: one call a field
    except ValueError:
        return bytes.fromhex(text[2:])  # "0x"-prefixed (checked: nothing else fails)


def same_hex(text: str, data: bytes) -> bool:
    """Whether the hex field ``text`` spells ``data``."""
    return (text[2:] if text[:2] in ("0x", "0X") else text).lower() == data.hex()


class WireModel(BaseModel):
    """A protocol message or payload: immutable, tolerant of extra fields."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    def to_wire(self) -> dict[str, Any]:
        wire = self.model_dump(by_alias=True, exclude_none=True)
        if "type" in wire:  # first, as upstream writes it (readability only)
            wire = {"type": wire.pop("type"), **wire}
        return wire

    def to_json(self) -> str:
        return json.dumps(self.to_wire(), separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------------- payloads


class CipherPayload(WireModel):
    """XChaCha20-Poly1305 output under the session key."""

    ciphertext_hex: Hex = Field(alias="ciphertextHex")
    nonce_hex: Hex = Field(alias="nonceHex")
    aad_hex: Hex = Field(default="", alias="aadHex")


class ChunkPayload(CipherPayload):
    index: Count


class EphemeralCipherPayload(WireModel):
    """The session-init envelope: ephemeral ECDH to the host's key, signed by the client."""

    eph_pub_hex: Hex = Field(alias="ephPubHex")
    salt_hex: Hex = Field(alias="saltHex")
    nonce_hex: Hex = Field(alias="nonceHex")
    ciphertext_hex: Hex = Field(alias="ciphertextHex")
    signature_hex: Hex = Field(alias="signatureHex")
    recid: int | None = None
    alg: str = E2EE_ALG
    info: Hex = ""
    aad_hex: Hex = Field(default="", alias="aadHex")


class VectorDatabase(WireModel):
    manifest_path: str = Field(alias="manifestPath")
    user_address: str = Field(alias="userAddress")


class SessionInitData(WireModel):
    """The plaintext inside an ``encrypted_session_init`` (camelCase, as upstream)."""

    session_key_hex: Hex = Field(alias="sessionKey", min_length=64, max_length=64)
    job_id: JobIdText = Field(alias="jobId")
    model_name: str = Field(default="", alias="modelName")
    price_per_token: int = Field(default=0, alias="pricePerToken", ge=0)
    recovery_public_key: Hex | None = Field(default=None, alias="recoveryPublicKey")
    vector_database: VectorDatabase | None = Field(default=None, alias="vectorDatabase")


class ChatMessage(WireModel):
    role: Literal["system", "user", "assistant"]
    content: str


class PromptRequest(WireModel):
    """What an ``encrypted_message`` carries for text inference (or ``inference.request``).

    ``messages`` is our extension: a client resuming a session replays its history there,
    since the host keeps none across restarts. Upstream hosts ignore it.
    """

    prompt: str
    model: str | None = None
    max_tokens: int = Field(default=4000, ge=1)
    temperature: float = Field(default=0.7, ge=0)
    stream: bool = True
    thinking: Any = None
    images: list[dict[str, Any]] | None = None
    search_queries: list[str] | None = None
    action: str | None = None
    messages: list[ChatMessage] | None = None


# ---------------------------------------------------------------------- client -> host


class _SessionRef(WireModel):
    """Messages naming a session by ``session_id``/``sessionId`` and/or ``job_id``/``jobId``."""

    session_id: JobIdText | None = _either("session_id", "sessionId")
    job_id: JobIdText | None = _either("job_id", "jobId")

    @model_validator(mode="after")
    def _one_names_the_other(self) -> _SessionRef:
        if self.session_id is None and self.job_id is None:
            raise ValueError("needs session_id or job_id")
        if self.session_id is None:
            object.__setattr__(self, "session_id", self.job_id)
        if self.job_id is None:
            object.__setattr__(self, "job_id", self.session_id)
        return self

    @property
    def job_number(self) -> int:
        return int(self.job_id or 0)


class EncryptedSessionInit(_SessionRef):
    type: Literal["encrypted_session_init"] = "encrypted_session_init"
    payload: EphemeralCipherPayload
    chain_id: int | None = _either("chain_id", "chainId")
    id: CorrelationId = None


class SessionInit(_SessionRef):
    """The plaintext fallback (deprecated upstream; our host serves it only when allowed)."""

    type: Literal["session_init"] = "session_init"
    job_id: JobIdText | None = Field(
        default=None, validation_alias=AliasChoices("jobId", "job_id"), serialization_alias="jobId"
    )
    chain_id: int | None = _either("chain_id", "chainId")
    user_address: str | None = _either("user_address", "userAddress")
    vector_database: dict[str, Any] | None = _either("vector_database", "vectorDatabase")
    id: CorrelationId = None


class EncryptedMessage(WireModel):
    type: Literal["encrypted_message"] = "encrypted_message"
    session_id: JobIdText | None = _either("session_id", "sessionId")
    id: CorrelationId = None
    payload: CipherPayload
    web_search: bool | None = None
    max_searches: int | None = None
    search_queries: list[str] | None = None


class Prompt(WireModel):
    type: Literal["prompt"] = "prompt"
    prompt: str
    session_id: JobIdText | None = _either("session_id", "sessionId")
    id: CorrelationId = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0)
    #: upstream's plaintext prompt also carries the whole request (its options are there)
    request: PromptRequest | None = None


class Inference(WireModel):
    type: Literal["inference"] = "inference"
    request: PromptRequest
    session_id: JobIdText | None = _either("session_id", "sessionId")
    id: CorrelationId = None


class StreamCancel(WireModel):
    """Always plaintext: stop the running stream."""

    type: Literal["stream_cancel"] = "stream_cancel"
    session_id: JobIdText | None = _either("session_id", "sessionId")
    reason: str = "user_cancelled"
    id: CorrelationId = None


class LegacyCancel(WireModel):
    type: Literal["cancel"] = "cancel"
    request_id: str | int | None = Field(
        default=None,
        validation_alias=AliasChoices("requestId", "request_id"),
        serialization_alias="requestId",
    )


class SessionEnd(WireModel):
    type: Literal["session_end"] = "session_end"
    session_id: JobIdText | None = _either("session_id", "sessionId")
    id: CorrelationId = None


class Ping(WireModel):
    type: Literal["ping"] = "ping"


class CheckpointRequest(WireModel):
    """Our extension: bill everything so far now; answered by ``checkpoint_submitted``."""

    type: Literal["checkpoint_request"] = "checkpoint_request"
    session_id: JobIdText | None = _either("session_id", "sessionId")
    id: CorrelationId = None


class UnsupportedRequest(WireModel):
    """Host-side RAG and web search messages: known, parsed, refused by our host."""

    type: Literal["uploadVectors", "searchVectors", "searchRequest"]
    session_id: JobIdText | None = _either("session_id", "sessionId")
    id: CorrelationId = None


ClientMessage = (
    EncryptedSessionInit
    | SessionInit
    | EncryptedMessage
    | Prompt
    | Inference
    | StreamCancel
    | LegacyCancel
    | SessionEnd
    | Ping
    | CheckpointRequest
    | UnsupportedRequest
)

# ---------------------------------------------------------------------- host -> client


class Usage(WireModel):
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)
    context_window_size: int | None = Field(default=None, ge=0)


class Connected(WireModel):
    type: Literal["connected"] = "connected"
    message: str = "WebSocket connected successfully"


class SessionInitAck(WireModel):
    type: Literal["session_init_ack"] = "session_init_ack"
    status: str = "success"
    session_id: JobIdText | None = _either("session_id", "sessionId")
    job_id: JobIdInt | None = _either("job_id", "jobId")
    chain_id: int | None = _either("chain_id", "chainId")
    client_address: str | None = _either("client_address", "clientAddress")
    message: str | None = None
    id: CorrelationId = None


class EncryptedChunk(WireModel):
    """A token (or a few) of an encrypted answer. Its fields' types each carry their
    :class:`Plain` form: the per-token readers (protocol/_chunks.py) are made from them."""

    type: Literal["encrypted_chunk"] = "encrypted_chunk"
    tokens: Count = 0
    session_id: JobIdText | None = _either("session_id", "sessionId")
    id: CorrelationId = None
    final: Flag = None
    payload: ChunkPayload


class EncryptedResponse(WireModel):
    """The end of an encrypted response: the payload decrypts to the finish reason."""

    type: Literal["encrypted_response"] = "encrypted_response"
    session_id: JobIdText | None = _either("session_id", "sessionId")
    id: CorrelationId = None
    payload: CipherPayload


class StreamEnd(WireModel):
    """Always plaintext, after the last chunk: what the response cost."""

    type: Literal["stream_end"] = "stream_end"
    reason: str = "complete"
    tokens_used: int = Field(default=0, ge=0)
    finish_reason: str | None = None
    usage: Usage | None = None
    vlm_tokens: int | None = None
    session_id: JobIdText | None = _either("session_id", "sessionId")
    id: CorrelationId = None


class StreamChunkFrame(WireModel):
    type: Literal["stream_chunk"] = "stream_chunk"
    content: str
    tokens: int | None = Field(default=None, ge=0)
    session_id: JobIdText | None = _either("session_id", "sessionId")
    id: CorrelationId = None
    final: bool | None = None


class Response(WireModel):
    """A plaintext, non-streamed answer."""

    type: Literal["response"] = "response"
    content: str
    tokens_used: int | None = Field(default=None, ge=0)
    finish_reason: str | None = None
    usage: Usage | None = None
    session_id: JobIdText | None = _either("session_id", "sessionId")
    id: CorrelationId = None


class ErrorFrame(WireModel):
    """Both shapes upstream hosts send: ``{code, message, ...}`` and ``{error: "<text>"}``."""

    type: Literal["error"] = "error"
    code: str | None = None
    message: str | None = None
    error: str | None = None
    session_id: JobIdText | None = _either("session_id", "sessionId")
    id: CorrelationId = None
    prompt_tokens: int | None = None
    context_window_size: int | None = None

    UNKNOWN_CODE: ClassVar[str] = "HOST_ERROR"

    @property
    def error_code(self) -> str:
        return self.code or self.UNKNOWN_CODE

    @property
    def text(self) -> str:
        return self.message or self.error or ""

    def to_exception(self) -> HostError:
        """The typed error this frame stands for."""
        sid = self.session_id
        cid = None if self.id is None else str(self.id)
        if self.code == "TOKEN_LIMIT_EXCEEDED":
            return ContextLimitError(
                self.code,
                self.text,
                prompt_tokens=self.prompt_tokens,
                context_window_size=self.context_window_size,
                session_id=sid,
                id=cid,
            )
        return HostError(self.error_code, self.text, session_id=sid, id=cid)


class PongFrame(WireModel):
    type: Literal["pong"] = "pong"


class ProofSubmitted(WireModel):
    """Our host's notice that a proof of work is on chain (the SDK also knows the type)."""

    type: Literal["proof_submitted"] = "proof_submitted"
    session_id: JobIdText | None = _either("session_id", "sessionId")
    job_id: JobIdInt | None = _either("job_id", "jobId")
    checkpoint_index: int = Field(default=0, ge=0)
    tokens_claimed: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)
    proof_hash: str = ""
    tx_hash: str = ""


class CheckpointSubmitted(ProofSubmitted):
    """The answer to ``checkpoint_request``: everything reported so far is now billed."""

    type: Literal["checkpoint_submitted"] = "checkpoint_submitted"  # type: ignore[assignment]
    id: CorrelationId = None


class HostNotice(WireModel):
    """Types the upstream SDK handles but no node sends; kept whole in ``data``."""

    model_config = ConfigDict(frozen=True, extra="allow")
    type: Literal["session_status", "checkpoint"]


HostMessage = (
    Connected
    | SessionInitAck
    | EncryptedChunk
    | EncryptedResponse
    | StreamEnd
    | StreamChunkFrame
    | Response
    | ErrorFrame
    | PongFrame
    | ProofSubmitted
    | CheckpointSubmitted
    | HostNotice
)


def _by_type(*models: type[WireModel]) -> dict[str, type[WireModel]]:
    table: dict[str, type[WireModel]] = {}
    for model in models:
        annotation = model.model_fields["type"].annotation
        for name in getattr(annotation, "__args__", ()):
            table[name] = model
    return table


CLIENT_MESSAGES = _by_type(
    EncryptedSessionInit,
    SessionInit,
    EncryptedMessage,
    Prompt,
    Inference,
    StreamCancel,
    LegacyCancel,
    SessionEnd,
    Ping,
    CheckpointRequest,
    UnsupportedRequest,
)
HOST_MESSAGES = _by_type(
    Connected,
    SessionInitAck,
    EncryptedChunk,
    EncryptedResponse,
    StreamEnd,
    StreamChunkFrame,
    Response,
    ErrorFrame,
    PongFrame,
    ProofSubmitted,
    CheckpointSubmitted,
    HostNotice,
)


# ---------------------------------------------------------------------- parsing


def _brackets(data: str | bytes) -> int:
    if isinstance(data, bytes):
        return data.count(b"[") + data.count(b"{")
    return data.count("[") + data.count("{")


def load_json(data: str | bytes) -> Any:
    """``json.loads`` that cannot be crashed by deep nesting.

    eth-account's py_ecc raises the recursion limit to 100,000 at import, and CPython's C
    JSON scanner then overflows the C stack (a segfault) on ``"[" * 100_000``. Frames that
    could nest deeply are parsed under a sane limit, restored at once.
    """
    try:
        if _brackets(data) < _SAFE_RECURSION:
            return json.loads(data)
        limit = sys.getrecursionlimit()
        if limit <= _SAFE_RECURSION:
            return json.loads(data)
        sys.setrecursionlimit(_SAFE_RECURSION)
        try:
            return json.loads(data)
        finally:
            sys.setrecursionlimit(limit)
    except (ValueError, RecursionError):
        raise ProtocolError("frame is not valid JSON", code="INVALID_JSON") from None


def decode_frame(data: str | bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """A frame as a JSON object with a string ``type``; the size is checked first."""
    size = len(data)
    if isinstance(data, str) and size <= max_bytes < 4 * size:  # a char is 1 to 4 bytes
        size = len(data.encode())
    if size > max_bytes:
        raise FrameTooLargeError(f"frame of {size} bytes exceeds the {max_bytes}-byte cap")
    obj = load_json(data)
    if not isinstance(obj, dict):
        raise ProtocolError("frame is not a JSON object")
    if not isinstance(obj.get("type"), str):
        raise ProtocolError("frame has no string 'type'")
    return obj


def _parse(
    data: str | bytes | dict[str, Any], table: dict[str, type[WireModel]], max_bytes: int
) -> WireModel:
    obj = data if isinstance(data, dict) else decode_frame(data, max_bytes=max_bytes)
    kind = obj.get("type")
    model = table.get(kind) if isinstance(kind, str) else None
    if model is None:
        shown = kind[:40] if isinstance(kind, str) else kind
        raise ProtocolError(f"unknown message type {shown!r}", code="UNKNOWN_MESSAGE_TYPE")
    try:
        return model.model_validate(obj)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "frame"
        raise ProtocolError(f"invalid {kind} frame: {where}: {first['msg']}") from None


def parse_client_message(
    data: str | bytes | dict[str, Any], *, max_bytes: int = MAX_FRAME_BYTES
) -> ClientMessage:
    """A client -> host frame as its typed model."""
    return _parse(data, CLIENT_MESSAGES, max_bytes)  # type: ignore[return-value]


def parse_host_message(
    data: str | bytes | dict[str, Any], *, max_bytes: int = MAX_FRAME_BYTES
) -> HostMessage:
    """A host -> client frame as its typed model."""
    return _parse(data, HOST_MESSAGES, max_bytes)  # type: ignore[return-value]
