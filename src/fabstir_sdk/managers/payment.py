"""PaymentManager: session jobs (ETH, ERC-20, pre-funded deposits), settlement, balances.

Every write is checked first — amounts, ranges, the host, the model, the price, balances and
allowances — and refused with a typed error before a transaction is built. A session job is
opened by one path, :meth:`PaymentManager.open_session_job`: its checks ride in the batch of
the gas estimate, an ERC-20 allowance is raised only when short (to the configured budget,
never lowered), and the job is read from the receipt, not from the chain again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..chain.abi import Call
from ..chain.addresses import ZERO_ADDRESS, checksum_address
from ..chain.client import Read, Receipt, tx_hash
from ..chain.model_id import model_id as to_model_id
from ..chain.units import PRICE_PRECISION, Amount, to_base_units
from ..errors import (
    ChainError,
    DelegateNotAuthorizedError,
    DepositOutOfRangeError,
    DurationError,
    HostNotActiveError,
    InsufficientAllowanceError,
    InsufficientBalanceError,
    ModelNotApprovedError,
    PriceBelowMinimumError,
    ProofIntervalError,
    ProofTimeoutWindowError,
    SessionNotActiveError,
    SessionNotFoundError,
    Unit,
    ValidationError,
)
from ..models import SessionJob, SessionJobCreated, SessionState, Settlement
from ._context import Context

__all__ = ["PaymentManager", "decode_session_job"]

Checks = tuple[list[Read], Callable[[list[Any]], None]]

Funding = Literal["wallet", "deposit"]

#: Job reads per JSON-RPC batch in :meth:`PaymentManager.get_session_jobs`.
_JOBS_PER_BATCH = 100
#: Attempts at a wallet-paid ERC-20 session whose allowance other spenders keep using up.
_ALLOWANCE_ATTEMPTS = 4

MIN_PROOF_INTERVAL = 100
MIN_PROOF_TIMEOUT, MAX_PROOF_TIMEOUT = 60, 3600
MAX_DURATION = 365 * 24 * 3600
#: The marketplace caps a native deposit at 1000 ETH (no getter exposes it).
NATIVE_MAX_DEPOSIT = 1000 * 10**18

#: sessionJobs() output names -> SessionJob fields.
_JOB_FIELDS = {
    "id": "id",
    "depositor": "depositor",
    "host": "host",
    "paymentToken": "payment_token",
    "deposit": "deposit",
    "pricePerToken": "price_per_token",
    "tokensUsed": "tokens_used",
    "maxDuration": "max_duration",
    "startTime": "start_time",
    "lastProofTime": "last_proof_time",
    "proofInterval": "proof_interval",
    "proofTimeoutWindow": "proof_timeout_window",
    "status": "status",
    "withdrawnByHost": "withdrawn_by_host",
    "refundedToUser": "refunded_to_user",
    "conversationCID": "conversation_cid",
    "lastProofHash": "last_proof_hash",
    "lastProofCID": "last_proof_cid",
}


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{what} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValidationError(f"{what} must be positive, got {value}")
    return value


@dataclass(frozen=True)
class _Terms:
    """A session job's parameters, checked locally; on-chain checks come next."""

    host: str
    model: str  #: as the user named it, for messages
    model_id: str
    token: str
    deposit: int
    price: int
    duration: int
    proof_interval: int
    proof_timeout_window: int

    @property
    def max_tokens(self) -> int:
        return self.deposit * PRICE_PRECISION // self.price


class _AllowanceSuffices(Exception):
    """The allowance already covers the need: no approval is sent."""


def decode_session_job(job_id: int, values: dict[str, Any]) -> SessionJob:
    """A :class:`SessionJob` from the named output of ``sessionJobs(job_id)``;
    :class:`SessionNotFoundError` for an id no job has."""
    if int(values["id"]) == 0:
        raise SessionNotFoundError(f"no session job with id {job_id}")
    fields = {_JOB_FIELDS[name]: value for name, value in values.items()}
    fields["last_proof_hash"] = "0x" + bytes(fields["last_proof_hash"]).hex()
    return SessionJob(**fields)


