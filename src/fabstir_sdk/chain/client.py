"""One connection to the chain: batched reads and the single write path.

Writes go through :class:`TxSender`, which owns the account's nonces. One task at a time
hands nonces out and broadcasts, so concurrent writes from one account never clash: the
writes that wait while a broadcast is out go next, together, with consecutive nonces in one
JSON-RPC batch (a thousand sessions' transactions from one account once waited minutes in
line). A write that finds none before it goes at once. A broadcast the node refuses gives
its nonce back; a refused nonce below one the node accepted would hold that one forever,
so it is filled with a transfer of nothing to the account itself (re-signing the accepted
one with it could run that transaction twice). When nothing is in flight the allocator uses
the node's pending nonce, so transactions sent elsewhere with the same key (or an
``evm_revert`` on a devnet) cannot leave it stale.

A write costs three round trips: one batch holding the caller's checks, the gas estimate, the
gas price and the pending nonce; the broadcast; the receipt.

Several processes may share one key (a web app's workers): a nonce the node refuses as taken
("nonce too low", "replacement transaction underpriced") was used by another process, so the
nonce is re-read from the node and the transaction signed again; it is never sent twice,
since a refused transaction did not enter the mempool. Likewise when a node accepted both and
mined the other: ours can never be mined, so it is signed again with the next nonce.

A pending transaction whose fee cap the base fee overtook (bursts of full blocks) would wait
forever and be dropped: it is replaced with the same nonce and fees raised by at least the
nodes' replacement minimum (12.5%), and whichever of its signings is mined counts. A node
that already evicted it for its cap (anvil does, at the next block) gets it again the same
way: its nonce is unused, so it can never run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from ..errors import (
    ChainError,
    ChainMismatchError,
    FabstirError,
    OutOfGasError,
    RpcError,
    RpcFailure,
    TransactionDroppedError,
    TransactionReplacedError,
    TransactionTimeoutError,
    Unit,
)
from .abi import Call, Contract
from .addresses import checksum_address
from .revert import revert_error
from .rpc import JsonRpcClient
from .signer import Signer, as_signer
from .together import Together
from .transport import RpcTransport, redact_url

if TYPE_CHECKING:
    from ..config import SDKConfig

__all__ = ["ChainClient", "Read", "TxSender", "block_windows", "tx_hash"]

log = logging.getLogger("fabstir_sdk.chain")

#: Seconds of waiting for a receipt before checking that the node still has the transaction,
#: and between such checks.
_FATE_AFTER, _FATE_EVERY = 1.0, 2.0
#: How often one transaction is signed again after other users of the key took its nonce.
_RESIGN_LIMIT = 64
#: How often one pending transaction is replaced (same nonce, higher fees) after the base fee
#: rose above its fee cap.
_REPRICE_LIMIT = 8
#: How often a transaction that ran out of gas (the state changed after its estimate) is sent
#: again with a new estimate.
_OUT_OF_GAS_RETRIES = 2
#: What nodes (anvil, geth, reth, erigon) say when a transaction's nonce is already used.
_NONCE_TAKEN = (
    "nonce too low",
    "nonce is too low",
    "nonce has already been used",
    "already known",
    "already imported",
    "replacement transaction underpriced",
    "replacement fee too low",
)

Receipt = dict[str, Any]


def tx_hash(receipt: Receipt) -> str:
    """The 0x-hex hash of the transaction behind ``receipt``."""
    return str(receipt["transactionHash"])


def _hex_int(value: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise RpcError(f"expected a 0x-hex quantity, got {str(value)[:40]!r}")
    try:
        return int(value, 16)
    except ValueError:
        raise RpcError(f"expected a 0x-hex quantity, got {value[:40]!r}") from None


def _hex_data(value: object) -> bytes:
    """An ``eth_call`` result (0x-hex data) as bytes; anything else is the node's error."""
    if isinstance(value, str) and value.startswith("0x"):
        with contextlib.suppress(ValueError):
            return bytes.fromhex(value[2:])
    raise RpcError(f"expected 0x-hex data, got {str(value)[:40]!r}")


