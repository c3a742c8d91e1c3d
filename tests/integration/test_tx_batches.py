"""Sends from one account that wait together go to anvil in one JSON-RPC batch with
consecutive nonces: all mined, every wei accounted for; one refused in the middle fails
alone, its nonce is filled and the account's next send goes through."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from fabstir_sdk import FabstirSDK, RpcFailure
from fabstir_sdk.chain.client import TxSender
from fabstir_sdk.chain.rpc import JsonRpcClient
from tests.unit.test_tx_sender import queued

from .conftest import USER, nonce
from .rpc_proxy import RpcProxy

ETH = 10**18


async def batch_behind_one(
    proxy: RpcProxy, txs: TxSender, call: Any, values: list[int], before_batch: Any = None
) -> list[Any]:
    """A send of 1 wei held at the proxy while sends of ``values`` queue behind it; then
    ``before_batch()`` and the proxy lets them through: every outcome, in order."""
    gate = proxy.gate("eth_sendRawTransaction")
    first = asyncio.ensure_future(txs.send(call, value=1))
    await gate.arrived.wait()
    waiting = [await queued(txs, value, call) for value in values]
    if before_batch is not None:
        await before_batch()
    gate.opened.set()
    return await asyncio.gather(first, *waiting, return_exceptions=True)


async def sent_by(rpc: JsonRpcClient, address: str, first_block: int) -> list[dict[str, Any]]:
    """Every transaction ``address`` sent from ``first_block`` on, with its receipt's gas."""
    latest = int(await rpc.call("eth_blockNumber"), 16)
    blocks = await rpc.batch(
        [("eth_getBlockByNumber", (hex(n), True)) for n in range(first_block, latest + 1)]
    )
    txs = [tx for block in blocks for tx in block["transactions"] if tx["from"] == address.lower()]
    receipts = await rpc.batch([("eth_getTransactionReceipt", (tx["hash"],)) for tx in txs])
    for tx, receipt in zip(txs, receipts, strict=True):
        tx["fee"] = int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
        tx["status"] = receipt["status"]
    return txs


@dataclass
class Wired:
    """The user's SDK over a proxy (to hold and count requests), its sender and deposit
    call, a plain RPC client, the account's first nonce and the first block to come."""

    sdk: FabstirSDK
    proxy: RpcProxy
    rpc: JsonRpcClient
    txs: TxSender
    deposit: Any
    address: str
    start: int
    first_block: int


@pytest.fixture
async def wired(devnet):
    proxy = await RpcProxy(devnet.rpc_url).start()
    rpc = JsonRpcClient(devnet.rpc_url)
    sdk = FabstirSDK(devnet.sdk_config(rpc_url=proxy.url))
    try:
        await sdk.authenticate(devnet.accounts[USER].private_key)
        yield Wired(
            sdk,
            proxy,
            rpc,
            sdk._ctx.require_sender(),
            sdk._ctx.contract("job_marketplace").call("depositNative"),
            devnet.accounts[USER].address,
            await nonce(devnet, USER),
            int(await rpc.call("eth_blockNumber"), 16) + 1,
        )
    finally:
        await sdk.aclose()
        await rpc.aclose()
        await proxy.stop()


async def test_sends_waiting_together_are_one_batch_mined_with_consecutive_nonces(devnet, wired):
    w = wired
    sdk, proxy, rpc, txs, deposit = w.sdk, w.proxy, w.rpc, w.txs, w.deposit
    address, start, first_block = w.address, w.start, w.first_block
    balance = int(await rpc.call("eth_getBalance", address, "latest"), 16)
    values = [10**12 * k for k in range(2, 8)]

    receipts = await batch_behind_one(proxy, txs, deposit, values)

    sends = [r.count("eth_sendRawTransaction") for r in proxy.requests]
    assert [n for n in sends if n] == [1, 6]  # the first at once, the six waiting together
    mined = await sent_by(rpc, address, first_block)
    assert [tx["nonce"] for tx in mined] == [hex(n) for n in range(start, start + 7)]
    assert [int(tx["value"], 16) for tx in mined] == [1, *values]  # in the order they came
    assert [tx["hash"] for tx in mined] == [r["transactionHash"] for r in receipts]
    assert all(tx["status"] == "0x1" for tx in mined)
    after = int(await rpc.call("eth_getBalance", address, "latest"), 16)
    assert after == balance - 1 - sum(values) - sum(tx["fee"] for tx in mined)
    assert await sdk.get_payment_manager().get_deposit_balance() == 1 + sum(values)


async def test_a_send_refused_in_the_middle_of_a_batch_fails_alone(devnet, wired):
    """The account's balance drops to 1 ETH after the checks: anvil refuses the middle send
    (2 ETH) for insufficient funds. Its caller gets RpcFailure; the sends around it are
    mined; its nonce holds a 0-wei transfer to the account itself (the later send waited
    behind that gap); the next deposit takes the next nonce. Every wei is accounted for."""
    w = wired
    sdk, proxy, rpc, txs, deposit = w.sdk, w.proxy, w.rpc, w.txs, w.deposit
    address, start, first_block = w.address, w.start, w.first_block

    async def drain() -> None:
        await rpc.call("anvil_setBalance", address, hex(ETH))

    first, one, refused, three = await batch_behind_one(
        proxy, txs, deposit, [10**12, 2 * ETH, 3 * 10**12], before_batch=drain
    )
    assert isinstance(refused, RpcFailure) and refused.what == "eth_sendRawTransaction"
    assert "insufficient funds" in refused.node_message.lower()
    pm = sdk.get_payment_manager()
    await pm.deposit("0.000004")  # the next send: the nonce cache is right
    mined = await sent_by(rpc, address, first_block)
    assert [int(tx["nonce"], 16) for tx in mined] == list(range(start, start + 5))
    assert [(tx["to"], int(tx["value"], 16)) for tx in mined] == [
        (deposit.to.lower(), 1),
        (deposit.to.lower(), 10**12),
        (address.lower(), 0),  # the filler, at the refused send's nonce
        (deposit.to.lower(), 3 * 10**12),
        (deposit.to.lower(), 4 * 10**12),
    ]
    assert [tx["hash"] for tx in (mined[0], mined[1], mined[3])] == [
        r["transactionHash"] for r in (first, one, three)
    ]
    assert all(tx["status"] == "0x1" for tx in mined)
    after = int(await rpc.call("eth_getBalance", address, "latest"), 16)
    assert after == ETH - 1 - 8 * 10**12 - sum(tx["fee"] for tx in mined)
    assert await pm.get_deposit_balance() == 1 + 8 * 10**12
