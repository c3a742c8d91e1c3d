"""Register many hosts on a devnet at once, for discovery tests and benchmarks.

The devnet funds ten accounts; a registry of 50 or 100 hosts needs more. Each extra host is a
key derived from its index (public knowledge: devnet only), given ETH with
``anvil_setBalance``, minted the FAB minimum stake by the deployer, and registered with
``approve`` + ``registerNode`` signed locally. Every phase goes out as one JSON-RPC batch.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from eth_utils.crypto import keccak

from ..chain.abi import Contract
from ..chain.model_id import model_id
from ..chain.rpc import JsonRpcClient
from ._accounts import DevAccount
from ._deploy import _call, _Sender

if TYPE_CHECKING:
    from ._net import Devnet

__all__ = ["host_account", "register_hosts"]

_ETH_PER_HOST = 10 * 10**18
_REGISTER_GAS = 3_000_000


def host_account(index: int) -> DevAccount:
    """The ``index``-th extra host key (deterministic; devnet only)."""
    from eth_account import Account

    key = keccak(b"fabstir devnet extra host " + index.to_bytes(4, "big"))
    return DevAccount(Account.from_key(key).address, "0x" + key.hex())


async def register_hosts(
    net: Devnet,
    count: int,
    *,
    api_url: Callable[[int], str],
    models: Sequence[str] | None = None,
    price_native: Callable[[int], int] | int = 10**12,
    price_stable: Callable[[int], int] | int = 2000,
    metadata: Callable[[int], dict[str, Any]] | None = None,
    first: int = 0,
) -> list[DevAccount]:
    """Register hosts ``first .. first+count-1``; returns their accounts.

    ``api_url(i)``, ``price_*(i)`` and ``metadata(i)`` give each host its entry; ``models``
    defaults to every devnet model.
    """
    from eth_account import Account

    hosts = [host_account(first + i) for i in range(count)]
    addresses = net.addresses
    ids = [model_id(m) for m in (models or net.models)]
    rpc = JsonRpcClient(net.rpc_url)
    try:
        await rpc.batch([("anvil_setBalance", (h.address, hex(_ETH_PER_HOST))) for h in hosts])
        fab = Contract("FABToken", addresses.fab_token)
        nr = Contract("NodeRegistry", addresses.node_registry)
        min_stake = nr.call("MIN_STAKE")
        result = await rpc.call(
            "eth_call", {"to": min_stake.to, "data": "0x" + min_stake.data.hex()}, "latest"
        )
        stake = int(min_stake.decode(bytes.fromhex(result[2:])))
        deployer = _Sender(rpc, net.accounts[0], net.chain_id)
        await deployer.prepare()
        await deployer.run(
            [_call("FABToken", fab.address, "mint", h.address, stake) for h in hosts],
            estimate=False,
            within=60.0,
        )
        raw: list[str] = []
        for i, host in enumerate(hosts):
            account = Account.from_key(host.private_key)
            n = first + i
            entry = metadata(n) if metadata else {}
            meta = json.dumps(entry, separators=(",", ":"), sort_keys=True)
            native = price_native(n) if callable(price_native) else price_native
            stable = price_stable(n) if callable(price_stable) else price_stable
            calls = [
                fab.call("approve", nr.address, stake),
                nr.call("registerNode", meta, api_url(n), ids, native, stable),
            ]
            for nonce, call in enumerate(calls):
                signed = account.sign_transaction(
                    {
                        "to": call.to,
                        "data": "0x" + call.data.hex(),
                        "value": 0,
                        "gas": _REGISTER_GAS,
                        "gasPrice": deployer.gas_price,
                        "nonce": nonce,
                        "chainId": net.chain_id,
                    }
                )
                raw.append("0x" + bytes(signed.raw_transaction).hex())
        hashes = await rpc.batch([("eth_sendRawTransaction", (r,)) for r in raw])
        await _mined(rpc, hashes)
    finally:
        await rpc.aclose()
    return hosts


async def _mined(rpc: JsonRpcClient, hashes: list[str]) -> None:
    from ..errors import DevnetError

    for _ in range(600):
        receipts = await rpc.batch([("eth_getTransactionReceipt", (h,)) for h in hashes])
        if all(receipts):
            failed = [r for r in receipts if int(r["status"], 16) != 1]
            if failed:
                raise DevnetError(f"{len(failed)} host registration transactions reverted")
            return
        await asyncio.sleep(0.01)
        await rpc.call("evm_mine")
    raise DevnetError("host registrations were not mined")