@dataclass(frozen=True)
class Read:
    """One read in a batch: a JSON-RPC method, its params and how to decode its result."""

    method: str
    params: tuple[Any, ...]
    decode: Callable[[Any], Any]
    label: str

    @classmethod
    def of(cls, call: Call, *, named: bool = False) -> Read:
        """An ``eth_call`` of a contract function."""
        decoder = call.decode_named if named else call.decode
        return cls(
            "eth_call",
            ({"to": call.to, "data": "0x" + call.data.hex()}, "latest"),
            lambda result: decoder(_hex_data(result)),
            f"{call.contract}.{call.fn}",
        )

    @classmethod
    def balance(cls, address: str) -> Read:
        return cls("eth_getBalance", (address, "latest"), _hex_int, "eth_getBalance")

    @classmethod
    def logs(cls, address: str, topics: list[str | None], low: int, high: int, label: str) -> Read:
        """An ``eth_getLogs`` of ``address``'s logs matching ``topics`` in blocks ``low`` to
        ``high`` (both included); the result is the list of raw logs."""
        log_filter = {
            "address": address,
            "topics": topics,
            "fromBlock": hex(low),
            "toBlock": hex(high),
        }
        return cls("eth_getLogs", (log_filter,), _log_list, label)


def block_windows(first: int, last: int, size: int) -> list[tuple[int, int]]:
    """Blocks ``first`` to ``last`` as ``(low, high)`` ranges of at most ``size`` blocks,
    in order: the ranges of a log scan's ``eth_getLogs`` (none if ``first > last``)."""
    return [(low, min(last, low + size - 1)) for low in range(first, last + 1, size)]


def _log_list(result: Any) -> list[dict[str, Any]]:
    return list(result or [])


class ChainClient:
    """JSON-RPC to one node, plus cached contract codecs keyed by artifact name.

    Build it with :meth:`from_config`, so that every setting of the configuration applies;
    ``transport`` replaces the HTTP transport (a test's scripted node, for example).
    """

    def __init__(
        self,
        rpc_url: str,
        *,
        timeout: float = 30.0,
        retry_for: float = 10.0,
        transport: RpcTransport | None = None,
        gas_headroom: float = 1.2,
        tx_timeout: float = 120.0,
    ) -> None:
        self.rpc_url = rpc_url
        self.rpc = JsonRpcClient(rpc_url, timeout=timeout, retry_for=retry_for, transport=transport)
        self.gas_headroom = gas_headroom
        self.tx_timeout = tx_timeout
        self._contracts: dict[tuple[str, str], Contract] = {}
        self._chain_id: int | None = None
        #: ``(decimals, symbol)`` per checksummed ERC-20 address, as the managers read them:
        #: a token's revert that slips past their checks is worded in its units too.
        self.token_units: dict[str, Unit] = {}

    @classmethod
    def from_config(
        cls, config: SDKConfig, *, transport: RpcTransport | None = None
    ) -> ChainClient:
        """The client for ``config``: its RPC URL, timeouts, retries and transaction settings."""
        return cls(
            config.rpc_url,
            timeout=config.rpc_timeout,
            retry_for=config.rpc_retry_for,
            transport=transport,
            gas_headroom=config.gas_headroom,
            tx_timeout=config.tx_timeout,
        )

    def __repr__(self) -> str:
        return f"ChainClient({redact_url(self.rpc_url)!r})"

    def sender(self, account: LocalAccount | Signer, *, chain_id: int) -> TxSender:
        """The transaction sender of ``account`` over this client, with its settings."""
        return TxSender(
            self,
            account,
            chain_id=chain_id,
            gas_headroom=self.gas_headroom,
            tx_timeout=self.tx_timeout,
        )

    def contract(self, name: str, address: str) -> Contract:
        """The contract ``name`` (an artifact in contracts/abi) at ``address``."""
        key = (name, address)
        handle = self._contracts.get(key)
        if handle is None:
            handle = self._contracts[key] = Contract(name, address)
        return handle

    async def reads(self, *reads: Read, token_hint: str = "") -> list[Any]:
        """Run ``reads`` in one batch; a revert becomes its typed error."""
        results = await self.rpc.batch(
            [(r.method, r.params) for r in reads],
            labels=[r.label for r in reads],
            return_errors=True,
        )
        hint = self.token_hint(token_hint)
        return [_decoded(r, result, hint) for r, result in zip(reads, results, strict=True)]

    def token_hint(self, token: str) -> TokenHint:
        """``token`` with its unit when the managers read it (how its reverts are worded)."""
        unit = None
        if token:
            with contextlib.suppress(FabstirError):  # not an address: no unit
                unit = self.token_units.get(checksum_address(token, what="token"))
        return token, unit

    async def read(self, call: Call) -> Any:
        """One contract call's return value."""
        (value,) = await self.reads(Read.of(call))
        return value

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = _hex_int(await self.rpc.call("eth_chainId"))
        return self._chain_id

    async def aclose(self) -> None:
        await self.rpc.aclose()


