"""RPC endpoint down or losing answers: reads retried, writes never sent twice, bounded time."""

from __future__ import annotations

import asyncio
import time

import pytest

from fabstir_sdk import FabstirSDK, RpcUnavailableError
from fabstir_sdk.devnet import Devnet

from .conftest import USER, nonce
from .rpc_proxy import RpcProxy


@pytest.fixture
async def proxy(devnet):
    p = await RpcProxy(devnet.rpc_url).start()
    yield p
    await p.stop()


async def test_reads_survive_an_outage(devnet, proxy):
    async with FabstirSDK(devnet.sdk_config(rpc_url=proxy.url)) as sdk:
        await sdk.authenticate(devnet.accounts[USER].private_key)
        pm = sdk.get_payment_manager()
        expected = await pm.get_eth_balance()
        await proxy.down()
        started = time.monotonic()  # before the timer: a late start cannot shorten the wait
        asyncio.get_running_loop().call_later(0.6, lambda: asyncio.ensure_future(proxy.up()))
        assert await pm.get_eth_balance() == expected
        assert time.monotonic() - started >= 0.5  # it really waited for the endpoint


async def test_outage_beyond_the_retry_window_is_a_typed_error(devnet, proxy):
    config = devnet.sdk_config(rpc_url=proxy.url, rpc_retry_for=0.5)
    async with FabstirSDK(config) as sdk:
        await sdk.authenticate(devnet.accounts[USER].private_key)
        await proxy.down()
        started = time.monotonic()
        with pytest.raises(RpcUnavailableError):
            await sdk.get_payment_manager().get_eth_balance()
        assert time.monotonic() - started < 10  # bounded by the 0.5 s window, not hung


async def test_lost_answer_to_a_send_does_not_send_twice(devnet, proxy):
    async with FabstirSDK(devnet.sdk_config(rpc_url=proxy.url)) as sdk:
        await sdk.authenticate(devnet.accounts[USER].private_key)
        pm = sdk.get_payment_manager()
        before_nonce = await nonce(devnet, USER)
        proxy.lose_answer_to("eth_sendRawTransaction")
        await pm.deposit("0.001")
        assert proxy.seen["eth_sendRawTransaction"] == 2  # the same signed bytes, resent
        assert await nonce(devnet, USER) == before_nonce + 1  # mined exactly once
        assert await pm.get_deposit_balance() == 10**15
        await pm.deposit("0.002")  # the allocator is still in step
        assert await pm.get_deposit_balance() == 3 * 10**15
        assert await nonce(devnet, USER) == before_nonce + 2


async def test_lost_receipt_answer_is_recovered(devnet, proxy):
    async with FabstirSDK(devnet.sdk_config(rpc_url=proxy.url)) as sdk:
        await sdk.authenticate(devnet.accounts[USER].private_key)
        pm = sdk.get_payment_manager()
        proxy.lose_answer_to("eth_getTransactionReceipt")
        await pm.deposit("0.001")
        assert proxy.seen["eth_getTransactionReceipt"] >= 2
        assert await pm.get_deposit_balance() == 10**15


async def test_anvil_restarted_with_its_state():
    """The node itself goes away and comes back with its state: reads wait for it, the
    chain state and the nonce allocator are intact afterwards."""
    # reads retry for as long as a loaded machine takes to start anvil again (the default
    # 10 s window is a bound on an outage, not what this test is about)
    async with Devnet.start() as net, FabstirSDK(net.sdk_config(rpc_retry_for=120)) as sdk:
        await sdk.authenticate(net.accounts[USER].private_key)
        pm = sdk.get_payment_manager()
        await pm.deposit("0.001")
        # 3 s with nothing listening: the read below is asked well inside it (the restart
        # runs in this process: a stall here delays the poll and the restart's sleep alike)
        restart = asyncio.ensure_future(net.restart_chain(downtime=3.0))
        while net.anvil.running:  # noqa: ASYNC110  (until anvil is really gone, however long)
            await asyncio.sleep(0.01)
        started = time.monotonic()
        assert await pm.get_deposit_balance() == 10**15  # asked while nothing listens
        assert time.monotonic() - started >= 0.5
        await restart
        await pm.deposit("0.002")
        assert await pm.get_deposit_balance() == 3 * 10**15
        assert await nonce(net, USER) == 2