class PaymentManager:
    """Create, inspect and settle session jobs; move deposits; read balances."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        #: One approval at a time per token (see :meth:`_raise_allowance`).
        self._approvals: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"PaymentManager(user_address={self._ctx.address!r})"

    # -- session jobs ---------------------------------------------------------------------

    async def open_session_job(
        self,
        host: str,
        amount: Amount,
        price_per_token: int,
        *,
        model: str,
        token: str | None = None,
        funding: Funding = "wallet",
        duration: int = 3600,
        proof_interval: int = 1000,
        proof_timeout_window: int = 300,
        approve: bool = True,
        payer: str | None = None,
        ready: Awaitable[Any] | None = None,
        registry_check: Callable[[Any, int], None] | None = None,
    ) -> SessionJobCreated:
        """Escrow ``amount`` (human units) of ``token`` (None: ETH) for a session with
        ``host`` on ``model``, paid from the wallet or from your pre-funded deposit.

        ``payer``: open the session as that wallet's delegate (an agent whose owner called
        :meth:`authorize_delegate` for it): the ERC-20 is pulled from the payer's allowance
        and the payer is the depositor. The agent cannot approve for the payer, so a short
        allowance, a short balance or a missing authorisation is refused before sending.

        One batch checks the host, model, price, deposit bounds, balance and allowance with
        the gas estimate; nothing is sent when a check fails, and a short balance is refused
        before any approval. A wallet-paid ERC-20 session whose allowance is short approves
        ``config.approval_budget`` first (``approve=False``: raise
        :class:`InsufficientAllowanceError` instead). The result's ``job`` is built from the
        receipt's event and the terms sent: no read-back.

        ``ready``: awaited once the checks are read and before anything is sent (the
        approval too); it raises to send nothing (a session waits for its host's handshake).
        ``registry_check``: called first with the host's ``getNodeFullInfo`` entry and its
        price for the model as the checks read them; it raises to send nothing (a session
        opened with the entry it read last time makes sure it still holds).
        """
        if funding not in ("wallet", "deposit"):
            raise ValidationError(f"funding must be 'wallet' or 'deposit', got {funding!r}")
        token_address = None if token is None else checksum_address(token, what="token")
        if token_address == ZERO_ADDRESS:
            token_address = None
        payer = self._payer(payer, token_address, funding)
        terms = await self._terms(
            host,
            token_address,
            amount,
            price_per_token,
            duration,
            proof_interval,
            model,
            proof_timeout_window,
        )
        call = self._open_call(terms, funding, payer)
        native = terms.token == ZERO_ADDRESS
        value = terms.deposit if funding == "wallet" and native else 0
        reads, validate = self._session_checks(terms, funding, payer, registry_check)
        sender = self._ctx.require_sender()
        for attempt in range(_ALLOWANCE_ATTEMPTS):
            try:
                receipt = await sender.send(
                    call,
                    value=value,
                    checks=reads,
                    validate=validate,
                    token_hint="" if native else terms.token,
                    ready=ready,
                )
            except InsufficientAllowanceError:
                # Short before sending, or used up by other spenders of this wallet while
                # ours was on its way: raise the allowance and try again.
                if not approve or payer is not None or attempt == _ALLOWANCE_ATTEMPTS - 1:
                    raise
                if ready is not None:
                    await ready
                await self._raise_allowance(terms.token, terms.deposit)
                continue
            return await self._created(receipt, terms)
        raise AssertionError("unreachable")  # pragma: no cover

    async def create_eth_session_job(
        self,
        host: str,
        amount: Amount,
        price_per_token: int,
        duration: int,
        proof_interval: int,
        *,
        model: str,
        proof_timeout_window: int = 300,
    ) -> SessionJobCreated:
        """Escrow ``amount`` ETH (human units): :meth:`open_session_job` with ``token=None``."""
        return await self.open_session_job(
            host,
            amount,
            price_per_token,
            model=model,
            duration=duration,
            proof_interval=proof_interval,
            proof_timeout_window=proof_timeout_window,
        )

    async def approve_usdc(self, usdc_address: str, amount: Amount) -> str:
        """Allow the marketplace to pull ``amount`` (human units) of the token."""
        token = checksum_address(usdc_address, what="usdc_address")
        value = to_base_units(amount, await self._ctx.decimals(token))
        spender = self._ctx.config.contract_addresses.job_marketplace
        call = self._ctx.erc20(token).call("approve", spender, value)
        return tx_hash(await self._ctx.require_sender().send(call, token_hint=token))

    async def create_usdc_session_job(
        self,
        host: str,
        usdc_address: str,
        amount: Amount,
        price_per_token: int,
        duration: int,
        proof_interval: int,
        *,
        model: str,
        proof_timeout_window: int = 300,
    ) -> SessionJobCreated:
        """Escrow ``amount`` of an ERC-20 (human units) already approved
        (:meth:`approve_usdc`): :meth:`open_session_job` with ``approve=False``."""
        return await self.open_session_job(
            host,
            amount,
            price_per_token,
            model=model,
            token=checksum_address(usdc_address, what="usdc_address"),
            duration=duration,
            proof_interval=proof_interval,
            proof_timeout_window=proof_timeout_window,
            approve=False,
        )

    async def create_session_job_from_deposit(
        self,
        host: str,
        amount: Amount,
        price_per_token: int,
        duration: int,
        proof_interval: int,
        *,
        model: str,
        token: str | None = None,
        proof_timeout_window: int = 300,
    ) -> SessionJobCreated:
        """Open a session paid from funds already deposited (:meth:`deposit`); None = ETH:
        :meth:`open_session_job` with ``funding="deposit"``."""
        return await self.open_session_job(
            host,
            amount,
            price_per_token,
            model=model,
            token=token,
            funding="deposit",
            duration=duration,
            proof_interval=proof_interval,
            proof_timeout_window=proof_timeout_window,
        )

    async def get_session_job(self, job_id: int) -> SessionJob:
        """All 18 fields of ``sessionJobs(job_id)``, decoded by name."""
        read, check = self._job_check(job_id)
        (values,) = await self._ctx.client.reads(read)
        return check(values)

    async def get_session_jobs(self, job_ids: list[int]) -> list[SessionJob]:
        """:meth:`get_session_job` of each id, in the ids' order, read in batches of
        ``_JOBS_PER_BATCH`` (what JSON-RPC providers accept in one request)."""
        checks = [self._job_check(i) for i in job_ids]
        jobs: list[SessionJob] = []
        for start in range(0, len(checks), _JOBS_PER_BATCH):
            chunk = checks[start : start + _JOBS_PER_BATCH]
            values = await self._ctx.client.reads(*(read for read, _ in chunk))
            jobs += [check(v) for (_, check), v in zip(chunk, values, strict=True)]
        return jobs

    async def complete_session_job(self, job_id: int, conversation_cid: str = "") -> Settlement:
        """Settle an active session now: the host is paid for proven tokens only."""
        if not isinstance(conversation_cid, str):
            raise ValidationError("conversation_cid must be a string")
        sender = self._ctx.require_sender()
        read, check = self._job_check(job_id)
        jobs: list[SessionJob] = []

        def validate(values: list[Any]) -> None:
            job = _active(check(values[0]))
            if sender.address not in (job.depositor, job.host):
                raise ValidationError(
                    f"only the depositor {job.depositor} or the host {job.host} can complete "
                    f"session {job.id}"
                )
            jobs.append(job)

        call = self._ctx.contract("job_marketplace").call(
            "completeSessionJob", job_id, conversation_cid
        )
        receipt = await sender.send(call, checks=[read], validate=validate)
        return self._settlement(jobs[0], receipt)

    async def trigger_session_timeout(self, job_id: int) -> Settlement:
        """Settle a session whose duration or proof timeout window has lapsed (anyone may)."""
        sender = self._ctx.require_sender()
        read, check = self._job_check(job_id)
        jobs: list[SessionJob] = []
        call = self._ctx.contract("job_marketplace").call("triggerSessionTimeout", job_id)
        receipt = await sender.send(
            call, checks=[read], validate=lambda v: jobs.append(_active(check(v[0])))
        )
        return self._settlement(jobs[0], receipt)

    # -- delegates (agents that spend their owner's allowance) ----------------------------

    async def authorize_delegate(self, delegate: str, allowed: bool = True) -> str:
        """Let ``delegate`` (an agent's address) open sessions paid by you, or stop it.

        What all your delegates can spend together is bounded by your ERC-20 allowance for
        the marketplace (:meth:`approve_usdc`): they never hold your key.
        """
        if not isinstance(allowed, bool):
            raise ValidationError(f"allowed must be a bool, got {type(allowed).__name__}")
        sender = self._ctx.require_sender()
        address = checksum_address(delegate, what="delegate")
        if address in (ZERO_ADDRESS, sender.address):
            raise ValidationError(f"a delegate must be another address than {address}")
        call = self._ctx.contract("job_marketplace").call("authorizeDelegate", address, allowed)
        return tx_hash(await sender.send(call))

    async def is_delegate_authorized(self, delegate: str, payer: str | None = None) -> bool:
        """Whether ``payer`` (default: you) lets ``delegate`` open sessions it pays."""
        who = self._ctx.require_address(payer)
        address = checksum_address(delegate, what="delegate")
        mp = self._ctx.contract("job_marketplace")
        return bool(await self._ctx.client.read(mp.call("isDelegateAuthorized", who, address)))

    def payer_of(self, payer: str | None) -> str | None:
        """``payer`` checked and checksummed (None, or yourself: you pay yourself)."""
        if payer is None:
            return None
        address = checksum_address(payer, what="payer")
        if address == self._ctx.require_sender().address:
            return None
        if address == ZERO_ADDRESS:
            raise ValidationError("payer must not be the zero address")
        return address

    def _payer(self, payer: str | None, token: str | None, funding: Funding) -> str | None:
        """The checked payer of a delegated session (None: you pay yourself)."""
        address = self.payer_of(payer)
        if address is None:
            return None
        if token is None or funding != "wallet":
            raise ValidationError(
                "a delegated session is paid in an ERC-20 from the payer's wallet "
                "(token set, funding='wallet')"
            )
        return address

    # -- deposits and balances ------------------------------------------------------------

    async def deposit(self, amount: Amount, token: str | None = None) -> str:
        """Pre-fund the marketplace with ETH (token None) or an ERC-20 (approve it first)."""
        sender = self._ctx.require_sender()
        mp = self._ctx.contract("job_marketplace")
        if token is None:
            unit = await self._ctx.unit(None)
            value = to_base_units(amount, unit[0])
            receipt = await sender.send(
                mp.call("depositNative"),
                value=value,
                checks=[Read.balance(sender.address)],
                validate=lambda v: _need(v[0], value, "ETH", unit),
            )
            return tx_hash(receipt)
        token = checksum_address(token, what="token")
        value = to_base_units(amount, await self._ctx.decimals(token))
        reads, validate = self._token_funds(token, value)
        receipt = await sender.send(
            mp.call("depositToken", token, value),
            checks=reads,
            validate=validate,
            token_hint=token,
        )
        return tx_hash(receipt)

    async def withdraw(self, amount: Amount, token: str | None = None) -> str:
        """Take back pre-funded deposit that no session has locked."""
        sender = self._ctx.require_sender()
        mp = self._ctx.contract("job_marketplace")
        token_address = ZERO_ADDRESS if token is None else checksum_address(token, what="token")
        unit = await self._ctx.unit(token)
        value = to_base_units(amount, unit[0])
        if token is None:
            call = mp.call("withdrawNative", value)
        else:
            call = mp.call("withdrawToken", token_address, value)
        balance = Read.of(mp.call("getDepositBalance", sender.address, token_address))
        receipt = await sender.send(
            call,
            checks=[balance],
            validate=lambda v: _need(
                v[0], value, f"{token or 'ETH'} deposit", unit, holder="the deposit"
            ),
        )
        return tx_hash(receipt)

    async def get_deposit_balance(
        self, token: str | None = None, address: str | None = None
    ) -> int:
        """Unlocked pre-funded deposit of ``address`` (default: you), in base units."""
        who = self._ctx.require_address(address)
        token_address = ZERO_ADDRESS if token is None else checksum_address(token, what="token")
        mp = self._ctx.contract("job_marketplace")
        return int(await self._ctx.client.read(mp.call("getDepositBalance", who, token_address)))

    async def get_eth_balance(self, address: str | None = None) -> int:
        who = self._ctx.require_address(address)
        (balance,) = await self._ctx.client.reads(Read.balance(who))
        return int(balance)

    async def get_allowance(self, token: str, address: str | None = None) -> int:
        """How much of ``token`` the marketplace may still pull from ``address`` (default:
        you), in base units: what wallet-paid sessions draw on (see ``approval_budget``)."""
        who = self._ctx.require_address(address)
        spender = self._ctx.config.contract_addresses.job_marketplace
        return int(
            await self._ctx.client.read(self._ctx.erc20(token).call("allowance", who, spender))
        )

    async def get_token_balance(self, token: str, address: str | None = None) -> int:
        who = self._ctx.require_address(address)
        return int(await self._ctx.client.read(self._ctx.erc20(token).call("balanceOf", who)))

    # -- checks ---------------------------------------------------------------------------

    async def _terms(
        self,
        host: str,
        token: str | None,
        amount: Amount,
        price_per_token: int,
        duration: int,
        proof_interval: int,
        model: str,
        proof_timeout_window: int,
    ) -> _Terms:
        """Everything that can be checked without the chain."""
        self._ctx.require_sender()
        host = checksum_address(host, what="host")
        if host == ZERO_ADDRESS:
            raise ValidationError("host must not be the zero address")
        price = _positive_int(price_per_token, "price_per_token")
        duration = _positive_int(duration, "duration")
        if duration > MAX_DURATION:
            raise DurationError(f"duration {duration} s exceeds 365 days")
        if isinstance(proof_interval, bool) or not isinstance(proof_interval, int):
            raise ProofIntervalError("proof_interval must be an int")
        if proof_interval < MIN_PROOF_INTERVAL:
            raise ProofIntervalError(
                f"proof_interval {proof_interval} is below the minimum of {MIN_PROOF_INTERVAL}"
            )
        if (
            isinstance(proof_timeout_window, bool)
            or not isinstance(proof_timeout_window, int)
            or not MIN_PROOF_TIMEOUT <= proof_timeout_window <= MAX_PROOF_TIMEOUT
        ):
            raise ProofTimeoutWindowError(
                f"proof_timeout_window must be {MIN_PROOF_TIMEOUT}..{MAX_PROOF_TIMEOUT} s, "
                f"got {proof_timeout_window!r}"
            )
        mid = to_model_id(model)
        deposit = to_base_units(amount, await self._ctx.decimals(token))
        terms = _Terms(
            host=host,
            model=model,
            model_id=mid,
            token=token or ZERO_ADDRESS,
            deposit=deposit,
            price=price,
            duration=duration,
            proof_interval=proof_interval,
            proof_timeout_window=proof_timeout_window,
        )
        if proof_interval > terms.max_tokens:
            raise ProofIntervalError(
                f"proof_interval {proof_interval} exceeds the {terms.max_tokens} tokens the "
                f"deposit pays for at price {price}"
            )
        return terms

    def _open_call(self, terms: _Terms, funding: Funding, payer: str | None = None) -> Call:
        """The marketplace call that opens a job on ``terms``."""
        mp = self._ctx.contract("job_marketplace")
        rest = (terms.price, terms.duration, terms.proof_interval, terms.proof_timeout_window)
        if payer is not None:
            return mp.call(
                "createSessionForModelAsDelegate",
                payer,
                terms.model_id,
                terms.host,
                terms.token,
                terms.deposit,
                *rest,
            )
        if funding == "deposit":
            return mp.call(
                "createSessionFromDepositForModel",
                terms.model_id,
                terms.host,
                terms.token,
                terms.deposit,
                *rest,
            )
        if terms.token == ZERO_ADDRESS:
            return mp.call("createSessionJobForModel", terms.host, terms.model_id, *rest)
        return mp.call(
            "createSessionJobForModelWithToken",
            terms.host,
            terms.model_id,
            terms.token,
            terms.deposit,
            *rest,
        )

    async def _raise_allowance(self, token: str, needed: int) -> None:
        """Approve the budget (or ``needed``, if larger) unless the allowance covers ``needed``.

        Under this manager's lock per token, so concurrent sessions approve once; the
        allowance is re-read in the approval's own batch, so a waiter that finds it raised
        (by us or by another process sharing the wallet) sends nothing. An approval only
        ever raises a short allowance: it never takes back what others counted on.
        """
        async with self._approvals.setdefault(token, asyncio.Lock()):
            owner = self._ctx.require_sender().address
            spender = self._ctx.config.contract_addresses.job_marketplace
            erc20 = self._ctx.erc20(token)
            budget = to_base_units(
                self._ctx.config.approval_budget,
                await self._ctx.decimals(token),
                what="approval_budget",
            )

            def validate(values: list[Any]) -> None:
                if values[0] >= needed:
                    raise _AllowanceSuffices

            with contextlib.suppress(_AllowanceSuffices):
                await self._ctx.require_sender().send(
                    erc20.call("approve", spender, max(budget, needed)),
                    checks=[Read.of(erc20.call("allowance", owner, spender))],
                    validate=validate,
                    token_hint=token,
                )

    def _session_checks(
        self,
        terms: _Terms,
        funding: str,
        payer: str | None = None,
        registry_check: Callable[[Any, int], None] | None = None,
    ) -> Checks:
        """Host, model, price, deposit bounds and funds (the payer's, and its authorisation
        of this key, for a delegated session): read with the gas estimate."""
        ctx = self._ctx
        user = ctx.require_sender().address
        nr, mr, mp = (
            ctx.contract("node_registry"),
            ctx.contract("model_registry"),
            ctx.contract("job_marketplace"),
        )
        native = terms.token == ZERO_ADDRESS
        unit = ctx.known_unit(terms.token)  # read by _terms
        reads = [
            Read.of(nr.call("getNodeFullInfo", terms.host)),
            Read.of(mr.call("isModelApproved", terms.model_id)),
            Read.of(nr.call("getModelPricing", terms.host, terms.model_id, terms.token)),
        ]
        if native:
            reads.append(Read.of(mp.call("MIN_DEPOSIT")))
        else:
            reads += [
                Read.of(mp.call("tokenMinDeposits", terms.token)),
                Read.of(mp.call("tokenMaxDeposits", terms.token)),
            ]
        if funding == "wallet" and not native:
            funds_reads, funds_check = self._token_funds(terms.token, terms.deposit, payer)
        else:
            holder = "the account"
            if funding == "deposit":
                funds = Read.of(mp.call("getDepositBalance", user, terms.token))
                label, holder = f"{terms.token} deposit", "the deposit"
            else:
                funds, label = Read.balance(user), "ETH"
            funds_reads = [funds]

            def funds_check(values: list[Any]) -> None:
                _need(values[0], terms.deposit, label, unit, holder=holder)

        reads += funds_reads
        if payer is not None:
            reads.append(Read.of(mp.call("isDelegateAuthorized", payer, user)))

        def validate(values: list[Any]) -> None:
            if payer is not None and not values[-1]:
                raise DelegateNotAuthorizedError(payer, user)
            node, approved, min_price = values[:3]
            if registry_check is not None:
                registry_check(node, int(min_price))
            operator, _stake, active, _meta, _url, models = node[:6]
            if int(operator, 16) == 0:
                raise HostNotActiveError(f"host {terms.host} is not registered")
            if not active:
                raise HostNotActiveError(f"host {terms.host} is registered but not active")
            if not approved:
                raise ModelNotApprovedError(f"model {terms.model} is not approved on chain")
            if terms.model_id not in {"0x" + bytes(m).hex() for m in models}:
                raise ModelNotApprovedError(f"host {terms.host} does not serve model {terms.model}")
            if terms.price < min_price:
                raise PriceBelowMinimumError(terms.price, int(min_price))
            if native:
                (lo,), hi, rest = values[3:4], NATIVE_MAX_DEPOSIT, values[4:]
            else:
                (lo, hi), rest = values[3:5], values[5:]
                if hi == 0:
                    raise ValidationError(f"token {terms.token} is not accepted by the marketplace")
            if not lo <= terms.deposit <= hi:
                raise DepositOutOfRangeError(terms.deposit, lo, hi, terms.token, unit=unit)
            funds_check(rest)

        return reads, validate

    def _token_funds(self, token: str, value: int, payer: str | None = None) -> Checks:
        """Balance and allowance of ``token`` for the marketplace (of ``payer``, default you)."""
        owner = payer or self._ctx.require_sender().address
        spender = self._ctx.config.contract_addresses.job_marketplace
        erc20 = self._ctx.erc20(token)
        unit = self._ctx.known_unit(token)  # read when the amount was converted
        holder = f"the payer {owner}" if payer else "the account"
        reads = [
            Read.of(erc20.call("balanceOf", owner)),
            Read.of(erc20.call("allowance", owner, spender)),
        ]

        def validate(values: list[Any]) -> None:
            balance, allowance = values[:2]
            _need(balance, value, token, unit, holder=holder)
            if allowance < value:
                error = InsufficientAllowanceError(value, int(allowance), token, unit=unit)
                if payer:
                    error.add_note(f"the allowance is the payer's: {owner} approves more")
                raise error

        return reads, validate

    def _job_check(self, job_id: int) -> tuple[Read, Callable[[Any], SessionJob]]:
        """The read of ``sessionJobs(job_id)`` and its decoding into a SessionJob."""
        job_id = _positive_int(job_id, "job_id")
        mp = self._ctx.contract("job_marketplace")
        read = Read.of(mp.call("sessionJobs", job_id), named=True)
        return read, functools.partial(decode_session_job, job_id)

    # -- receipts -------------------------------------------------------------------------

    async def _created(self, receipt: Receipt, terms: _Terms) -> SessionJobCreated:
        """The job as the receipt's event and the terms sent describe it."""
        mp = self._ctx.contract("job_marketplace")
        events = mp.events(receipt, "SessionJobCreated") or mp.events(
            receipt, "SessionCreatedByDepositor"
        )
        if not events:
            raise ChainError(f"no session-created event in tx {tx_hash(receipt)}")
        args = events[0]
        job_id = int(args["jobId"] if "jobId" in args else args["sessionId"])
        started = await self._block_time(receipt)
        job = SessionJob(
            id=job_id,
            depositor=checksum_address(args["depositor"]),
            host=terms.host,
            payment_token=terms.token,
            deposit=int(args["deposit"]),
            price_per_token=terms.price,
            tokens_used=0,
            max_duration=terms.duration,
            start_time=started,
            last_proof_time=started,
            proof_interval=terms.proof_interval,
            proof_timeout_window=terms.proof_timeout_window,
            status=SessionState.ACTIVE,
            withdrawn_by_host=0,
            refunded_to_user=0,
            conversation_cid="",
            last_proof_hash="0x" + "00" * 32,
            last_proof_cid="",
        )
        return SessionJobCreated(job_id=job_id, tx_hash=tx_hash(receipt), job=job)

    async def _block_time(self, receipt: Receipt) -> int:
        """The timestamp of the receipt's block: from its logs where the node includes it
        (anvil, recent geth and reth do), else from the block header."""
        for entry in receipt.get("logs") or ():
            stamp = entry.get("blockTimestamp") if isinstance(entry, dict) else None
            if isinstance(stamp, str) and stamp.startswith("0x"):
                return int(stamp, 16)
        block = await self._ctx.client.rpc.call(
            "eth_getBlockByNumber", receipt["blockNumber"], False
        )
        return int(block["timestamp"], 16)

    def _settlement(self, job: SessionJob, receipt: Receipt) -> Settlement:
        """The split as the receipt's events report it."""
        mp = self._ctx.contract("job_marketplace")
        completed = mp.events(receipt, "SessionCompletedBy")
        if completed:
            tokens = int(completed[0]["tokensUsed"])
            gross = int(completed[0]["paymentAmount"])
            refund = int(completed[0]["refundAmount"])
        else:
            timed_out = mp.events(receipt, "SessionTimedOut")
            if not timed_out:
                raise ChainError(f"no settlement event in tx {tx_hash(receipt)}")
            tokens = job.tokens_used
            gross = int(timed_out[0]["hostEarnings"])
            refund = int(timed_out[0]["userRefund"])
        credited = self._ctx.contract("host_earnings").events(receipt, "EarningsCredited")
        host_net = sum(int(e["amount"]) for e in credited if e["host"] == job.host)
        return Settlement(
            job_id=job.id,
            tokens_used=tokens,
            host_payment=gross,
            treasury_fee=gross - host_net,
            host_net=host_net,
            refund=refund,
            token=job.payment_token,
            tx_hash=tx_hash(receipt),
        )


def _active(job: SessionJob) -> SessionJob:
    if job.status != SessionState.ACTIVE:
        raise SessionNotActiveError(f"session {job.id} is {job.status.name}, not ACTIVE")
    return job


def _need(
    available: int, needed: int, what: str, unit: Unit | None, *, holder: str = "the account"
) -> None:
    if available < needed:
        raise InsufficientBalanceError(needed, int(available), what, unit=unit, holder=holder)
