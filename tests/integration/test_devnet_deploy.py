"""The devnet deployer and anvil's automine (foundry-rs/foundry#10122).

CI saw "2 deployment transactions unmined after 60 s" and, once more, "20 ... unmined":
anvil had filed the last transactions of a burst as queued although their nonces were next
(``txpool_inspect``: queued 33 and 34 with the account's nonce at 33), and no block, nor
``evm_mine``, ever took them. It happens when a transaction reaches the pool while automine
is building a block. So the deployer pauses automine, sends each burst whole, mines it, and
turns automine back on; this test checks each of those, on the wire.
"""

from __future__ import annotations

from typing import Any

import pytest

from fabstir_sdk.chain.rpc import JsonRpcClient
from fabstir_sdk.devnet._anvil import AnvilProcess
from fabstir_sdk.devnet._deploy import DEVNET_MODELS, deploy
from fabstir_sdk.devnet._hosts import host_account

pytestmark = pytest.mark.integration


class Recorder:
    """The JSON-RPC client, noting anvil's automine setting whenever a burst is sent."""

    def __init__(self, rpc: JsonRpcClient) -> None:
        self.rpc = rpc
        self.automine_at_sends: list[bool] = []
        self.methods: list[str] = []

    async def batch(self, calls: Any, **kwargs: Any) -> list[Any]:
        self.methods += [method for method, _ in calls]
        if any(method == "eth_sendRawTransaction" for method, _ in calls):
            self.automine_at_sends.append(await self.rpc.call("anvil_getAutomine"))
        return await self.rpc.batch(calls, **kwargs)

    async def call(self, method: str, *params: Any) -> Any:
        (result,) = await self.batch([(method, params)])
        return result


async def test_bursts_are_sent_with_automine_paused_and_it_is_turned_back_on(tmp_path):
    anvil = await AnvilProcess.start(log_path=tmp_path / "anvil.log")
    rpc = JsonRpcClient(anvil.rpc_url)
    try:
        deployer = host_account(515151)
        await rpc.call("anvil_setBalance", deployer.address, hex(10**20))
        recorder = Recorder(rpc)
        payees = [host_account(515152 + i).address for i in range(3)]

        deployment = await deploy(recorder, deployer, payees, chain_id=31337, models=DEVNET_MODELS)  # type: ignore[arg-type]

        assert recorder.automine_at_sends == [False, False]  # two bursts, neither while mining
        assert "evm_mine" in recorder.methods
        assert await rpc.call("anvil_getAutomine") is True  # the devnet mines each tx again
        sent = int(await rpc.call("eth_getTransactionCount", deployer.address, "latest"), 16)
        assert sent == deployment.transactions
        status = await rpc.call("txpool_status")
        assert status == {"pending": "0x0", "queued": "0x0"}
    finally:
        await rpc.aclose()
        await anvil.stop()
