"""One connection to the chain: contract handles, reads, and the single write path.

Writes go through :class:`TxSender`, which owns the account's nonces. Nonces are handed out
and broadcast under one lock, so concurrent writes from one account never clash, and a
broadcast that fails gives its nonce back. When nothing is in flight the allocator re-reads
the pending nonce from the node, so transactions sent elsewhere with the same key (or an
``evm_revert`` on a devnet) cannot leave it stale.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from aiohttp import ClientError
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.contract import AsyncContract
from web3.contract.async_contract import AsyncContractFunction
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError
from web3.types import TxParams, TxReceipt

from ..errors import ChainError, FabstirError, RpcError, TransactionTimeoutError
from .artifacts import load_abi
from .revert import revert_error

__all__ = ["ChainClient", "TxSender", "tx_hash"]

log = logging.getLogger("fabstir_sdk.chain")
T = TypeVar("T")


def tx_hash(receipt: TxReceipt) -> str:
    """The 0x-hex hash of the transaction behind ``receipt``."""
    return "0x" + bytes(receipt["transactionHash"]).hex()


def _revert_data(exc: ContractLogicError) -> bytes:
    data = exc.data
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    return b""


class ChainClient:
    """An AsyncWeb3 connection plus cached contract handles, keyed by artifact name."""

    def __init__(self, rpc_url: str, *, timeout: float = 30.0) -> None:
        self.rpc_url = rpc_url
        self.w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
        self._contracts: dict[tuple[str, str], AsyncContract] = {}
        self._chain_id: int | None = None

    def contract(self, name: str, address: str) -> AsyncContract:
        """The contract ``name`` (an artifact in contracts/abi) at ``address``."""
        key = (name, address)
        handle = self._contracts.get(key)
        if handle is None:
            handle = self.w3.eth.contract(address=address, abi=load_abi(name))  # type: ignore[call-overload]
            self._contracts[key] = handle
        return handle

    async def rpc(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run one RPC operation, turning transport failures into :class:`RpcError`."""
        try:
            return await op()
        except FabstirError:
            raise
        except ContractLogicError as exc:
            raise revert_error(_revert_data(exc)) from None
        except (TimeoutError, ClientError, OSError, Web3RPCError) as exc:
            raise RpcError(f"{what} failed on {self.rpc_url}: {exc}") from exc

    async def call(self, fn: AsyncContractFunction) -> Any:
        """A read-only contract call; reverts become typed errors."""
        return await self.rpc(fn.fn_name, fn.call)

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = await self.rpc("eth_chainId", lambda: self.w3.eth.chain_id)
        return self._chain_id

    async def aclose(self) -> None:
        await self.w3.provider.disconnect()


class TxSender:
    """Signs and sends one account's transactions: nonces, gas, fees, receipts, reverts."""

    def __init__(
        self,
        client: ChainClient,
        account: LocalAccount,
        *,
        chain_id: int,
        gas_headroom: float = 1.2,
        tx_timeout: float = 120.0,
    ) -> None:
        self._client = client
        self._account = account
        self.address: str = account.address
        self._checksum = to_checksum_address(account.address)
        self._chain_id = chain_id
        self._headroom = gas_headroom
        self._timeout = tx_timeout
        self._lock = asyncio.Lock()
        self._next_nonce: int | None = None
        self._in_flight = 0
        self._tip: int | None = None

    def __repr__(self) -> str:
        return f"TxSender(address={self.address!r})"

    async def send(
        self, fn: AsyncContractFunction, *, value: int = 0, token_hint: str = ""
    ) -> TxReceipt:
        """Send a contract call as a transaction and wait for its receipt.

        The call is simulated first (eth_estimateGas), so a revert is raised as a typed
        error and no transaction is sent.
        """
        tx: dict[str, Any] = {
            "from": self.address,
            "to": fn.address,
            "data": HexBytes(fn._encode_transaction_data()),
            "value": value,
            "chainId": self._chain_id,
        }
        return await self.transact(tx, what=fn.fn_name, token_hint=token_hint)

    async def transact(self, tx: dict[str, Any], *, what: str, token_hint: str = "") -> TxReceipt:
        gas, (max_fee, tip) = await asyncio.gather(self._estimate(tx, token_hint), self._fees())
        tx = {
            **tx,
            "gas": gas,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
            "type": 2,
        }
        tx_hash = await self._broadcast(tx, what)
        try:
            receipt = await self._wait(tx_hash)
        finally:
            self._in_flight -= 1
        if receipt["status"] != 1:
            raise await self._mined_revert(tx, receipt, token_hint)
        log.debug("%s mined in block %s (tx %s)", what, receipt["blockNumber"], tx_hash)
        return receipt

    async def _estimate(self, tx: dict[str, Any], token_hint: str) -> int:
        w3 = self._client.w3
        try:
            estimate = await w3.eth.estimate_gas(cast(TxParams, tx))
        except ContractLogicError as exc:
            raise revert_error(_revert_data(exc), token=token_hint) from None
        except (TimeoutError, ClientError, OSError, Web3RPCError) as exc:
            raise RpcError(f"eth_estimateGas failed: {exc}") from exc
        return int(estimate * self._headroom)

    async def _fees(self) -> tuple[int, int]:
        w3 = self._client.w3
        if self._tip is None:
            self._tip = await self._client.rpc(
                "eth_maxPriorityFeePerGas", lambda: w3.eth.max_priority_fee
            )
        gas_price = await self._client.rpc("eth_gasPrice", lambda: w3.eth.gas_price)
        # Room for the base fee to double before the transaction is priced out.
        return 2 * gas_price + self._tip, self._tip

    async def _broadcast(self, tx: dict[str, Any], what: str) -> str:
        w3 = self._client.w3
        async with self._lock:
            if self._in_flight == 0 or self._next_nonce is None:
                self._next_nonce = await self._client.rpc(
                    "eth_getTransactionCount",
                    lambda: w3.eth.get_transaction_count(self._checksum, "pending"),
                )
            nonce: int = self._next_nonce
            signed = self._account.sign_transaction({**tx, "nonce": nonce})
            try:
                raw_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
            except (TimeoutError, ClientError, OSError, Web3RPCError) as exc:
                self._next_nonce = None  # re-read from the node next time
                raise RpcError(f"sending {what} failed: {exc}") from exc
            self._next_nonce = nonce + 1
            self._in_flight += 1
        return "0x" + bytes(raw_hash).hex()

    async def _wait(self, tx_hash: str) -> TxReceipt:
        w3 = self._client.w3
        deadline = time.monotonic() + self._timeout
        delay = 0.002
        while True:
            try:
                return await w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                pass
            except (TimeoutError, ClientError, OSError) as exc:
                log.debug("receipt poll for %s failed, retrying: %s", tx_hash, exc)
            if time.monotonic() >= deadline:
                raise TransactionTimeoutError(tx_hash, self._timeout)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _mined_revert(
        self, tx: dict[str, Any], receipt: TxReceipt, token_hint: str
    ) -> FabstirError:
        """Replay a reverted transaction at its block to learn why it failed."""
        mined = tx_hash(receipt)
        call = {k: v for k, v in tx.items() if k in ("from", "to", "data", "value")}
        try:
            await self._client.w3.eth.call(cast(TxParams, call), receipt["blockNumber"])
        except ContractLogicError as exc:
            return revert_error(_revert_data(exc), tx_hash=mined, token=token_hint)
        except Exception as exc:  # the replay itself failed; report what we know
            return ChainError(f"transaction {mined} reverted ({exc})")
        return ChainError(f"transaction {mined} reverted (out of gas?)")
