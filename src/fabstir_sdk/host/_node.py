"""HostNode: the reference host. One aiohttp server (HTTP and WebSocket on one port), the
chain connection, the inference backend, billing per session job, settlement."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .._version import __version__
from ..chain.model_id import model_id as to_model_id
from ..chain.signer import as_signer
from ..errors import (
    ConfigError,
    NondeterministicSignerError,
    SessionNotFoundError,
    SessionRefusedError,
)
from ..models import HostInfo, ModelInfo, SessionJob, SessionState
from ..protocol import ChatMessage
from ._backends import Backend, BuiltinBackend, OpenAIBackend
from ._billing import CheckpointEntry, JobBilling, SubmittedProof, TxPipeline
from ._chain import HostChain, Registration
from ._checkpoints import CheckpointWriter, S5Checkpoints, UnstoredCheckpoints
from ._clock import ChainClock
from ._config import HostConfig
from ._keys import E2EEKey
from ._limits import ConnectionGuard, GuardedSite
from ._p2p import HostP2P
from ._replay import InitLog
from ._ws import Connection

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from ..chain.signer import Signer
    from ..p2p import NodeInfo

__all__ = ["HostNode", "JobState", "make_backend"]

log = logging.getLogger("fabstir_sdk.host")


def _given_e2ee_key(wallet: object, e2ee_key: bytes | None) -> E2EEKey | None:
    """The E2EE key known without asking anyone: the one given, else a key wallet's own."""
    if e2ee_key is not None:
        return E2EEKey(e2ee_key)
    if isinstance(wallet, bytes | bytearray):
        return E2EEKey(bytes(wallet))
    key = getattr(wallet, "key", None)  # an eth-account LocalAccount
    if isinstance(key, bytes) and len(key) == 32:
        return E2EEKey(key)
    return None


def make_backend(config: HostConfig) -> Backend:
    """The backend ``config`` names."""
    if config.backend == "builtin":
        return BuiltinBackend(
            token_delay=config.token_delay,
            first_token_delay=config.first_token_delay,
            context_window=config.context_window,
        )
    if not config.openai_base_url or not config.openai_model:
        raise ConfigError("the openai backend needs openai_base_url and openai_model")
    key = os.environ.get(config.openai_api_key_env) if config.openai_api_key_env else None
    return OpenAIBackend(
        config.openai_base_url,
        config.openai_model,
        api_key=key,
        context_window=config.context_window,
    )


@dataclass
class JobState:
    """What the host keeps about one session job while it is served."""

    billing: JobBilling
    model_spec: str
    #: The conversation per authenticated client (its init's signer): a connection sees
    #: and extends only its own client's context, never another signer's.
    histories: dict[str, list[ChatMessage]] = field(default_factory=dict)
    connections: set[Connection] = field(default_factory=set)
    #: HTTP ``/v1/inference`` requests billed to the job, in flight.
    requests: int = 0
    settling: asyncio.Task[None] | None = None

    def history(self, client: str) -> list[ChatMessage]:
        return self.histories.setdefault(client, [])


