"""What the devnet's accounts hold, read from the chain in one batch (not assumed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..chain.abi import Contract
from ..chain.rpc import JsonRpcClient
from ..config import ContractAddresses

__all__ = ["AccountBalances", "account_balances", "eth_call"]


@dataclass(frozen=True, slots=True)
class AccountBalances:
    """One account's ETH (wei), USDC and FAB, in base units."""

    eth: int
    usdc: int
    fab: int


def eth_call(contract: Contract, fn: str, *args: Any) -> tuple[str, tuple[Any, ...]]:
    """An ``eth_call`` of ``contract.fn(*args)`` at the latest block, for a batch."""
    call = contract.call(fn, *args)
    return "eth_call", ({"to": call.to, "data": "0x" + call.data.hex()}, "latest")


def uint(result: object) -> int:
    """A uint256 from a JSON-RPC answer (``"0x"``: 0)."""
    return int(result, 16) if isinstance(result, str) and result not in ("0x", "") else 0


async def account_balances(
    rpc: JsonRpcClient, addresses: ContractAddresses, accounts: Sequence[str]
) -> list[AccountBalances]:
    """ETH, USDC and FAB of each of ``accounts``, in one JSON-RPC batch."""
    usdc = Contract("TestUSDC", addresses.usdc_token)  # any ERC-20 ABI: balanceOf
    fab = Contract("TestUSDC", addresses.fab_token)
    calls = []
    for account in accounts:
        calls += [
            ("eth_getBalance", (account, "latest")),
            eth_call(usdc, "balanceOf", account),
            eth_call(fab, "balanceOf", account),
        ]
    values = [uint(v) for v in await rpc.batch(calls)]
    return [AccountBalances(*values[i : i + 3]) for i in range(0, len(values), 3)]