def _nonce_taken(failure: RpcFailure) -> bool:
    message = failure.node_message.lower()
    return any(phrase in message for phrase in _NONCE_TAKEN)


#: A token's address ("" for none) and its ``(decimals, symbol)`` if known.
TokenHint = tuple[str, Unit | None]


def _decoded(read: Read, result: Any, hint: TokenHint) -> Any:
    if isinstance(result, RpcFailure):
        data = result.revert_data
        if data is not None:
            raise revert_error(data, token=hint[0], unit=hint[1])
        raise result
    return read.decode(result)


@dataclass(eq=False)
class _Waiting:
    """One send waiting for its nonce: its transaction (without the nonce), the node's
    pending nonce as read with its checks, and the future its caller awaits."""

    tx: dict[str, Any]
    what: str
    pending: int
    generation: int  # TxSender._broadcasts when ``pending`` was read
    again: bool  # already counted in flight
    done: asyncio.Future[tuple[str, int]]  # (transaction hash, nonce)
    taken: int = 0  # how often its nonce was found taken


@dataclass(frozen=True)
class _Poll:
    """One caller's receipt poll: the signings of its transaction, and its future."""

    signings: list[str]
    done: asyncio.Future[list[Any]]  # their receipts (None for each when the poll failed)


def _settle(waiting: Sequence[_Waiting], error: BaseException) -> None:
    """Fail the sends in ``waiting`` whose callers still wait."""
    for w in waiting:
        if not w.done.done():
            w.done.set_exception(error)


