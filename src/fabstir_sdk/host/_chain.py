"""The host's view of the chain: its wallet, registration, session checks and chain time.

Built from the SDK's own managers over one :class:`ChainClient`, so every write goes through
the same nonce allocator and typed-error path as the SDK's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..chain.client import ChainClient, Read
from ..chain.model_id import model_id as to_model_id
from ..chain.transport import redact_url
from ..config import SDKConfig
from ..errors import ProtocolError, SessionNotFoundError, SessionRefusedError
from ..managers._context import Context
from ..managers.auth import AuthManager
from ..managers.host import HostManager
from ..managers.model import ModelManager
from ..managers.payment import PaymentManager, decode_session_job
from ..models import HostInfo, ModelInfo, SessionJob, SessionState

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from ..chain.signer import Signer

__all__ = ["HostChain", "Registration"]

log = logging.getLogger("fabstir_sdk.host")

#: A proof may claim up to this many times the model's rate limit per second since the last
#: proof. Upstream's JobMarketplace applies the factor 2 without publishing it (our contract has
#: it as ``RATE_LIMIT_BURST()``, which upstream's lacks), so the host does not read it from chain.
RATE_LIMIT_BURST = 2


@dataclass(frozen=True)
class Registration:
    api_url: str
    models: list[str]
    price_native: int
    price_stable: int
    metadata: dict[str, Any]


class HostChain:
    """One authenticated connection to the chain for a host account."""

    def __init__(self, config: SDKConfig) -> None:
        self.config = config
        self.client = ChainClient.from_config(config)
        self.ctx = Context(config, self.client)
        self.hosts = HostManager(self.ctx)
        self.payments = PaymentManager(self.ctx)
        self.models = ModelManager(self.ctx)
        self.address = ""
        self.chain_id = config.chain_id
        self.dispute_window = 0
        self.rate_burst = RATE_LIMIT_BURST
        self._rate_limits: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"HostChain(address={self.address!r}, rpc_url={redact_url(self.config.rpc_url)!r})"

    async def open(self, wallet: bytes | LocalAccount | Signer, models: list[str]) -> None:
        """Authenticate ``wallet`` (a private key, or a signer whose key is elsewhere) and
        read the constants the host needs (one batch)."""
        auth = await AuthManager(self.ctx).authenticate(wallet)
        self.address = auth.user_address
        mp = self.ctx.contract("job_marketplace")
        mr = self.ctx.contract("model_registry")
        ids = [to_model_id(m) for m in models]
        values = await self.client.reads(
            Read.of(mp.call("disputeWindow")),
            *(Read.of(mr.call("getModelRateLimit", mid)) for mid in ids),
        )
        self.dispute_window = int(values[0])
        self._rate_limits = {mid: int(v) for mid, v in zip(ids, values[1:], strict=True)}

    @property
    def signer(self) -> Signer:
        """The host's wallet (after :meth:`open`): it signs all that bears its address."""
        return AuthManager(self.ctx).get_signer()

    async def aclose(self) -> None:
        await self.client.aclose()

    def tokens_per_second(self, model_id: str) -> int:
        """How fast claims may grow for ``model_id``: rate limit times burst."""
        return self._rate_limits.get(model_id, 1000) * self.rate_burst

    async def now(self) -> int:
        """The timestamp the next block will carry (the pending block's)."""
        block = await self.client.rpc.call("eth_getBlockByNumber", "pending", False)
        if not block:
            block = await self.client.rpc.call("eth_getBlockByNumber", "latest", False)
        return int(block["timestamp"], 16)

    # -- registration ---------------------------------------------------------------------

    async def ensure_registered(self, wanted: Registration, *, register: bool) -> HostInfo:
        """Register, or bring the API URL and metadata up to date; returns the entry."""
        info = await self.hosts.get_host_info(self.address)
        if not info.is_active:
            if not register:
                log.warning("host %s is not registered and --no-register was given", self.address)
                return info
            await self.hosts.register_host(
                wanted.api_url,
                wanted.models,
                min_price_per_token_native=wanted.price_native,
                min_price_per_token_stable=wanted.price_stable,
                metadata=wanted.metadata,
            )
            log.info("registered host %s at %s", self.address, wanted.api_url)
            return await self.hosts.get_host_info(self.address)
        if not register:
            return info
        if info.api_url != wanted.api_url:
            await self.hosts.update_api_url(wanted.api_url)
        if info.metadata != wanted.metadata:
            await self.hosts.update_metadata(wanted.metadata)
        missing = [m for m in wanted.models if to_model_id(m) not in info.models]
        if missing:
            log.warning(
                "registered host does not list models %s; update it on chain", ", ".join(missing)
            )
        return await self.hosts.get_host_info(self.address)

    async def model_infos(self, models: list[str]) -> list[ModelInfo]:
        return [await self.models.get_model(m) for m in models]

    # -- sessions -------------------------------------------------------------------------

    async def job(self, job_id: int) -> SessionJob:
        return await self.payments.get_session_job(job_id)

    async def read_session(self, job_id: int) -> tuple[dict[str, Any], bytes]:
        """The job's ``sessionJobs`` values and model id as read now (one batch), for
        :meth:`check_session`: started early, the read overlaps the init's decryption."""
        mp = self.ctx.contract("job_marketplace")
        try:
            job, model = await self.client.reads(
                Read.of(mp.call("sessionJobs", job_id), named=True),
                Read.of(mp.call("sessionModel", job_id)),
            )
        except Exception as exc:  # an RPC failure must not look like a refusal
            raise ProtocolError(
                f"cannot read job {job_id}: {exc}", code="CHAIN_UNAVAILABLE"
            ) from exc
        return job, bytes(model)

    async def check_session(
        self,
        job_id: int,
        client_address: str | None,
        served: dict[str, str],
        read: Awaitable[tuple[dict[str, Any], bytes]] | None = None,
    ) -> tuple[SessionJob, str]:
        """The job and its model id if this host may serve it to ``client_address``.

        ``served`` maps model ids to names. ``client_address`` None skips the client check
        (the plaintext fallback cannot prove who is asking). ``read``: :meth:`read_session`
        of ``job_id`` already started.
        """
        mp = self.ctx.contract("job_marketplace")
        job, model = await (read if read is not None else self.read_session(job_id))
        if int(job["id"]) == 0:
            raise SessionRefusedError(f"no session job {job_id}", code="JOB_NOT_FOUND")
        session = await self._decode(job_id, job)
        model_id = "0x" + model.hex()
        if session.status != SessionState.ACTIVE:
            raise SessionRefusedError(
                f"session job {job_id} is {session.status.name}", code="JOB_NOT_ACTIVE"
            )
        if session.host != self.address:
            raise SessionRefusedError(f"session job {job_id} names another host", code="WRONG_HOST")
        if model_id not in served:
            raise SessionRefusedError(
                f"session job {job_id} is for model {model_id}, not served here",
                code="MODEL_NOT_SERVED",
            )
        if client_address is not None and client_address != session.depositor:
            delegate = await self.client.read(
                mp.call("isDelegateAuthorized", session.depositor, client_address)
            )
            if not delegate:
                raise SessionRefusedError(
                    f"the init is signed by {client_address}, which is neither the depositor "
                    f"({session.depositor}) of job {job_id} nor a delegate it authorized. "
                    f"To use this key, the depositor calls JobMarketplace.authorizeDelegate"
                    f"({client_address}, true); or the host operator accepts any signer "
                    "(fabstir host run --accept-any-signer)",
                    code="NOT_DEPOSITOR",
                )
        return session, model_id

    async def _decode(self, job_id: int, values: dict[str, Any]) -> SessionJob:
        """A SessionJob from named ``sessionJobs`` output, as PaymentManager decodes it."""
        try:
            return decode_session_job(job_id, values)
        except SessionNotFoundError as exc:
            raise SessionRefusedError(str(exc), code="JOB_NOT_FOUND") from None
