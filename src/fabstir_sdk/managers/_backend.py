"""What sessions need from the rest of the SDK: buying jobs, connecting, settling, S5 records.

:class:`SessionBackend` is shared by the :class:`~fabstir_sdk.managers.session.SessionManager`
and every :class:`~fabstir_sdk.managers._session.Session` it opens, so neither reaches into
the other's state.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .._display import native_amount
from ..chain.addresses import checksum_address
from ..chain.client import Read
from ..chain.units import Amount
from ..config import SessionTimeouts
from ..errors import (
    FabstirError,
    HandshakeError,
    HostFailedError,
    HostNotActiveError,
    HostOverclaimError,
    ModelNotApprovedError,
    NoHostAvailableError,
    NotFoundError,
    PriceAboveMaximumError,
    ValidationError,
)
from ..models import Conversation, HostInfo, Message, SessionJob, Settlement, StoredRef
from ..protocol import (
    ChatMessage,
    ClientSession,
    PreparedInit,
    PresignedInit,
    prepare_session_init,
    presign_session_init,
)
from ._context import Context
from ._link import Link, ws_url
from ._proofs import ProofLog, wait_for_receipt
from .host import host_info_from_chain

if TYPE_CHECKING:
    from ._session import Session
    from .discovery import DiscoveryManager
    from .host import HostManager
    from .payment import PaymentManager
    from .storage import StorageManager

__all__ = ["Failover", "Payment", "Plan", "SessionBackend"]

log = logging.getLogger("fabstir_sdk.session")

Payment = Literal["usdc", "eth", "deposit"]


@dataclass(frozen=True)
class Plan:
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
    #: The wallet that pays (the depositor) when an agent opens sessions as its delegate.
    payer: str | None = None


class _RegistryChanged(Exception):
    """The host's registry entry or price is not the one a session was opened with: nothing
    was sent; read it again (see :meth:`SessionBackend.open_known`)."""


@dataclass(frozen=True)
class Failover:
    """A session moved to another host: the old job was settled (``settlement``)."""

    reason: str
    old_host: str
    old_job_id: int
    new_host: str
    new_job_id: int
    settlement: Settlement | None


class SessionBackend:
    """Jobs, connections and S5 records of the sessions of one SDK."""

    def __init__(
        self,
        ctx: Context,
        *,
        payments: PaymentManager,
        hosts: HostManager,
        storage: StorageManager,
        discovery: DiscoveryManager,
    ) -> None:
        self.ctx = ctx
        self.payments = payments
        self.hosts = hosts
        self.storage = storage
        self.discovery = discovery
        #: The open sessions, by session id.
        self.sessions: dict[str, Session] = {}
        #: Session metadata being written to S5, by job id (see :meth:`metadata_written`).
        self._meta_writes: dict[int, asyncio.Task[StoredRef]] = {}
        #: The API URL each host had when a session with it was last opened (dial_ahead).
        self._urls: dict[str, str] = {}
        #: Other S5 writes of sessions in flight, by job id (see :meth:`written`).
        self._writes: dict[int, list[asyncio.Task[StoredRef]]] = {}
        #: Each host's registry entry (decoded, as read) and price, by (host, model id,
        #: token), as last read here (see :meth:`known_host`).
        self._registry: dict[tuple[str, str, str], tuple[HostInfo, int, Any]] = {}

    # -- hosts ----------------------------------------------------------------------------

    async def given_host(self, host: str | HostInfo, plan: Plan) -> tuple[HostInfo, int]:
        """The host's registry entry and its price for the plan, read in one batch."""
        address = (
            host.address if isinstance(host, HostInfo) else checksum_address(host, what="host")
        )
        nr = self.ctx.contract("node_registry")
        raw, price = await self.ctx.client.reads(
            Read.of(nr.call("getNodeFullInfo", address)),
            Read.of(nr.call("getModelPricing", address, plan.model_id, plan.token)),
        )
        info = host_info_from_chain(address, raw)
        if not info.is_active:
            raise HostNotActiveError(f"host {address} is not registered or not active")
        if plan.model_id not in info.models:
            raise ModelNotApprovedError(f"host {address} does not serve model {plan.model}")
        self._registry[(address, plan.model_id, plan.token)] = (info, int(price), raw)
        return info, int(price)

    def known_host(self, host: str | HostInfo | None, plan: Plan) -> tuple[HostInfo, int] | None:
        """``host``'s entry and price for the plan as :meth:`given_host` last read them, or
        None. :meth:`open_known` re-reads both in the payment's check batch: a session with a
        host opened before saves the registry's round trip."""
        if not isinstance(host, str):
            return None
        try:
            key = (checksum_address(host, what="host"), plan.model_id, plan.token)
        except ValidationError:
            return None  # given_host words it
        known = self._registry.get(key)
        return None if known is None else known[:2]

    async def open_known(
        self,
        plan: Plan,
        info: HostInfo,
        price: int,
        limits: SessionTimeouts,
        *,
        checked: asyncio.Future[None],
        ahead: tuple[str, asyncio.Future[Link]] | None,
    ) -> tuple[SessionJob, Link] | None:
        """:meth:`open` with :meth:`known_host`'s entry and price, checked in the payment's
        batch; None if either moved since (nothing was sent, ``checked`` and ``ahead`` are
        dropped): read the host again."""
        try:
            return await self.open(
                plan, info, price, limits, checked=checked, ahead=ahead, known=True
            )
        except _RegistryChanged:
            return None

    def _unchanged(self, info: HostInfo, price: int, plan: Plan) -> Callable[[Any, int], None]:
        """The payment's ``registry_check``: the entry and price read now are the known ones."""
        key = (info.address, plan.model_id, plan.token)
        raw = self._registry[key][2]

        def check(entry: Any, now: int) -> None:
            if now != price or entry != raw:
                self._registry.pop(key, None)
                raise _RegistryChanged(info.address)

        return check

    async def next_host(self, plan: Plan, *, exclude: set[str]) -> tuple[HostInfo, int]:
        """The best healthy host for the plan's model and price cap, not in ``exclude``,
        with its price for the model as discovery read it (no second read)."""
        ranked = await self.discovery.rank_hosts(
            required_models=[plan.model],
            max_price_per_token=plan.max_price_per_token,
            payment=plan.currency,
            limit=len(exclude) + 1,
        )
        for candidate in ranked:
            if candidate.host.address not in exclude:
                return candidate.host, candidate.price_per_token
        raise NoHostAvailableError(
            f"no other host serves {plan.model} within the price cap "
            f"(excluded after failures: {', '.join(sorted(exclude))})"
        )

    # -- opening --------------------------------------------------------------------------

    async def open(
        self,
        plan: Plan,
        info: HostInfo,
        price: int,
        limits: SessionTimeouts,
        *,
        checked: asyncio.Future[None] | None = None,
        ahead: tuple[str, asyncio.Future[Link]] | None = None,
        known: bool = False,
    ) -> tuple[SessionJob, Link]:
        """Buy a job with ``info`` at ``price`` per ``plan``, record it in S5 and connect.

        Nothing is sent until the storage check passed (``checked``: one the caller started
        already) and the host answered the WebSocket handshake: both run beside the
        payment's checks, and the transaction waits for them, so after it the connection
        costs only the init's round trip. A host that does not answer costs nothing; one
        that refuses the init is settled at once. ``ahead``: a dial already started (see
        :meth:`dial_ahead`), used if its URL is the host's. ``known``: ``info`` and
        ``price`` are :meth:`known_host`'s (checked in the payment's batch).
        """
        sender = self.ctx.require_sender()
        checking = checked if checked is not None else asyncio.ensure_future(self.storage.check())
        try:
            if plan.encryption and not info.public_key:
                raise ValidationError(f"host {info.address} publishes no publicKey: cannot encrypt")
            if plan.max_price_per_token is not None and price > plan.max_price_per_token:
                raise PriceAboveMaximumError(price, plan.max_price_per_token)
        except BaseException:
            await _drop(checking)
            if ahead is not None:
                await _drop(ahead[1])
            raise
        dialing = asyncio.ensure_future(self._dial(info, plan, limits, ahead))

        async def ready() -> None:
            await checking  # no conversation store, no payment
            await dialing  # no host on the line, no payment

        gate = asyncio.ensure_future(ready())
        try:
            created = await self.payments.open_session_job(
                info.address,
                plan.deposit,
                price,
                model=plan.model,
                token=None if plan.currency == "eth" else plan.token,
                funding="deposit" if plan.payment == "deposit" else "wallet",
                duration=plan.duration,
                proof_interval=plan.proof_interval,
                proof_timeout_window=plan.proof_timeout_window,
                payer=plan.payer,
                ready=gate,
                registry_check=self._unchanged(info, price, plan) if known else None,
            )
        except BaseException as exc:
            for task in (gate, checking, dialing):
                await _drop(task)  # closes the link the dial opened
            if isinstance(exc, HostFailedError) and _raised(dialing, exc):
                self.discovery.report_failure(info.address)  # not offered until re-checked
                exc.add_note("no session job was opened: nothing was paid")
            raise
        await gate  # awaited by the payment already: its result, at once
        link, prepared = dialing.result()
        job = created.job
        record = {
            "job_id": job.id,
            "host": info.address,
            "model": plan.model,
            "model_id": plan.model_id,
            "price_per_token": price,
            "payment_token": job.payment_token,
            "deposit": job.deposit,
            "deposit_human": str(plan.deposit),
            "user": sender.address,
            "payer": job.depositor,
            "created_tx": created.tx_hash,
        }
        try:
            link = await self._start(link, self._proto(job, info, plan, prepared), limits)
        except FabstirError as exc:
            if isinstance(exc, HostFailedError):
                self.discovery.report_failure(info.address)  # not offered until re-checked
            self._write_metadata(job.id, record)
            await self.metadata_written(job.id, quiet=True)
            await self._settle_unconnected(job, info, exc)
            raise
        except BaseException:
            self._write_metadata(job.id, record)  # the job exists: record it all the same
            raise
        self._urls[info.address] = info.api_url
        # Started once connected, so its encryption and upload do not compete with the
        # handshake (create_session measured 50 -> 31 ms with a local portal): written in the
        # background, awaited before any read or write of this session's S5 data (so it is
        # readable as soon as create_session returns), at end() and at complete().
        self._write_metadata(job.id, record)
        return job, link

    def _write_metadata(self, job_id: int, record: dict[str, Any]) -> None:
        self._meta_writes[job_id] = asyncio.get_running_loop().create_task(
            self.storage.store_session_data(str(job_id), "metadata", record)
        )

    async def _settle_unconnected(self, job: SessionJob, info: HostInfo, exc: Exception) -> None:
        """Paid but never connected: settle at once (a host may have proven tokens before
        it acknowledged, or refused, the init) and say what it cost."""
        try:
            settlement = await self.payments.complete_session_job(job.id)
        except FabstirError as settle_error:
            log.warning("could not settle job %s after a failed connect: %s", job.id, settle_error)
            exc.add_note(
                f"session job {job.id} was opened; settling it failed too ({settle_error}): "
                "complete it with complete_session"
            )
            return
        if settlement.host_payment == 0:
            exc.add_note(
                f"session job {job.id} was opened; it has been settled: nothing charged "
                f"(full refund of {native_amount(settlement.refund, job.payment_token)})"
            )
            return
        charged = (
            f"host {info.address} proved {settlement.tokens_used} tokens on session job "
            f"{job.id} before the session was established: "
            f"{native_amount(settlement.host_payment, job.payment_token)} charged, "
            f"{native_amount(settlement.refund, job.payment_token)} refunded "
            "(the job was settled at once)"
        )
        exc.add_note(charged)
        self.discovery.report_overclaim(info.address, claimed=settlement.tokens_used, reported=0)
        warnings.warn(HostOverclaimError(charged), stacklevel=4)

    async def connect(
        self, job: SessionJob, info: HostInfo, plan: Plan, limits: SessionTimeouts
    ) -> Link:
        """A connection with an init for an existing job (resuming it)."""
        link, prepared = await self._dial(info, plan, limits)
        return await self._start(link, self._proto(job, info, plan, prepared), limits)

    def dial_ahead(
        self, host: str | HostInfo | None, limits: SessionTimeouts
    ) -> tuple[str, asyncio.Future[Link]] | None:
        """A dial started now to ``host``'s URL as given (``HostInfo``) or as last read here
        (an address), before its registry entry is read: :meth:`open` uses it only if the
        entry names the same URL. None if the URL is not known."""
        if isinstance(host, HostInfo):
            api_url: str | None = host.api_url
        else:
            try:
                api_url = None if host is None else self._urls.get(checksum_address(host))
            except ValidationError:
                api_url = None  # the registry read words it
        if api_url is None:
            return None
        try:
            url = ws_url(api_url)
        except ValidationError:
            return None
        return url, asyncio.ensure_future(Link.dial(url, limits.connect))

    async def _dial(
        self,
        info: HostInfo,
        plan: Plan,
        limits: SessionTimeouts,
        ahead: tuple[str, asyncio.Future[Link]] | None = None,
    ) -> tuple[Link, PreparedInit | None]:
        """The WebSocket handshake and the init's crypto made ahead (key agreement and
        signature name no job id; with a signer outside the process, it signs then): both
        before the job exists, so that once it does the init costs one encryption."""
        try:
            url = ws_url(info.api_url)
        except ValidationError:
            if ahead is not None:
                await _drop(ahead[1])
            raise
        if ahead is not None and ahead[0] == url:
            dialing = ahead[1]
        else:
            if ahead is not None:
                await _drop(ahead[1])
            dialing = asyncio.ensure_future(Link.dial(url, limits.connect))
        prepared = None
        try:
            if plan.encryption and info.public_key:
                account = self.ctx.account
                if account is not None:
                    prepared = prepare_session_init(
                        info.public_key, sender_private_key=bytes(account.key)
                    )
                else:
                    eph, nonce, digest = presign_session_init(info.public_key)
                    assert self.ctx.signer is not None  # set by authenticate() with the account
                    signature = await self.ctx.signer.sign_message(digest)
                    prepared = prepare_session_init(
                        info.public_key, presigned=PresignedInit(eph, nonce, signature)
                    )
        except BaseException as exc:
            await _drop(dialing)
            if isinstance(exc, HandshakeError):  # before any payment
                raise ValidationError(
                    f"host {info.address} publishes a publicKey that is not a secp256k1 key: "
                    "cannot encrypt"
                ) from None
            raise
        return await dialing, prepared

    def _proto(
        self, job: SessionJob, info: HostInfo, plan: Plan, prepared: PreparedInit | None
    ) -> ClientSession:
        account = self.ctx.account
        return ClientSession(
            job_id=job.id,
            chain_id=self.ctx.config.chain_id,
            host_public_key=info.public_key if plan.encryption else None,
            client_private_key=bytes(account.key) if account and plan.encryption else None,
            model_name=plan.model,
            price_per_token=job.price_per_token,
            encrypted=plan.encryption,
            user_address=self.ctx.require_sender().address,
            prepared_init=prepared,
        )

    @staticmethod
    async def _start(link: Link, proto: ClientSession, limits: SessionTimeouts) -> Link:
        """Init on the dialled ``link``, or on a new one if the host dropped it meanwhile
        (a payment on a slow chain may outlast the host's patience with a silent socket)."""
        if not link.usable:
            await link.close()
            link = await Link.dial(link.url, limits.connect)
        await link.start(proto, limits.connect)
        return link

    # -- settling -------------------------------------------------------------------------

    async def settle(self, job_id: int, conversation_cid: str = "") -> Settlement:
        return await self.payments.complete_session_job(job_id, conversation_cid)

    async def job(self, job_id: int) -> SessionJob:
        return await self.payments.get_session_job(job_id)

    async def proof_mined(self, tx: str, *, within: float) -> None:
        """Wait for the receipt of a proof the host says it sent."""
        await wait_for_receipt(self.ctx.client.rpc, tx, within=within)

    async def billed(self, job_id: int, proofs: ProofLog) -> tuple[SessionJob, dict[str, Any]]:
        """The job as the chain has it now and the announced proofs beside its ``tokensUsed``
        (read at once)."""
        mp = self.ctx.contract("job_marketplace")
        job, records = await asyncio.gather(
            self.job(job_id), proofs.records(self.ctx.client.rpc, mp)
        )
        return job, ProofLog.summary(records, job.tokens_used)

    async def proof_records(self, proofs: ProofLog, tokens_used: int) -> dict[str, Any]:
        """The announced proofs as the chain has them, beside the job's ``tokensUsed``."""
        records = await proofs.records(self.ctx.client.rpc, self.ctx.contract("job_marketplace"))
        return ProofLog.summary(records, tokens_used)

    def record_proofs_soon(self, proofs: ProofLog) -> None:
        """Keep the proofs seen so far, as the chain has them, off the caller's path (at
        ``end()``, and for a job a failover leaves). The host's last claim comes after the
        disconnect, so the record says ``settled: False``; ``complete()`` writes the final one."""
        if not len(proofs):
            return

        async def record() -> StoredRef:
            job = await self.job(proofs.job_id)
            summary = await self.proof_records(proofs, job.tokens_used)
            return await self.storage.store_session_data(
                str(proofs.job_id), "proofs", {**summary, "settled": False}
            )

        task = asyncio.get_running_loop().create_task(record())
        self._writes.setdefault(proofs.job_id, []).append(task)

    def store_soon(self, job_id: int, key: str, data: Any) -> None:
        """Write the session's S5 data ``key`` off the caller's path; every read or write of
        the session's data through the SDK waits for it (see :meth:`written`)."""
        task = asyncio.get_running_loop().create_task(
            self.storage.store_session_data(str(job_id), key, data)
        )
        self._writes.setdefault(job_id, []).append(task)

    async def written(self, job_id: int) -> None:
        """Wait for the session's background S5 writes (metadata, proofs); their errors are
        logged, since the data they held is then not readable."""
        await self.metadata_written(job_id, quiet=True)
        for task in self._writes.pop(job_id, []):
            try:
                await task
            except FabstirError as exc:
                log.warning("storing data of session %s failed: %s", job_id, exc)

    # -- S5 -------------------------------------------------------------------------------

    async def metadata_written(self, job_id: int, *, quiet: bool = False) -> None:
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

    async def all_written(self) -> None:
        for job_id in {*self._meta_writes, *self._writes}:
            await self.written(job_id)

    async def append(
        self, conversation_id: str, prompt: str, answer: str, *, partial: bool
    ) -> None:
        messages = [Message(role="user", content=prompt)]
        if answer or not partial:
            messages.append(Message(role="assistant", content=answer))
        await self.storage.append_messages(conversation_id, messages)

    async def history(self, conversation_id: str) -> list[ChatMessage]:
        """The stored conversation as the host protocol's chat messages."""
        try:
            conversation = await self.storage.load_conversation(conversation_id)
        except FabstirError:
            return []
        return [ChatMessage(role=m.role, content=m.content) for m in conversation.messages]

    async def metadata(self, session_id: str) -> dict[str, Any] | None:
        try:
            meta = await self.storage.get_session_data(session_id, "metadata")
        except FabstirError:
            return None
        return meta if isinstance(meta, dict) else None

    def conversation_stored(self, conversation_id: str) -> asyncio.Future[StoredRef]:
        """:meth:`store_conversation` started now, to be awaited later (and dropped with
        :meth:`drop`)."""
        return asyncio.ensure_future(self.store_conversation(conversation_id))

    @staticmethod
    async def drop(task: asyncio.Future[Any]) -> None:
        """Cancel ``task`` unless done (closing a link it opened): on a path left early."""
        if task.done():
            if not task.cancelled():
                task.exception()  # retrieved: the path that left early raised its own
            return
        await _drop(task)

    async def store_conversation(self, conversation_id: str) -> StoredRef:
        """Where the conversation is stored (its CID); an empty one is stored if none is."""
        try:
            return await self.storage.conversation_ref(conversation_id)
        except NotFoundError:
            pass
        return await self.storage.store_conversation(Conversation(id=conversation_id))

    async def own_job(self, session_id: str | int) -> SessionJob:
        job = await self.payments.get_session_job(job_id_of(session_id))
        if job.depositor != self.ctx.require_sender().address:
            raise ValidationError(f"session {job.id} belongs to {job.depositor}, not to you")
        return job


def job_id_of(session_id: str | int) -> int:
    try:
        value = int(session_id)
    except (TypeError, ValueError):
        raise ValidationError(f"session id must be a job id, got {session_id!r}") from None
    if value <= 0 or isinstance(session_id, bool):
        raise ValidationError(f"session id must be a positive job id, got {session_id!r}")
    return value


async def _drop(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` (a storage check or a dial) and close the link it may have opened."""
    task.cancel()
    try:
        result = await task
    except (asyncio.CancelledError, Exception):
        return
    link = result[0] if isinstance(result, tuple) else result
    if isinstance(link, Link):
        await link.close()


def _raised(task: asyncio.Future[Any], exc: BaseException) -> bool:
    """Whether ``task`` failed with ``exc``."""
    return task.done() and not task.cancelled() and task.exception() is exc