class TxSender:
    """Signs and sends one account's transactions: nonces, gas, fees, receipts, reverts."""

    def __init__(
        self,
        client: ChainClient,
        account: LocalAccount | Signer,
        *,
        chain_id: int,
        gas_headroom: float = 1.2,
        tx_timeout: float = 120.0,
    ) -> None:
        self._client = client
        self._signer = as_signer(account)  # the key may be in another process
        self.address: str = self._signer.address
        self._chain_id = chain_id
        self._headroom = gas_headroom
        self._timeout = tx_timeout
        self._sends = Together(self._send_batch)  # sends waiting for their nonces
        self._polls = Together(self._poll_receipts)  # receipt polls, asked in one batch
        self._next_nonce: int | None = None
        self._in_flight = 0
        self._last_nonce = -1  # the highest nonce the node took from this sender
        self._broadcasts = (
            0  # bumps on every broadcast: a prefetched nonce older than that is stale
        )
        self._tip: int | None = None

    def __repr__(self) -> str:
        return f"TxSender(address={self.address!r})"

    async def send(
        self,
        call: Call,
        *,
        value: int = 0,
        checks: Sequence[Read] = (),
        validate: Callable[[list[Any]], None] | None = None,
        token_hint: str = "",
        ready: Awaitable[Any] | None = None,
    ) -> Receipt:
        """Send ``call`` as a transaction and wait for its receipt.

        ``checks`` are read in the same batch as the gas estimate and handed to ``validate``,
        which raises to refuse the transaction; then a failed estimate (a revert) raises its
        typed error. Either way nothing is sent. ``ready``, if given, is awaited after the
        checks and before signing: what else must hold before the transaction may go (it
        raises to stop it), prepared while the checks are read.

        A transaction that ran out of gas because another one changed the state between the
        estimate and the mining (the host's proof landing before the user's completion makes
        settling pay the host too) did nothing: it is sent again with a new estimate.
        """
        for attempt in range(_OUT_OF_GAS_RETRIES + 1):
            receipt, gas = await self._send_once(call, value, checks, validate, token_hint, ready)
            if receipt["status"] == "0x1":
                log.debug(
                    "%s mined in block %s (tx %s)",
                    call.fn,
                    _hex_int(receipt["blockNumber"]),
                    tx_hash(receipt),
                )
                return receipt
            error = await self._mined_revert(call, value, receipt, token_hint, gas)
            if not isinstance(error, OutOfGasError) or attempt == _OUT_OF_GAS_RETRIES:
                raise error
            log.info("%s: %s; sending it again", call.fn, error)
        raise AssertionError("unreachable")

    async def _send_once(
        self,
        call: Call,
        value: int,
        checks: Sequence[Read],
        validate: Callable[[list[Any]], None] | None,
        token_hint: str,
        ready: Awaitable[Any] | None = None,
    ) -> tuple[Receipt, int]:
        """Check, estimate, sign, send and wait: the receipt and the gas limit given."""
        tx: dict[str, Any] = {"from": self.address, "to": call.to, "data": "0x" + call.data.hex()}
        if value:
            tx["value"] = hex(value)
        generation = self._broadcasts
        batch = [
            *[(r.method, r.params) for r in checks],
            ("eth_estimateGas", (tx,)),
            ("eth_gasPrice", ()),
            ("eth_getTransactionCount", (self.address, "pending")),
            ("eth_chainId", ()),  # re-checked: an endpoint that changed chains gets nothing
        ]
        if self._tip is None:
            batch.append(("eth_maxPriorityFeePerGas", ()))
        results = await self._client.rpc.batch(
            batch, labels=[r.label for r in checks], return_errors=True
        )
        hint = self._client.token_hint(token_hint)
        if validate is not None:
            validate([_decoded(r, v, hint) for r, v in zip(checks, results, strict=False)])
        estimate, gas_price, pending = results[len(checks) : len(checks) + 3]
        if isinstance(estimate, RpcFailure):
            data = estimate.revert_data
            if data is not None:
                raise revert_error(data, token=token_hint, unit=hint[1])
            raise estimate
        for extra in results[len(checks) + 1 :]:
            if isinstance(extra, RpcFailure):
                raise extra
        served = _hex_int(results[len(checks) + 3])
        if served != self._chain_id:
            mismatch = ChainMismatchError(self._chain_id, served)
            mismatch.add_note(f"nothing was signed for {call.fn}")
            raise mismatch
        if self._tip is None:
            self._tip = _hex_int(results[-1])
        if ready is not None:
            await ready
        # A few random units of gas limit and fee cap (neither is paid: gas used and the base
        # fee are): two processes sending the same call with the same nonce never sign the
        # same bytes, so neither can take the other's transaction for its own.
        gas_salt, fee_salt = secrets.randbelow(1 << 12), secrets.randbelow(1 << 30)
        tx.update(
            gas=int(_hex_int(estimate) * self._headroom) + gas_salt,
            # room for the base fee to double
            maxFeePerGas=2 * _hex_int(gas_price) + self._tip + fee_salt,
            maxPriorityFeePerGas=self._tip,
            chainId=self._chain_id,
            value=value,
            type=2,
        )
        del tx["from"]
        sent, nonce = await self._broadcast(tx, call.fn, _hex_int(pending), generation)
        try:
            for attempt in range(_RESIGN_LIMIT + 1):
                try:
                    receipt = await self._wait(tx, sent, nonce)
                    break
                except TransactionReplacedError:
                    # Another user of this key had a transaction mined with our nonce (a
                    # node may accept both before mining one): ours can never be mined, so
                    # it never ran. Sign it again with the node's next nonce.
                    if attempt == _RESIGN_LIMIT:
                        raise
                    log.debug("%s: tx %s lost nonce %d; signing again", call.fn, sent, nonce)
                    sent, nonce = await self._broadcast(tx, call.fn, 0, -1, again=True)
        finally:
            self._in_flight -= 1
        return receipt, int(tx["gas"])

    async def _broadcast(
        self, tx: dict[str, Any], what: str, pending: int, generation: int, *, again: bool = False
    ) -> tuple[str, int]:
        """Sign ``tx`` with the next nonce and send it; ``again``: it is already counted in
        flight (its earlier signing lost its nonce).

        The sends waiting here go out together: one task signs whatever waits with
        consecutive nonces and sends it in one batch, while the next sends gather behind it.
        A send with none before it goes at once. A caller cancelled before its turn sends
        nothing; once its batch is signed, it goes (its nonce is between others')."""
        done: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        sent: tuple[str, int] = await self._sends(
            _Waiting(tx, what, pending, generation, again, done)
        )
        return sent

    async def _send_batch(self, batch: list[_Waiting]) -> None:
        """Sign ``batch`` with consecutive nonces, send it in one request and settle each
        one's future; those whose nonce another user of the key took go again."""
        try:
            await self._send_round(batch)
        except BaseException:
            self._next_nonce = None  # cancelled or failed midway: re-read from the node
            raise

    async def _send_round(self, batch: list[_Waiting]) -> None:
        reread = False
        while batch := [w for w in batch if not w.done.done()]:  # their callers still wait
            if reread or self._in_flight == 0 or self._next_nonce is None:
                fresh = [w.pending for w in batch if w.generation == self._broadcasts]
                try:
                    node = max(fresh) if fresh and not reread else await self._pending_nonce()
                except RpcError as exc:
                    self._next_nonce = None
                    _settle(batch, exc)
                    return
                # after a refusal, not below what this batch already sent
                self._next_nonce = max(node, self._next_nonce or 0) if reread else node
            signed = await self._sign(batch, self._next_nonce)
            if not signed:
                return
            try:
                answers = await self._client.rpc.batch(
                    [("eth_sendRawTransaction", ("0x" + raw.hex(),)) for _, _, raw in signed],
                    return_errors=True,
                )
            except RpcError as exc:
                self._next_nonce = None  # they may or may not have arrived: re-read next time
                for waiting, _, raw in signed:
                    sent = "0x" + keccak(raw).hex()
                    _settle([waiting], type(exc)(f"{exc} (transaction {sent} may still be mined)"))
                return
            batch, reread = await self._sent(signed, answers), True

    async def _sign(self, batch: list[_Waiting], first: int) -> list[tuple[_Waiting, int, bytes]]:
        """Each of ``batch`` signed with the next nonce from ``first``; a signer's refusal
        goes to its caller and takes no nonce."""
        signed: list[tuple[_Waiting, int, bytes]] = []
        for waiting in batch:
            nonce = first + len(signed)
            try:
                raw = await self._signer.sign_transaction({**waiting.tx, "nonce": nonce})
            except Exception as exc:
                _settle([waiting], exc)
                continue
            signed.append((waiting, nonce, raw))
        return signed

    async def _sent(
        self, signed: list[tuple[_Waiting, int, bytes]], answers: list[Any]
    ) -> list[_Waiting]:
        """Settle each signed send by the node's answer; return those to sign again (their
        nonce was taken elsewhere). A refused nonce below an accepted one is a gap that
        would hold the later ones forever: it is filled (see :meth:`_fill`)."""
        hashes = ["0x" + keccak(raw).hex() for _, _, raw in signed]
        refused = [i for i, answer in enumerate(answers) if isinstance(answer, RpcFailure)]
        # A retried batch whose first attempt arrived is refused ("already known", "nonce
        # too low"): a hash the node has was sent once.
        known = await self._known([hashes[i] for i in refused])
        refused = [i for i, have in zip(refused, known, strict=True) if not have]
        accepted = [i for i in range(len(signed)) if i not in refused]
        again: list[_Waiting] = []
        gaps: list[tuple[int, dict[str, Any]]] = []
        top = max((signed[i][1] for i in accepted), default=None)
        for i in refused:
            waiting, nonce, _ = signed[i]
            failure = answers[i]
            if _nonce_taken(failure) and waiting.taken < _RESIGN_LIMIT:
                # Another user of this key took the nonce: ours never entered the mempool,
                # so signing it again with the node's next nonce is safe.
                log.debug("%s: nonce %d taken elsewhere, signing again", waiting.what, nonce)
                waiting.taken += 1
                again.append(waiting)
                continue
            _settle([waiting], failure)
            if top is not None and nonce < top and not _nonce_taken(failure):
                gaps.append((nonce, waiting.tx))
        if top is None:
            if not again:
                self._next_nonce = None  # re-read from the node next time
            return again
        self._next_nonce = top + 1
        self._last_nonce = max(self._last_nonce, top)
        self._broadcasts += 1
        for i in accepted:
            waiting, nonce, _ = signed[i]
            if waiting.done.done():  # its caller left: sent, but nobody waits for it
                continue
            if not waiting.again:
                self._in_flight += 1
            waiting.done.set_result((hashes[i], nonce))
        if gaps:
            await self._fill(gaps)
        return again

    async def _fill(self, gaps: list[tuple[int, dict[str, Any]]]) -> None:
        """Fill refused nonces below accepted ones with a transfer of nothing to this
        account (21,000 gas, the refused one's fees): the accepted ones keep their nonces
        and are mined once. Signing them again with the gap's nonce could run them twice,
        since the node already holds them."""
        calls = []
        for nonce, tx in gaps:
            filler = {
                "to": self.address,
                "value": 0,
                "data": "0x",
                "gas": 21_000,
                "maxFeePerGas": tx["maxFeePerGas"],
                "maxPriorityFeePerGas": tx["maxPriorityFeePerGas"],
                "chainId": self._chain_id,
                "type": 2,
                "nonce": nonce,
            }
            raw = await self._signer.sign_transaction(filler)
            calls.append(("eth_sendRawTransaction", ("0x" + raw.hex(),)))
            log.info("nonce %d refused between sent ones: filled with a transfer of 0", nonce)
        try:
            answers = await self._client.rpc.batch(calls, return_errors=True)
        except RpcError as exc:
            log.warning("filling refused nonces failed (%s): later transactions may wait", exc)
            self._next_nonce = None
            return
        for (nonce, _), answer in zip(gaps, answers, strict=True):
            if isinstance(answer, RpcFailure) and not _nonce_taken(answer):
                log.warning("nonce %d could not be filled: %s", nonce, answer.node_message)
                self._next_nonce = None

    async def _pending_nonce(self) -> int:
        return _hex_int(
            await self._client.rpc.call("eth_getTransactionCount", self.address, "pending")
        )

    async def _known(self, hashes: list[str]) -> list[bool]:
        """Whether the node has each of ``hashes`` (False when it cannot be asked)."""
        if not hashes:
            return []
        try:
            found = await self._client.rpc.batch(
                [("eth_getTransactionByHash", (h,)) for h in hashes], return_errors=True
            )
        except RpcError:
            return [False] * len(hashes)
        return [bool(f) and not isinstance(f, RpcFailure) for f in found]

    async def _wait(self, tx: dict[str, Any], sent: str, nonce: int) -> Receipt:
        """Poll for the receipt; from time to time make sure the node still knows the
        transaction (dropped from the mempool, or replaced by another with its nonce), and
        replace it with higher fees if the base fee rose above its cap."""
        started = time.monotonic()
        deadline = started + self._timeout
        next_look = started + _FATE_AFTER
        delay = 0.001
        signings = [sent]  # the same transaction, one signing per fee level: any may be mined
        while True:
            receipt = await self._receipt(signings)
            if receipt:
                return receipt
            now = time.monotonic()
            if now >= deadline:
                raise TransactionTimeoutError(signings[-1], self._timeout)
            if now >= next_look:
                next_look = now + _FATE_EVERY
                lost, base_fee = await self._fate(signings, nonce)
                # Pending, or dropped for its cap (anvil evicts it when a block's base fee
                # is above it, and the base fee may be back under it by now): either way
                # its nonce is unused, so signing it again with that nonce can never run it
                # twice. Dropped with later transactions of ours behind it (a batch's burst
                # of full blocks raised the base fee), its nonce must be filled or they
                # wait forever: it is sent again, not reported.
                behind = isinstance(lost, TransactionDroppedError) and self._last_nonce > nonce
                if (
                    (base_fee > int(tx["maxFeePerGas"]) or behind)
                    and len(signings) <= _REPRICE_LIMIT
                    and not isinstance(lost, TransactionReplacedError)
                ):
                    signings.append(await self._reprice(tx, nonce, base_fee))
                    continue
                if lost is not None:
                    self._next_nonce = None  # resynchronise from the node before the next tx
                    raise lost
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _receipt(self, signings: list[str]) -> Receipt | None:
        """The receipt of whichever signing was mined, or None. Asked with every other
        caller's poll waiting at the time, in one batch."""
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        found: list[Any] = await self._polls(_Poll(list(signings), done))
        for sent, receipt in zip(signings, found, strict=True):
            if receipt:
                if str(receipt.get("transactionHash", "")).lower() != sent.lower():
                    raise RpcError(
                        f"the RPC endpoint answered the receipt poll for {sent} with another "
                        f"transaction's receipt (transaction {sent} may still be mined)"
                    )
                return dict(receipt)
        return None

    async def _poll_receipts(self, polls: list[_Poll]) -> None:
        """One batch asking for the receipts of every poll in ``polls``."""
        hashes = [h for poll in polls for h in poll.signings]
        try:
            found = await self._client.rpc.batch(
                [("eth_getTransactionReceipt", (h,)) for h in hashes], return_errors=True
            )
        except RpcError as exc:  # transport trouble: they keep polling until their deadlines
            log.debug("receipt poll for %d transactions failed, retrying: %s", len(hashes), exc)
            found = [None] * len(hashes)
        for poll in polls:
            mine, found = found[: len(poll.signings)], found[len(poll.signings) :]
            if poll.done.done():
                continue
            failure = next((f for f in mine if isinstance(f, RpcFailure)), None)
            if failure is not None:
                poll.done.set_exception(failure)
            else:
                poll.done.set_result(mine)

    async def _reprice(self, tx: dict[str, Any], nonce: int, base_fee: int) -> str:
        """Sign ``tx`` again with its nonce and fees above both the base fee and the
        replacement minimum (each fee field at least 12.5% up, as geth and anvil demand)."""
        old_cap, old_tip = int(tx["maxFeePerGas"]), int(tx["maxPriorityFeePerGas"])
        tip = -(-old_tip * 9 // 8)
        tx["maxPriorityFeePerGas"] = tip
        # salted as in _send_once: two processes never sign the same replacement
        salt = secrets.randbelow(1 << 30)
        tx["maxFeePerGas"] = max(2 * base_fee + tip, -(-old_cap * 9 // 8)) + salt
        raw = await self._signer.sign_transaction({**tx, "nonce": nonce})
        sent = "0x" + keccak(raw).hex()
        log.info(
            "tx with nonce %d: base fee %d above its fee cap %d; signed again as %s (cap %d)",
            nonce,
            base_fee,
            old_cap,
            sent,
            tx["maxFeePerGas"],
        )
        try:
            await self._client.rpc.call("eth_sendRawTransaction", "0x" + raw.hex())
        except RpcFailure as exc:
            # The earlier signing may have been mined meanwhile ("nonce too low"): the
            # receipt loop finds it; otherwise the fate checks go on.
            log.info("replacement %s refused: %s", sent, exc.node_message)
        except RpcError as exc:
            log.debug("replacement %s may not have arrived: %s", sent, exc)
        return sent

    async def _fate(self, signings: list[str], nonce: int) -> tuple[FabstirError | None, int]:
        """The error for a transaction the node no longer has (None if it still has one of
        its signings, or one was mined after all: the receipt loop picks it up), and the
        latest block's base fee (0 if unknown)."""
        try:
            *known, mined, block = await self._client.rpc.batch(
                [
                    *[("eth_getTransactionByHash", (h,)) for h in signings],
                    *[("eth_getTransactionReceipt", (h,)) for h in signings],
                    ("eth_getTransactionCount", (self.address, "latest")),
                    ("eth_getBlockByNumber", ("latest", False)),
                ]
            )
        except RpcError:
            return None, 0  # cannot tell now; the receipt loop goes on
        base_fee = _hex_int(block.get("baseFeePerGas") or "0x0") if block else 0
        if any(known):
            return None, base_fee
        if _hex_int(mined) > nonce:
            return TransactionReplacedError(signings[-1], nonce), base_fee
        return TransactionDroppedError(signings[-1], nonce), base_fee

    async def _mined_revert(
        self, call: Call, value: int, receipt: Receipt, token_hint: str, gas: int
    ) -> FabstirError:
        """Why a mined transaction reverted: estimate it again in its block's state, which
        fails with the contract's reason, or says it needs more gas than it had."""
        mined = tx_hash(receipt)
        replay = {"from": self.address, "to": call.to, "data": "0x" + call.data.hex()}
        if value:
            replay["value"] = hex(value)
        try:
            needed = await self._client.rpc.call("eth_estimateGas", replay, receipt["blockNumber"])
        except RpcFailure as exc:
            data = exc.revert_data
            if data is not None:
                unit = self._client.token_hint(token_hint)[1]
                return revert_error(data, tx_hash=mined, token=token_hint, unit=unit)
            return ChainError(f"transaction {mined} reverted ({exc})")
        if _hex_int(needed) > gas:
            return OutOfGasError(mined, gas_limit=gas, needed=_hex_int(needed))
        return ChainError(
            f"transaction {mined} reverted without a reason, though the call succeeds with "
            f"{gas} gas at the end of its block (a transaction before it in that block?)"
        )
