"""The reference host's settings. Its keys are not among them: the wallet (a private key or a
signer) and the E2EE key are passed to ``HostNode`` apart and never printed, logged or
written anywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from ..chain.model_id import model_id as to_model_id
from ..config import SDKConfig, _ConfigModel
from ..protocol import MAX_FRAME_BYTES

__all__ = ["HostConfig"]


class HostConfig(_ConfigModel):
    """Everything ``fabstir host run`` can set; defaults suit a devnet. Invalid settings
    raise :class:`~fabstir_sdk.errors.ConfigError`."""

    sdk: SDKConfig
    #: Served models as ``"repo:file"`` (or ``"repo/file"``, or a bytes32 id).
    models: list[str] = Field(min_length=1)
    listen_host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    #: The URL clients should use; by default ``http://{listen_host}:{port}``.
    public_url: str | None = None
    #: Minimum price per 1000 tokens in the stablecoin's base units (2000 = $2 per 1M tokens).
    price_per_token: int = Field(default=2000, ge=1, le=100_000_000)
    #: Minimum price per 1000 tokens in wei.
    price_per_token_native: int = Field(default=10**12, ge=227_273)
    backend: Literal["builtin", "openai"] = "builtin"
    #: builtin: seconds between tokens (0 = as fast as possible) and before the first.
    token_delay: float = Field(default=0.0, ge=0)
    first_token_delay: float = Field(default=0.0, ge=0)
    openai_base_url: str | None = None
    openai_model: str | None = None
    #: Name of the environment variable holding the model server's API key, if any.
    openai_api_key_env: str | None = None
    context_window: int = Field(default=8192, ge=16)
    #: Submit a proof every this many streamed tokens.
    checkpoint_tokens: int = Field(default=1000, ge=100)
    #: Register on NodeRegistry (or update the URL and metadata) at start.
    auto_register: bool = True
    #: Serve unauthenticated plaintext: ``session_init`` and HTTP ``/v1/inference``.
    allow_plaintext: bool = False
    #: Accept an encrypted session init signed by any key, as upstream's host does (its
    #: client signs with a key derived from its storage seed, not the depositor's wallet).
    #: Off: only the job's depositor or a delegate it authorized (``authorizeDelegate``)
    #: may open a session on its deposit. See docs/security.md for the trade-off.
    accept_any_signer: bool = False
    #: Where the host keeps what must outlive a restart (the session inits it accepted,
    #: per job, so a captured init cannot be replayed). Default: a directory per chain and
    #: host address under the user's data directory.
    state_dir: Path | None = None
    max_frame_bytes: int = Field(default=MAX_FRAME_BYTES, ge=1024)
    #: Longest sleep between two looks at the chain's clock while waiting.
    chain_poll: float = Field(default=1.0, gt=0)
    #: On stop, how long final proofs may take before the host gives up on them.
    shutdown_timeout: float = Field(default=10.0, ge=0)
    #: Session jobs served at once; one more init is refused with ``HOST_BUSY``.
    max_sessions: int = Field(default=256, ge=1)
    #: Open TCP connections from one IP address; more are answered 429 and closed.
    max_connections_per_ip: int = Field(default=256, ge=1)
    #: WebSocket frames a connection may send per second on average, and in one burst;
    #: frames over the rate are refused with ``RATE_LIMITED`` unread, and a connection that
    #: sends a burst's worth more of them in a row is closed (1008).
    frames_per_second: float = Field(default=100.0, gt=0)
    frame_burst: int = Field(default=1000, ge=1)
    #: Seconds a connection has to send a complete request head (HTTP or the WebSocket
    #: handshake), and an idle keep-alive connection stays open (slowloris).
    header_timeout: float = Field(default=10.0, gt=0)
    #: A WebSocket is closed after this long without a frame (pings count) while nothing
    #: streams, or when a frame to it cannot be sent for this long (a client not reading).
    idle_timeout: float = Field(default=300.0, gt=0)
    #: Run a libp2p node: DHT records per model, ``/fabstir/host/1.0.0`` (the ``p2p`` extra).
    p2p: bool = False
    #: Where the libp2p node listens (TCP multiaddrs; port 0: a free one).
    p2p_listen: list[str] = Field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/0"], min_length=1)
    #: Peers to join the DHT through (``/ip4/.../tcp/<port>/p2p/<peer id>``).
    p2p_bootstrap: list[str] = Field(default_factory=list)

    @field_validator("models")
    @classmethod
    def _known_form(cls, models: list[str]) -> list[str]:
        for model in models:
            to_model_id(model)
        if len({to_model_id(m) for m in models}) != len(models):
            raise ValueError("models are listed twice")
        return models

    def api_url(self, port: int) -> str:
        return self.public_url or f"http://{self.listen_host}:{port}"
