"""Values the managers return: frozen pydantic models (a streamed token's :class:`StreamChunk`:
a named tuple), amounts in base units (``int``)."""

from __future__ import annotations

import time
from enum import IntEnum
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from ._display import html_table, native_amount
from .errors import ValidationError

__all__ = [
    "AuthResult",
    "Conversation",
    "ConversationSummary",
    "HostInfo",
    "Message",
    "ModelInfo",
    "PromptResult",
    "Proof",
    "SessionJob",
    "SessionJobCreated",
    "SessionState",
    "SessionStatus",
    "Settlement",
    "StoredRef",
    "StreamChunk",
    "TokenUsage",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class AuthResult(_Frozen):
    user_address: str
    chain_id: int


class SessionState(IntEnum):
    """``SessionStatus`` of the JobMarketplace contract."""

    ACTIVE = 0
    COMPLETED = 1
    TIMED_OUT = 2


class SessionJob(_Frozen):
    """The 18 fields of ``JobMarketplace.sessionJobs(id)``, decoded by name."""

    id: int
    depositor: str
    host: str
    payment_token: str
    deposit: int
    price_per_token: int
    tokens_used: int
    max_duration: int
    start_time: int
    last_proof_time: int
    proof_interval: int
    proof_timeout_window: int
    status: SessionState
    withdrawn_by_host: int
    refunded_to_user: int
    conversation_cid: str
    last_proof_hash: str
    last_proof_cid: str

    @property
    def is_native(self) -> bool:
        """True when the deposit is ETH (payment token is the zero address)."""
        return int(self.payment_token, 16) == 0

    @property
    def max_tokens(self) -> int:
        """How many tokens the deposit pays for at this price."""
        return self.deposit * 1000 // self.price_per_token


class SessionJobCreated(_Frozen):
    """A job just opened: its id, the transaction, and the job as the receipt states it."""

    job_id: int
    tx_hash: str
    job: SessionJob


class Settlement(_Frozen):
    """How a session's deposit was split, read from the settlement receipt's events.

    ``host_payment`` is the value of the proven tokens; of it the treasury keeps
    ``treasury_fee`` and the host is credited ``host_net``; ``refund`` went back to the
    depositor. ``token`` is the payment token (the zero address for ETH).
    """

    job_id: int
    tokens_used: int
    host_payment: int
    treasury_fee: int
    host_net: int
    refund: int
    token: str
    tx_hash: str

    def _repr_html_(self) -> str:
        return html_table(
            f"Settlement of session {self.job_id}",
            [
                ("tokens used", self.tokens_used),
                ("host payment (gross)", native_amount(self.host_payment, self.token)),
                ("treasury fee", native_amount(self.treasury_fee, self.token)),
                ("host net", native_amount(self.host_net, self.token)),
                ("refund", native_amount(self.refund, self.token)),
                ("token", "ETH" if int(self.token, 16) == 0 else self.token),
                ("transaction", self.tx_hash),
            ],
        )


class HostInfo(_Frozen):
    address: str
    api_url: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    models: list[str] = Field(default_factory=list)
    is_active: bool
    stake: int
    min_price_per_token_native: int
    min_price_per_token_stable: int
    public_key: str | None = None
    peer_id: str | None = None
    p2p_addrs: list[str] = Field(default_factory=list)

    def _repr_html_(self) -> str:
        return html_table(
            f"Host {self.address}",
            [
                ("API URL", self.api_url),
                ("active", self.is_active),
                ("models", self.models),
                ("stake (FAB base units)", self.stake),
                ("min price per 1000 tokens, ETH", f"{self.min_price_per_token_native} wei"),
                ("min price per 1000 tokens, stablecoin", self.min_price_per_token_stable),
                ("public key", self.public_key),
                ("peer id", self.peer_id),
                ("p2p addresses", self.p2p_addrs),
                ("metadata", self.metadata),
            ],
        )


class ModelInfo(_Frozen):
    model_id: str
    repo: str
    file: str
    sha256: str
    approved: bool


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _Input(_Frozen):
    """A model users build: invalid fields raise the SDK's ValidationError."""

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except PydanticValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()
            )
            raise ValidationError(f"invalid {type(self).__name__}: {problems}") from None


class Message(_Input):
    """One turn of a conversation; ``timestamp`` is milliseconds since the epoch."""

    role: Literal["user", "assistant", "system"]
    content: str
    timestamp: int = Field(default_factory=_now_ms)


class Conversation(_Input):
    """A conversation as StorageManager keeps it (times in milliseconds since the epoch)."""

    id: str
    messages: list[Message] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: int = Field(default_factory=_now_ms)
    updated_at: int = Field(default_factory=_now_ms)


class ConversationSummary(_Frozen):
    id: str
    message_count: int
    created_at: int
    updated_at: int
    metadata: dict[str, Any] = Field(default_factory=dict)


class StoredRef(_Frozen):
    """Where a value was stored: ``cid`` names the encrypted blob, ``size`` is in bytes of
    the stored encoding (CBOR for objects, UTF-8 for text, raw bytes)."""

    key: str
    cid: str
    size: int
    metadata: dict[str, Any] = Field(default_factory=dict)


class TokenUsage(_Frozen):
    """What one response cost, as the host reported it (``stream_end``)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class StreamChunk(NamedTuple):
    """One piece of a streamed answer; ``index`` counts from 0 in every response.

    A named tuple, not a pydantic model like the other values here: one is made per
    streamed token, and a tuple costs a fraction of a model's CPU to make.
    """

    text: str
    index: int  # type: ignore[assignment]  # the field, not tuple.index()


class PromptResult(_Frozen):
    text: str
    usage: TokenUsage
    finish_reason: str | None = None


class Proof(_Frozen):
    """A proof of work a host submits for a session (see ``SessionManager.submit_proof``)."""

    tokens: int
    proof_hash: str
    proof_cid: str = ""
    delta_cid: str = ""


class SessionStatus(_Frozen):
    """A session as the chain and this process see it."""

    session_id: str
    job: SessionJob
    connected: bool
    tokens_reported: int
    tokens_billed: int
    proofs: int
    messages: int
    #: The host's ``stream_end`` counts uncapped; ``tokens_reported`` caps each answer's at
    #: what its text can hold (one token a byte, plus ``TOKENS_WITHOUT_TEXT``).
    tokens_claimed: int = 0

    def _repr_html_(self) -> str:
        job = self.job
        return html_table(
            f"Session {self.session_id}",
            [
                ("state", job.status.name),
                ("host", job.host),
                ("deposit", native_amount(job.deposit, job.payment_token)),
                ("price / 1000 tokens", native_amount(job.price_per_token, job.payment_token)),
                ("tokens used (on chain)", job.tokens_used),
                ("tokens reported", self.tokens_reported),
                ("tokens claimed", self.tokens_claimed),
                ("tokens billed", self.tokens_billed),
                ("proofs", self.proofs),
                ("messages", self.messages),
                ("connected", self.connected),
                ("conversation CID", job.conversation_cid or None),
            ],
        )
