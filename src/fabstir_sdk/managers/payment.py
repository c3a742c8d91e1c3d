"""PaymentManager: session jobs (ETH, ERC-20, pre-funded deposits), settlement, balances.

Every write is checked first — amounts, ranges, the host, the model, the price, balances and
allowances — and refused with a typed error before a transaction is built.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from web3.types import TxReceipt

from ..chain.addresses import ZERO_ADDRESS, checksum_address
from ..chain.client import tx_hash
from ..chain.model_id import model_id as to_model_id
from ..chain.units import PRICE_PRECISION, Amount, to_base_units
from ..errors import (
    ChainError,
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
    ValidationError,
)
from ..models import SessionJob, SessionJobCreated, SessionState, Settlement
from ._context import Context, event_args

__all__ = ["PaymentManager"]

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


class PaymentManager:
    """Create, inspect and settle session jobs; move deposits; read balances."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._min_native: int | None = None

    def __repr__(self) -> str:
        return f"PaymentManager(user_address={self._ctx.address!r})"

    # -- session jobs ---------------------------------------------------------------------

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
        """Escrow ``amount`` ETH (human units) for a session with ``host`` on ``model``."""
        terms = await self._terms(
            host,
            None,
            amount,
            price_per_token,
            duration,
            proof_interval,
            model,
            proof_timeout_window,
        )
        await self._check_on_chain(terms, funding="wallet")
        fn = self._ctx.contract("job_marketplace").functions.createSessionJobForModel(
            terms.host,
            terms.model_id,
            terms.price,
            terms.duration,
            terms.proof_interval,
            terms.proof_timeout_window,
        )
        return self._created(await self._ctx.require_sender().send(fn, value=terms.deposit))

    async def approve_usdc(self, usdc_address: str, amount: Amount) -> str:
        """Allow the marketplace to pull ``amount`` (human units) of the token."""
        token = checksum_address(usdc_address, what="usdc_address")
        value = to_base_units(amount, await self._ctx.decimals(token))
        spender = self._ctx.config.contract_addresses.job_marketplace
        fn = self._ctx.erc20(token).functions.approve(spender, value)
        return tx_hash(await self._ctx.require_sender().send(fn, token_hint=token))

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
        """Escrow ``amount`` of an ERC-20 (human units); approve it first (:meth:`approve_usdc`)."""
        token = checksum_address(usdc_address, what="usdc_address")
        terms = await self._terms(
            host,
            token,
            amount,
            price_per_token,
            duration,
            proof_interval,
            model,
            proof_timeout_window,
        )
        await self._check_on_chain(terms, funding="wallet")
        fn = self._ctx.contract("job_marketplace").functions.createSessionJobForModelWithToken(
            terms.host,
            terms.model_id,
            token,
            terms.deposit,
            terms.price,
            terms.duration,
            terms.proof_interval,
            terms.proof_timeout_window,
        )
        return self._created(await self._ctx.require_sender().send(fn, token_hint=token))

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
        """Open a session paid from funds already deposited (:meth:`deposit`); None = ETH."""
        token_address = ZERO_ADDRESS if token is None else checksum_address(token, what="token")
        terms = await self._terms(
            host,
            None if token is None else token_address,
            amount,
            price_per_token,
            duration,
            proof_interval,
            model,
            proof_timeout_window,
        )
        await self._check_on_chain(terms, funding="deposit")
        fn = self._ctx.contract("job_marketplace").functions.createSessionFromDepositForModel(
            terms.model_id,
            terms.host,
            token_address,
            terms.deposit,
            terms.price,
            terms.duration,
            terms.proof_interval,
            terms.proof_timeout_window,
        )
        return self._created(await self._ctx.require_sender().send(fn))

    async def get_session_job(self, job_id: int) -> SessionJob:
        """All 18 fields of ``sessionJobs(job_id)``, decoded by name."""
        job_id = _positive_int(job_id, "job_id")
        fn = self._ctx.contract("job_marketplace").functions.sessionJobs(job_id)
        raw = await self._ctx.client.call(fn)
        names = [out["name"] for out in fn.abi["outputs"]]
        values: dict[str, Any] = dict(zip(names, raw, strict=True))
        if int(values["id"]) == 0:
            raise SessionNotFoundError(f"no session job with id {job_id}")
        fields = {_JOB_FIELDS[name]: value for name, value in values.items()}
        fields["last_proof_hash"] = "0x" + bytes(fields["last_proof_hash"]).hex()
        return SessionJob(**fields)

    async def complete_session_job(self, job_id: int, conversation_cid: str = "") -> Settlement:
        """Settle an active session now: the host is paid for proven tokens only."""
        if not isinstance(conversation_cid, str):
            raise ValidationError("conversation_cid must be a string")
        sender = self._ctx.require_sender()
        job = await self._active_job(job_id)
        if sender.address not in (job.depositor, job.host):
            raise ValidationError(
                f"only the depositor {job.depositor} or the host {job.host} can complete "
                f"session {job.id}"
            )
        fn = self._ctx.contract("job_marketplace").functions.completeSessionJob(
            job.id, conversation_cid
        )
        return self._settlement(job, await sender.send(fn))

    async def trigger_session_timeout(self, job_id: int) -> Settlement:
        """Settle a session whose duration or proof timeout window has lapsed (anyone may)."""
        sender = self._ctx.require_sender()
        job = await self._active_job(job_id)
        fn = self._ctx.contract("job_marketplace").functions.triggerSessionTimeout(job.id)
        return self._settlement(job, await sender.send(fn))

    # -- deposits and balances ------------------------------------------------------------

    async def deposit(self, amount: Amount, token: str | None = None) -> str:
        """Pre-fund the marketplace with ETH (token None) or an ERC-20 (approve it first)."""
        sender = self._ctx.require_sender()
        mp = self._ctx.contract("job_marketplace")
        if token is None:
            value = to_base_units(amount, await self._ctx.decimals(None))
            await self._need(await self.get_eth_balance(), value, "ETH")
            return tx_hash(await sender.send(mp.functions.depositNative(), value=value))
        token = checksum_address(token, what="token")
        value = to_base_units(amount, await self._ctx.decimals(token))
        await self._check_token_funds(token, value)
        return tx_hash(await sender.send(mp.functions.depositToken(token, value), token_hint=token))

    async def withdraw(self, amount: Amount, token: str | None = None) -> str:
        """Take back pre-funded deposit that no session has locked."""
        sender = self._ctx.require_sender()
        mp = self._ctx.contract("job_marketplace")
        value = to_base_units(amount, await self._ctx.decimals(token))
        await self._need(await self.get_deposit_balance(token), value, token or "ETH deposit")
        if token is None:
            fn = mp.functions.withdrawNative(value)
        else:
            fn = mp.functions.withdrawToken(checksum_address(token, what="token"), value)
        return tx_hash(await sender.send(fn))

    async def get_deposit_balance(
        self, token: str | None = None, address: str | None = None
    ) -> int:
        """Unlocked pre-funded deposit of ``address`` (default: you), in base units."""
        who = self._ctx.require_address(address)
        token_address = ZERO_ADDRESS if token is None else checksum_address(token, what="token")
        mp = self._ctx.contract("job_marketplace")
        return int(await self._ctx.client.call(mp.functions.getDepositBalance(who, token_address)))

    async def get_eth_balance(self, address: str | None = None) -> int:
        who = self._ctx.require_address(address)
        w3 = self._ctx.client.w3
        return int(await self._ctx.client.rpc("eth_getBalance", lambda: w3.eth.get_balance(who)))  # type: ignore[arg-type]

    async def get_token_balance(self, token: str, address: str | None = None) -> int:
        who = self._ctx.require_address(address)
        return int(await self._ctx.client.call(self._ctx.erc20(token).functions.balanceOf(who)))

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

    async def _check_on_chain(self, terms: _Terms, *, funding: str) -> None:
        """Host, model, price, deposit bounds and funds, read concurrently."""
        ctx = self._ctx
        nr, mr = ctx.contract("node_registry"), ctx.contract("model_registry")
        node, approved, min_price, (lo, hi) = await asyncio.gather(
            ctx.client.call(nr.functions.getNodeFullInfo(terms.host)),
            ctx.client.call(mr.functions.isModelApproved(terms.model_id)),
            ctx.client.call(nr.functions.getModelPricing(terms.host, terms.model_id, terms.token)),
            self._deposit_bounds(terms.token),
        )
        operator, _stake, active, _meta, _url, models = node[:6]
        if int(operator, 16) == 0:
            raise HostNotActiveError(f"host {terms.host} is not registered")
        if not active:
            raise HostNotActiveError(f"host {terms.host} is registered but not active")
        if not approved:
            raise ModelNotApprovedError(f"model {terms.model_id} is not approved")
        if terms.model_id not in {"0x" + bytes(m).hex() for m in models}:
            raise ModelNotApprovedError(f"host {terms.host} does not serve model {terms.model_id}")
        if terms.price < min_price:
            raise PriceBelowMinimumError(terms.price, int(min_price))
        if not lo <= terms.deposit <= hi:
            raise DepositOutOfRangeError(terms.deposit, lo, hi, terms.token)
        if funding == "deposit":
            available = await self.get_deposit_balance(
                None if terms.token == ZERO_ADDRESS else terms.token
            )
            await self._need(available, terms.deposit, f"{terms.token} deposit")
        elif terms.token == ZERO_ADDRESS:
            await self._need(await self.get_eth_balance(), terms.deposit, "ETH")
        else:
            await self._check_token_funds(terms.token, terms.deposit)

    async def _deposit_bounds(self, token: str) -> tuple[int, int]:
        mp = self._ctx.contract("job_marketplace")
        if token == ZERO_ADDRESS:
            if self._min_native is None:
                self._min_native = int(await self._ctx.client.call(mp.functions.MIN_DEPOSIT()))
            return self._min_native, NATIVE_MAX_DEPOSIT
        lo, hi = await asyncio.gather(
            self._ctx.client.call(mp.functions.tokenMinDeposits(token)),
            self._ctx.client.call(mp.functions.tokenMaxDeposits(token)),
        )
        if int(hi) == 0:
            raise ValidationError(f"token {token} is not accepted by the marketplace")
        return int(lo), int(hi)

    async def _check_token_funds(self, token: str, value: int) -> None:
        owner = self._ctx.require_sender().address
        spender = self._ctx.config.contract_addresses.job_marketplace
        erc20 = self._ctx.erc20(token).functions
        balance, allowance = await asyncio.gather(
            self._ctx.client.call(erc20.balanceOf(owner)),
            self._ctx.client.call(erc20.allowance(owner, spender)),
        )
        await self._need(int(balance), value, token)
        if allowance < value:
            raise InsufficientAllowanceError(value, int(allowance), token)

    @staticmethod
    async def _need(available: int, needed: int, what: str) -> None:
        if available < needed:
            raise InsufficientBalanceError(needed, available, what)

    async def _active_job(self, job_id: int) -> SessionJob:
        job = await self.get_session_job(job_id)
        if job.status != SessionState.ACTIVE:
            raise SessionNotActiveError(f"session {job.id} is {job.status.name}, not ACTIVE")
        return job

    # -- receipts -------------------------------------------------------------------------

    def _created(self, receipt: TxReceipt) -> SessionJobCreated:
        mp = self._ctx.contract("job_marketplace")
        events = event_args(mp, "SessionJobCreated", receipt) or event_args(
            mp, "SessionCreatedByDepositor", receipt
        )
        if not events:
            raise ChainError(f"no session-created event in tx {tx_hash(receipt)}")
        args = events[0]
        job_id = int(args["jobId"] if "jobId" in args else args["sessionId"])
        return SessionJobCreated(job_id=job_id, tx_hash=tx_hash(receipt))

    def _settlement(self, job: SessionJob, receipt: TxReceipt) -> Settlement:
        """The split as the receipt's events report it."""
        mp = self._ctx.contract("job_marketplace")
        completed = event_args(mp, "SessionCompletedBy", receipt)
        if completed:
            tokens = int(completed[0]["tokensUsed"])
            gross = int(completed[0]["paymentAmount"])
            refund = int(completed[0]["refundAmount"])
        else:
            timed_out = event_args(mp, "SessionTimedOut", receipt)
            if not timed_out:
                raise ChainError(f"no settlement event in tx {tx_hash(receipt)}")
            tokens = job.tokens_used
            gross = int(timed_out[0]["hostEarnings"])
            refund = int(timed_out[0]["userRefund"])
        credited = [
            e
            for e in event_args(self._ctx.contract("host_earnings"), "EarningsCredited", receipt)
            if e["host"] == job.host
        ]
        host_net = sum(int(e["amount"]) for e in credited)
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
