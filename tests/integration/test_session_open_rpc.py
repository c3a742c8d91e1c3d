"""What ``create_session`` asks the chain, on the wire: a host it opened a session with
before is checked in the payment's batch (no registry round trip of its own), and a host
whose entry or price moved since is read again before anything is sent."""

from __future__ import annotations

import pytest

from fabstir_sdk import FabstirSDK
from fabstir_sdk.chain.abi import Contract
from fabstir_sdk.chain.model_id import model_id
from fabstir_sdk.devnet import Devnet, RunningHost

from .host_helpers import BUILTIN, PRICE, read_job
from .rpc_proxy import RpcProxy

pytestmark = pytest.mark.integration

USER, HOST = 1, 7
CHECKS = ["eth_call"] * 7 + [
    "eth_estimateGas",
    "eth_gasPrice",
    "eth_getTransactionCount",
    "eth_chainId",
]


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start() as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def host(net) -> RunningHost:
    running = await net.start_host(account=HOST, models=[BUILTIN], chain_poll=0.1)
    yield running
    await running.stop()


def selectors(net: Devnet, host: str) -> list[str]:
    """The selectors of the first three checks: the host's entry, the model, its price."""
    nr = Contract("NodeRegistry", net.addresses.node_registry)
    mr = Contract("ModelRegistry", net.addresses.model_registry)
    mid, usdc = model_id(BUILTIN), net.addresses.usdc_token
    calls = [
        nr.call("getNodeFullInfo", host),
        mr.call("isModelApproved", mid),
        nr.call("getModelPricing", host, mid, usdc),
    ]
    return ["0x" + call.data.hex() for call in calls]


def sent_data(request: list[dict[str, object]]) -> list[str]:
    return [str(c["params"][0]["data"]) for c in request if c["method"] == "eth_call"]  # type: ignore[index]


async def test_a_known_host_costs_no_registry_round_trip(net, host):
    proxy = await RpcProxy(net.rpc_url).start()
    try:
        async with FabstirSDK(net.sdk_config(rpc_url=proxy.url)) as sdk:
            await sdk.authenticate(net.accounts[USER].private_key)
            sm = await sdk.get_session_manager()
            proxy.requests.clear()
            first = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
            # the first session reads the host's entry and price on its own
            assert proxy.requests[0] == ["eth_call", "eth_call"], proxy.requests
            await first.end()
            proxy.requests.clear()
            proxy.calls.clear()
            second = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
            requests, calls = list(proxy.requests), list(proxy.calls)
            await second.end()
        # one batch: the host's entry, the model, the price and the rest of the checks with
        # the gas estimate, fees and nonce; then the transaction and its receipt
        assert requests[:2] == [CHECKS, ["eth_sendRawTransaction"]]
        assert requests[2:] and set(map(tuple, requests[2:])) == {("eth_getTransactionReceipt",)}
        assert sent_data(calls[0])[:3] == selectors(net, host.address)
        assert (await read_job(net, second.job_id)).price_per_token == PRICE
    finally:
        await proxy.stop()


async def test_a_host_whose_price_moved_is_read_again_before_paying(net, host):
    proxy = await RpcProxy(net.rpc_url).start()
    try:
        async with FabstirSDK(net.sdk_config(rpc_url=proxy.url)) as sdk:
            await sdk.authenticate(net.accounts[USER].private_key)
            sm = await sdk.get_session_manager()
            first = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
            await first.end()
            async with FabstirSDK(net.sdk_config()) as operator:
                await operator.authenticate(net.accounts[HOST].private_key)
                hm = operator.get_host_manager()
                await hm.set_model_pricing(BUILTIN, net.addresses.usdc_token, PRICE + 1000)
            proxy.requests.clear()
            try:
                second = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
                requests = list(proxy.requests)
                await second.end()
            finally:
                async with FabstirSDK(net.sdk_config()) as operator:
                    await operator.authenticate(net.accounts[HOST].private_key)
                    hm = operator.get_host_manager()
                    await hm.set_model_pricing(BUILTIN, net.addresses.usdc_token, PRICE)
        # the checks found the price moved: nothing sent; the entry read again, then paid
        assert requests[:4] == [
            CHECKS,
            ["eth_call", "eth_call"],
            CHECKS,
            ["eth_sendRawTransaction"],
        ]
        assert (await read_job(net, second.job_id)).price_per_token == PRICE + 1000
    finally:
        await proxy.stop()