class HostNode:
    """The reference host: ``await node.start()`` ... ``await node.stop()``.

    ``wallet`` signs transactions, proofs and everything else bearing the host's address: a
    private key (32 bytes), an eth-account ``LocalAccount`` or any
    :class:`~fabstir_sdk.chain.signer.Signer` (a :class:`JsonRpcSigner`: the key stays in
    the signer service). ``e2ee_key`` (32 bytes) opens session inits, which clients encrypt
    to it by ECDH; without it, a key wallet's own key serves, and a signer's is derived from
    its signature of a fixed message at start (:class:`~._keys.E2EEKey`). Its public half is
    the ``publicKey`` the wallet publishes in the registry metadata (docs/host.md).
    """

    def __init__(
        self,
        config: HostConfig,
        wallet: bytes | LocalAccount | Signer,
        *,
        e2ee_key: bytes | None = None,
        backend: Backend | None = None,
        writer: CheckpointWriter | None = None,
    ) -> None:
        self.config = config
        self._wallet = wallet
        self._e2ee = _given_e2ee_key(wallet, e2ee_key)  # None: derived from the signer at start
        self.backend = backend or make_backend(config)
        self.writer: CheckpointWriter = writer or UnstoredCheckpoints()
        self._own_writer = writer is None
        self.chain = HostChain(config.sdk)
        self.txq = TxPipeline()
        self.clock = ChainClock(self.chain.now, config.chain_poll)
        self.served = {to_model_id(m): m for m in config.models}
        self.model_infos: list[ModelInfo] = []
        self.jobs: dict[int, JobState] = {}
        self.checkpoints: dict[int, tuple[str, list[CheckpointEntry]]] = {}
        #: The last signed checkpoint index per job (its canonical JSON, the signature).
        self._index_signatures: dict[int, tuple[bytes, bytes]] = {}
        self.connections: set[Connection] = set()
        #: Session inits accepted per job (a replayed one is refused); on disk from start().
        self.inits = InitLog(None)
        self.guard = ConnectionGuard(
            max_per_ip=config.max_connections_per_ip, header_timeout=config.header_timeout
        )
        self.info: HostInfo | None = None
        self.api_url = ""
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._stopping = False
        self._pruning: asyncio.Task[None] | None = None
        #: The libp2p node (``config.p2p``): DHT records and ``/fabstir/host/1.0.0``; made
        #: at start, its identity drawn from the E2EE key.
        self.p2p: HostP2P | None = None

    def __repr__(self) -> str:
        return f"HostNode(address={self.chain.address!r}, api_url={self.api_url!r})"

    @property
    def e2ee(self) -> E2EEKey:
        """The key session inits are encrypted to (known once :meth:`start` began)."""
        if self._e2ee is None:
            raise ConfigError("the host's E2EE key is derived at start(): start the host first")
        return self._e2ee

    @property
    def public_key(self) -> bytes:
        """The E2EE key's public half (compressed): the registry metadata's ``publicKey``."""
        return self.e2ee.public_key

    @property
    def address(self) -> str:
        return self.chain.address

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, connect to the chain and register (or update) the host entry."""
        from ._http import build_app

        p2p: asyncio.Future[NodeInfo] | None = None
        try:
            if self._e2ee is None:  # two signatures by the signer service
                self._e2ee = await E2EEKey.derive(as_signer(self._wallet))
            if self.config.p2p:
                self.p2p = HostP2P(self, self._e2ee.p2p_seed())
                # libp2p takes most of a second to import and start: overlap the chain work
                p2p = asyncio.ensure_future(self.p2p.start())
            await self.chain.open(self._wallet, list(self.served.values()))
            self.inits = InitLog(self.state_dir() / "inits")
            self._pruning = asyncio.ensure_future(self._prune_inits())
            if self._own_writer and (self.config.sdk.s5_portal_url or self.config.sdk.storage_dir):
                self.writer = self._s5_writer()
            self.model_infos = await self.chain.model_infos(list(self.served.values()))
            app = build_app(self)
            app.middlewares.append(self.guard.middleware)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._runner.setup()
            site = GuardedSite(self._runner, self.config.listen_host, self.config.port, self.guard)
            await site.start()
            server = site._server
            assert server is not None and server.sockets  # type: ignore[attr-defined]
            self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
            self.api_url = self.config.api_url(self.port)
            if p2p is not None:
                await p2p  # the registry metadata carries its peer id and addresses
            self.info = await self.chain.ensure_registered(
                self._registration(), register=self.config.auto_register
            )
            published = (self.info.public_key or "").lower().removeprefix("0x")
            if self.info.is_active and published != self.public_key.hex():
                log.warning(  # --no-register: clients would encrypt to another key
                    "the registry publishes publicKey %s for this host, not its E2EE key %s: "
                    "session inits will fail until the metadata is updated (run without "
                    "--no-register)",
                    published,
                    self.public_key.hex(),
                )
            if self.p2p is not None:
                await self.p2p.serve()
        except BaseException:
            if p2p is not None and not p2p.done():
                p2p.cancel()
                await asyncio.gather(p2p, return_exceptions=True)
            await self.stop()
            raise
        names = ", ".join(self.served.values())  # by name: a hash means nothing to a person
        log.info("host %s serving %s on %s", self.address, names, self.api_url)

    def state_dir(self) -> Path:
        """The configured state directory, or one per chain and host address."""
        if self.config.state_dir is not None:
            return self.config.state_dir
        import platformdirs

        root = Path(platformdirs.user_data_path("fabstir-sdk")) / "host"
        return root / f"{self.chain.chain_id}-{self.address.lower()}"

    def _s5_writer(self) -> CheckpointWriter:
        """Checkpoints in the host's own S5 storage (identity derived from its key)."""
        from ..managers.auth import AuthManager
        from ..managers.storage import open_store
        from ..s5._keys import S5Identity

        try:
            seed = bytes.fromhex(AuthManager(self.chain.ctx).get_s5_seed())
        except NondeterministicSignerError as exc:  # one line, as the CLI shows errors
            raise NondeterministicSignerError(
                f"{exc}. The host keeps its checkpoints in that storage: run it without "
                "--s5-portal-url and --storage-dir, or with a deterministic signer"
            ) from None
        return S5Checkpoints(open_store(self.config.sdk, S5Identity(seed)), self.chain.signer)

    def _registration(self) -> Registration:
        metadata: dict[str, Any] = {
            "publicKey": self.public_key.hex(),
            "apiUrl": self.api_url,
            "models": list(self.served.values()),
            "pricing": {
                "stable": self.config.price_per_token,
                "native": self.config.price_per_token_native,
            },
            "software": f"fabstir-sdk reference host {__version__}",
            "backend": self.backend.name,
        }
        if self.p2p is not None:
            metadata["peerId"] = self.p2p.info.peer_id
            metadata["p2pAddrs"] = self.p2p.info.addrs
        return Registration(
            api_url=self.api_url,
            models=list(self.served.values()),
            price_native=self.config.price_per_token_native,
            price_stable=self.config.price_per_token,
            metadata=metadata,
        )

    async def stop(self) -> None:
        """Close every connection, submit final proofs (bounded), stop. Idempotent.

        Dispute windows are not waited for: jobs whose window is still open stay active,
        proven work included, for the user (or a timeout) to settle.
        """
        if self._stopping:
            return
        self._stopping = True
        if self._pruning is not None:
            self._pruning.cancel()
            await asyncio.gather(self._pruning, return_exceptions=True)
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                await conn.ws.close()
        flushes = [state.billing.flush() for state in self.jobs.values()]
        if flushes:
            try:
                await asyncio.wait_for(
                    asyncio.gather(*flushes, return_exceptions=True),
                    self.config.shutdown_timeout,
                )
            except TimeoutError:
                log.warning("final proofs did not finish within the shutdown timeout")
        for state in list(self.jobs.values()):
            if state.settling is not None:
                state.settling.cancel()
            await state.billing.aclose()
        if self.p2p is not None:
            await self.p2p.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._own_writer and isinstance(self.writer, S5Checkpoints):
            await self.writer.aclose()
        await self.backend.aclose()
        await self.clock.aclose()
        await self.chain.aclose()
        self.inits.close()

    def features(self) -> list[str]:
        """What this host supports (``/v1/version`` and the P2P ``capabilities`` answer)."""
        features = ["e2ee", "websocket", "streaming", "checkpoints", "proofs", "single-use-init"]
        if not self.config.accept_any_signer:
            features.append("depositor-check")
        if self.config.allow_plaintext:
            features.append("plaintext")
        return features

    # -- sessions -------------------------------------------------------------------------

    def check_unauthenticated_job(self, job_id: int) -> None:
        """A plaintext init or ``POST /v1/inference`` naming a job proves nobody's identity:
        unless the operator accepts any signer, it must not spend someone's deposit."""
        if not self.config.accept_any_signer:
            raise SessionRefusedError(
                f"a plaintext request cannot prove it comes from the depositor of job {job_id}, "
                "so this host bills jobs only to encrypted sessions signed by the depositor or "
                "a delegate it authorized: use encrypted_session_init (or, for plaintext on any "
                "job as upstream's host serves it, run this host with --accept-any-signer)",
                code="NOT_DEPOSITOR",
            )

    def attach(
        self, conn: Connection | None, job: SessionJob, model_id: str, recovery_key: str | None
    ) -> JobState:
        """Bind ``conn`` to ``job``: a new state, or the one a live or settling job has.

        ``conn`` None: an HTTP request billed to the job, until :meth:`request_done`.
        """
        state = self.jobs.get(job.id)
        if state is not None and (
            state.billing.closed
            or (state.billing.job.depositor, state.billing.job.start_time)
            != (job.depositor, job.start_time)
        ):
            self._forget(job.id)
            state = None
        if state is None:
            billing = JobBilling(
                chain=self.chain,
                txq=self.txq,
                writer=self.writer,
                job=job,
                model_id=model_id,
                checkpoint_tokens=self.config.checkpoint_tokens,
                recovery_public_key=recovery_key,
                notify=lambda proof: self._notify(job.id, proof),
                poll=self.config.chain_poll,
                clock=self.clock,
            )
            state = self.jobs[job.id] = JobState(billing, self.served[model_id])
            self.checkpoints[job.id] = (self.address, billing.checkpoints)
        elif state.settling is not None:  # the client is back (resume): do not settle
            state.settling.cancel()
            state.settling = None
        if conn is None:
            state.requests += 1
        else:
            state.connections.add(conn)
        return state

    def request_done(self, state: JobState) -> None:
        """An HTTP request billed to the job is answered."""
        state.requests -= 1
        self._idle(state)

    def detach(self, conn: Connection) -> None:
        """A connection closed; the job's last one starts its settlement."""
        self.connections.discard(conn)
        state = conn.job
        if state is None:
            return
        state.connections.discard(conn)
        if not state.connections:  # no longer counted against max_sessions
            log.debug("job %d has no connection left", state.billing.job.id)
        self._idle(state)

    def _idle(self, state: JobState) -> None:
        """Nothing uses the job any more: settle it (a client that comes back cancels that)."""
        if (
            not state.connections
            and not state.requests
            and state.settling is None
            and not self._stopping
        ):
            state.settling = asyncio.get_running_loop().create_task(
                self._settle(state), name=f"fabstir-settle-{state.billing.job.id}"
            )

    async def _settle(self, state: JobState) -> None:
        await state.billing.settle()
        job_id = state.billing.job.id
        if self.jobs.get(job_id) is state:
            self._forget(job_id)
        if state.billing.settlement_tx is not None or not await self._still_active(job_id):
            self.inits.forget(job_id)  # the chain refuses the job now: nothing to replay

    async def _still_active(self, job_id: int) -> bool:
        try:
            job = await self.chain.job(job_id)
        except SessionNotFoundError:
            return False
        except Exception:  # unknown: keep the record (it is small)
            return True
        return job.status == SessionState.ACTIVE

    async def _prune_inits(self) -> None:
        """Drop the init records of jobs that ended while this host was not serving them."""
        for job_id in self.inits.job_ids():
            if job_id not in self.jobs and not await self._still_active(job_id):
                self.inits.forget(job_id)

    def _forget(self, job_id: int) -> None:
        state = self.jobs.pop(job_id, None)
        if state is not None:
            if state.settling is not None and not state.settling.done():
                state.settling.cancel()
            asyncio.get_running_loop().create_task(state.billing.aclose())

    def _notify(self, job_id: int, proof: SubmittedProof) -> None:
        state = self.jobs.get(job_id)
        if state is not None:
            for conn in list(state.connections):
                conn.notify_proof(proof)

    async def sign_checkpoint_index(self, job_id: int, canonical: bytes) -> bytes:
        """The wallet's EIP-191 signature of a job's checkpoint index (canonical JSON). The
        last one per job is kept: a client polling ``/v1/checkpoints`` does not make the
        host ask a signer service again until the index changes."""
        cached = self._index_signatures.get(job_id)
        if cached is not None and cached[0] == canonical:
            return cached[1]
        signature = await self.chain.signer.sign_message(canonical)
        self._index_signatures[job_id] = (canonical, signature)
        return signature

    # -- operator actions -----------------------------------------------------------------

    async def withdraw_earnings(self, token: str | None = None) -> str:
        """Withdraw everything HostEarnings holds for this host in ``token`` (None: ETH)."""
        return await self.txq.run(lambda: self.chain.hosts.withdraw_earnings(token))
