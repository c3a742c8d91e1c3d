"""SessionManager: opens, resumes and settles paid, end-to-end encrypted sessions with hosts.

A session is a session job on chain (the escrowed deposit), a WebSocket to the host carrying
the wire protocol of :mod:`fabstir_sdk.protocol`, and a conversation in the user's S5 storage.
The pieces live in small modules: the protocol state in ``protocol/_client.py``, the socket in
``_link.py``, :class:`Session` in ``_session.py``, the job and link it answers on in
``_channel.py``, :class:`PromptStream` in ``_prompt_stream.py``, buying, connecting
and S5 records in ``_backend.py``, the proof audit trail in ``_proofs.py``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from ..chain.addresses import ZERO_ADDRESS
from ..chain.client import Read
from ..chain.model_id import model_id as to_model_id
from ..chain.units import Amount
from ..config import SessionTimeouts
from ..errors import (
    FabstirError,
    PriceAboveMaximumError,
    SessionNotActiveError,
    ValidationError,
)
from ..models import HostInfo, Proof, SessionJob, SessionState, SessionStatus, Settlement, StoredRef
from ._backend import Failover, Payment, Plan, SessionBackend, job_id_of
from ._context import Context
from ._delegated import DelegatedJobs
from ._link import Link, ws_url
from ._session import PromptStream, Session
from .cost import CostEstimate, estimate_cost

if TYPE_CHECKING:
    from .discovery import DiscoveryManager
    from .host import HostManager
    from .payment import PaymentManager
    from .storage import StorageManager

__all__ = ["Failover", "Payment", "PromptStream", "Session", "SessionManager", "ws_url"]


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
        self._backend = SessionBackend(
            ctx, payments=payments, hosts=hosts, storage=storage, discovery=discovery
        )
        self._sessions = self._backend.sessions
        self._delegated = DelegatedJobs(ctx)

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
        payer: str | None = None,
    ) -> Session:
        """Pay for a session with ``host`` (or the best registered host for ``model``),
        connect and open the encrypted channel.

        The price is the host's on-chain price for the model and payment token; above
        ``max_price_per_token`` the session is refused before any transaction. With
        ``failover=True`` a host that dies, stalls or refuses mid-session is replaced by the
        next best one (within the price cap): see :attr:`Session.failovers`.

        ``payer``: an agent opens the session as the delegate of that wallet (its owner,
        who called ``authorize_delegate`` for it and approved the USDC): the owner pays and
        is the depositor, the agent signs the session with its own key and keeps the
        conversation in its own storage. End it with :meth:`Session.end` (the host settles)
        or let the owner complete it: only the depositor or the host may.
        """
        plan = self._plan(
            model=model,
            payment=payment,
            deposit_token=deposit_token,
            deposit=deposit,
            max_price_per_token=max_price_per_token,
            duration=duration,
            proof_interval=proof_interval,
            proof_timeout_window=proof_timeout_window,
            encryption=encryption,
            failover=failover,
            payer=payer,
        )
        limits = timeouts or self._ctx.config.session_timeouts
        # to a host dialled before, the WebSocket handshake, and the storage check (before
        # paying) run while the host is read; the dial goes first, as it takes longest
        ahead = self._backend.dial_ahead(host, limits)
        checked = asyncio.ensure_future(self._backend.storage.check())
        known = self._backend.known_host(host, plan)
        if known is not None:
            # a host opened before: its entry and price as read then, re-read in the
            # payment's check batch (one round trip fewer); if either moved, nothing was sent
            info, price = known
            opened = await self._backend.open_known(
                plan, info, price, limits, checked=checked, ahead=ahead
            )
            if opened is not None:
                return self._opened(*opened, info, model, limits, plan)
            checked = asyncio.ensure_future(self._backend.storage.check())
            ahead = None
        try:
            info, price = await self._host_for(plan, host)
        except BaseException:
            await self._backend.drop(checked)
            if ahead is not None:
                await self._backend.drop(ahead[1])
            raise
        job, link = await self._backend.open(
            plan, info, price, limits, checked=checked, ahead=ahead
        )
        return self._opened(job, link, info, model, limits, plan)

    def _opened(
        self,
        job: SessionJob,
        link: Link,
        info: HostInfo,
        model: str,
        limits: SessionTimeouts,
        plan: Plan,
    ) -> Session:
        return self._track(
            Session(
                self._backend,
                job=job,
                host=info,
                model=model,
                link=link,
                timeouts=limits,
                plan=plan,
            )
        )

    async def estimate_session_cost(
        self,
        model: str,
        expected_tokens: int,
        host: str | HostInfo | None = None,
        *,
        payment: Payment = "usdc",
        deposit: Amount = "1.0",
        max_price_per_token: int | None = None,
        duration: int = 3600,
        proof_interval: int = 1000,
        proof_timeout_window: int = 300,
        deposit_token: Literal["usdc", "eth"] = "usdc",  # noqa: S107 (not a secret)
        payer: str | None = None,
        gas: bool = True,
    ) -> CostEstimate:
        """What :meth:`create_session` with these arguments, ``expected_tokens`` streamed and
        ``complete()`` will cost: tokens at the chosen host's price and the gas of each of
        your transactions (see :class:`~fabstir_sdk.managers.cost.CostEstimate`). Sends
        nothing.

        ``payer``: an agent's delegated session; its only transaction is the creation (the
        payer's allowance must cover the deposit). The gas needs a node with
        ``eth_simulateV1`` (else :class:`~fabstir_sdk.errors.SimulationUnsupportedError`);
        ``gas=False`` skips it and gives the token figures alone."""
        plan = self._plan(
            model=model,
            payment=payment,
            deposit_token=deposit_token,
            deposit=deposit,
            max_price_per_token=max_price_per_token,
            duration=duration,
            proof_interval=proof_interval,
            proof_timeout_window=proof_timeout_window,
            encryption=True,
            failover=False,
            payer=payer,
        )
        payer = self._backend.payments.payer_of(plan.payer)
        info, price = await self._host_for(plan, host)
        if max_price_per_token is not None and price > max_price_per_token:
            raise PriceAboveMaximumError(price, max_price_per_token)
        return await estimate_cost(
            self._ctx,
            host=info.address,
            model_id=plan.model_id,
            token=plan.token,
            price=price,
            deposit=deposit,
            funding="deposit" if payment == "deposit" else "wallet",
            expected_tokens=expected_tokens,
            duration=duration,
            proof_interval=proof_interval,
            proof_timeout_window=proof_timeout_window,
            payer=payer,
            gas=gas,
        )

    def _plan(
        self,
        *,
        model: str,
        payment: Payment,
        deposit_token: Literal["usdc", "eth"],
        deposit: Amount,
        max_price_per_token: int | None,
        duration: int,
        proof_interval: int,
        proof_timeout_window: int,
        encryption: bool,
        failover: bool,
        payer: str | None,
    ) -> Plan:
        """The terms of a session to open (or price), checked before anything is read."""
        self._ctx.require_sender()
        if payment not in ("usdc", "eth", "deposit"):
            raise ValidationError(f"payment must be 'usdc', 'eth' or 'deposit', got {payment!r}")
        if payer is not None and payment != "usdc":
            raise ValidationError(f"a delegated session (payer) pays in 'usdc', not {payment!r}")
        currency: Literal["usdc", "eth"] = deposit_token if payment == "deposit" else payment
        return Plan(
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
            payer=payer,
        )

    async def _host_for(self, plan: Plan, host: str | HostInfo | None) -> tuple[HostInfo, int]:
        """``host`` and its price for the plan, or the best registered host's."""
        if host is None:
            return await self._backend.next_host(plan, exclude=set())
        return await self._backend.given_host(host, plan)

    async def resume_session(
        self,
        session_id: str | int,
        *,
        timeouts: SessionTimeouts | None = None,
        failover: bool = False,
    ) -> Session:
        """A new connection for an existing, active job; its history is replayed from S5."""
        me = self._ctx.require_sender().address
        job = await self._backend.job(job_id_of(session_id))
        await self._backend.metadata_written(job.id, quiet=True)
        meta = await self._backend.metadata(str(job.id)) or {}
        # yours: you paid for it, or you opened it as the payer's delegate (your own records)
        if me not in (job.depositor, meta.get("user")):
            raise ValidationError(f"session {job.id} belongs to {job.depositor}, not to you")
        if job.status != SessionState.ACTIVE:
            raise SessionNotActiveError(f"session {job.id} is {job.status.name}")
        info = await self._backend.hosts.get_host_info(job.host)
        model_id = str(meta.get("model_id") or "")
        if not model_id:  # opened elsewhere (e.g. by your agent): the job names its model
            mp = self._ctx.contract("job_marketplace")
            model_id = (
                "0x" + bytes(await self._ctx.client.read(mp.call("sessionModel", job.id))).hex()
            )
        model = str(meta.get("model") or model_id)
        currency: Literal["usdc", "eth"] = "eth" if int(job.payment_token, 16) == 0 else "usdc"
        plan = Plan(
            model=model,
            model_id=model_id,
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
            payer=None if job.depositor == me else job.depositor,
        )
        limits = timeouts or self._ctx.config.session_timeouts
        link = await self._backend.connect(job, info, plan, limits)
        history = await self._backend.history(str(job.id))
        session = Session(
            self._backend,
            job=job,
            host=info,
            model=model,
            link=link,
            timeouts=limits,
            plan=plan,
            history=history,
        )
        return self._track(session)

    async def complete_session(self, session_id: str | int) -> Settlement:
        """Settle a session now (as its depositor), whether or not it is open here."""
        sid = str(session_id)
        session = self._sessions.get(sid)
        if session is not None:
            return await session.complete()
        job = await self._backend.own_job(sid)
        ref = await self._backend.store_conversation(str(job.id))
        return await self._backend.payments.complete_session_job(job.id, ref.cid)

    async def submit_proof(self, session_id: str | int, proof: Proof) -> str:
        """Host role: claim ``proof.tokens`` of proven work on this session."""
        if not isinstance(proof, Proof):
            raise ValidationError("proof must be a fabstir_sdk.Proof")
        return await self._backend.hosts.submit_proof_of_work(
            job_id_of(session_id), proof.tokens, proof.proof_hash, proof.proof_cid, proof.delta_cid
        )

    async def store_session_data(self, session_id: str | int, key: str, data: Any) -> StoredRef:
        job_id = job_id_of(session_id)
        await self._backend.written(job_id)
        return await self._backend.storage.store_session_data(str(job_id), key, data)

    async def get_session_data(self, session_id: str | int, key: str) -> Any:
        """What was stored under ``key`` for the session: ``"metadata"`` (written when it was
        created), ``"proofs"`` (the audit trail written by ``complete()``), or your own."""
        job_id = job_id_of(session_id)
        await self._backend.written(job_id)
        return await self._backend.storage.get_session_data(str(job_id), key)

    async def get_session_status(self, session_id: str | int) -> SessionStatus:
        job = await self._backend.payments.get_session_job(job_id_of(session_id))
        session = self._sessions.get(str(job.id))
        try:
            messages = len((await self._backend.storage.load_conversation(str(job.id))).messages)
        except FabstirError:
            messages = 0
        return SessionStatus(
            session_id=str(job.id),
            job=job,
            connected=bool(session and session.connected),
            tokens_reported=session.tokens_reported if session else 0,
            tokens_claimed=session.tokens_claimed if session else 0,
            tokens_billed=job.tokens_used,
            proofs=len(session.proofs) if session else 0,
            messages=messages,
        )

    async def list_sessions(self, *, from_block: int = 0) -> list[SessionJob]:
        """Every session job this account opened, oldest first: those it paid for and those
        it opened as a payer's delegate (an agent's; their depositor is the payer).

        The first are indexed by the marketplace (read in batches); the second are found in
        the ``SessionCreatedByDelegate`` logs from ``from_block`` or the config's
        ``deployment_block``, whichever is later (a long chain's first scan is spared the
        blocks before the marketplace), then only in new blocks.
        """
        if isinstance(from_block, bool) or not isinstance(from_block, int) or from_block < 0:
            raise ValidationError(f"from_block must be a block number, got {from_block!r}")
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
        delegated = await self._delegated.ids(user, from_block=from_block)
        return await self._backend.payments.get_session_jobs(sorted({*ids, *delegated}))

    async def aclose(self) -> None:
        """Drop every open connection (no settlement: hosts settle on disconnect)."""
        for session in list(self._sessions.values()):
            await session.end()
        await self._backend.all_written()

    def _track(self, session: Session) -> Session:
        self._sessions[session.session_id] = session
        return session
