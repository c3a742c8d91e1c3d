"""The devnet deployer against anvil's pool losing track of a burst (foundry-rs/foundry#10122).

CI once saw ``2 deployment transactions unmined after 60 s``: anvil had filed two of a
burst as not executable although their nonces were next, and no block took them. Here the
same state is made on purpose: the first transaction of a burst is dropped from the pool
right after the burst is sent, so the rest wait behind a nonce gap that never fills.
"""

from __future__ import annotations

from typing import Any

import pytest

from fabstir_sdk.chain.rpc import JsonRpcClient
from fabstir_sdk.devnet._anvil import AnvilProcess
from fabstir_sdk.devnet._deploy import _Sender, _Tx
from fabstir_sdk.devnet._hosts import host_account

pytestmark = pytest.mark.integration


class DropsTheFirstOfABurst:
    """The JSON-RPC client, but the first burst's first transaction leaves anvil's pool."""

    def __init__(self, rpc: JsonRpcClient) -> None:
        self.rpc = rpc
        self.dropped: str | None = None

    async def batch(self, calls: Any, **kwargs: Any) -> list[Any]:
        results = await self.rpc.batch(calls, **kwargs)
        sends = [method for method, _ in calls if method == "eth_sendRawTransaction"]
        if self.dropped is None and len(sends) == len(calls) > 1:
            self.dropped = results[0]
            assert await self.rpc.call("anvil_dropTransaction", self.dropped) == self.dropped
        return results

    async def call(self, method: str, *params: Any) -> Any:
        (result,) = await self.batch([(method, params)])
        return result


async def test_a_burst_stuck_behind_a_lost_transaction_is_sent_again(tmp_path):
    # a block only when the deployer asks (evm_mine): the burst sits in the pool meanwhile
    anvil = await AnvilProcess.start(log_path=tmp_path / "anvil.log", block_time=3600)
    rpc = JsonRpcClient(anvil.rpc_url)
    try:
        deployer = host_account(515151)
        await rpc.call("anvil_setBalance", deployer.address, hex(10**20))
        proxy = DropsTheFirstOfABurst(rpc)
        sender = _Sender(proxy, deployer, 31337)  # type: ignore[arg-type]
        await sender.prepare()
        payees = [host_account(515152 + i).address for i in range(3)]
        txs = [_Tx(f"pay {i}", payee, b"") for i, payee in enumerate(payees)]

        receipts = await sender.run(txs, estimate=True, within=300)  # only against a hang

        assert proxy.dropped is not None and receipts[0]["transactionHash"] == proxy.dropped
        assert [int(r["status"], 16) for r in receipts] == [1, 1, 1]
        nonces = [
            int((await rpc.call("eth_getTransactionByHash", r["transactionHash"]))["nonce"], 16)
            for r in receipts
        ]
        assert nonces == [0, 1, 2]  # each signed transaction once, none re-signed
        assert int(await rpc.call("eth_getTransactionCount", deployer.address, "latest"), 16) == 3
    finally:
        await rpc.aclose()
        await anvil.stop()
