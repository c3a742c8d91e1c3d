"""One process, two chains at once: a Base Sepolia devnet (84532, ETH) and an opBNB testnet
devnet (5611, BNB), each with its own contracts and host process; one wallet holds a session
on each at the same time, paid in each chain's native token, and both settle exactly."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from fabstir_sdk import FabstirSDK, SDKConfig
from fabstir_sdk.chain.addresses import ZERO_ADDRESS
from fabstir_sdk.chain.rpc import JsonRpcClient
from fabstir_sdk.chains import CHAINS, chain_preset
from fabstir_sdk.devnet import Devnet, RunningHost
from fabstir_sdk.errors import ChainMismatchError, ConfigError, InsufficientBalanceError

from .host_helpers import BUILTIN

pytestmark = pytest.mark.integration

USER, HOST = 1, 2
BASE_SEPOLIA, OPBNB_TESTNET = 84532, 5611


@pytest.fixture(scope="module")
async def nets():
    async with (
        Devnet.start(chain_id=BASE_SEPOLIA) as base,
        Devnet.start(chain_id=OPBNB_TESTNET) as bnb,
    ):
        yield base, bnb


@pytest.fixture(scope="module")
async def hosts(nets) -> tuple[RunningHost, RunningHost]:
    base, bnb = nets
    running = await asyncio.gather(
        base.start_host(account=HOST, models=[BUILTIN], chain_poll=0.1),
        bnb.start_host(account=HOST, models=[BUILTIN], chain_poll=0.1),
    )
    yield running[0], running[1]
    for host in running:
        await host.stop()


def test_presets_for_every_upstream_chain():
    assert sorted(CHAINS) == [5611, 8453, 84532]
    bnb = chain_preset(OPBNB_TESTNET)
    assert (bnb.native_token, bnb.min_deposit, bnb.name) == (
        "BNB",
        Decimal("0.001"),
        "opBNB Testnet",
    )
    assert chain_preset(BASE_SEPOLIA).min_deposit == Decimal("0.0001")
    base = SDKConfig.for_chain(BASE_SEPOLIA)
    assert (base.chain_id, base.rpc_url) == (BASE_SEPOLIA, "https://sepolia.base.org")
    assert base.contract_addresses.job_marketplace == "0xD067719Ee4c514B5735d1aC0FfB46FECf2A9adA4"
    with pytest.raises(ConfigError, match="job_marketplace"):
        SDKConfig.opbnb_testnet()  # upstream publishes no opBNB addresses
    with pytest.raises(ConfigError, match="known: 84532"):
        chain_preset(1)


async def _spent_on_gas(net: Devnet, address: str, first_block: int) -> int:
    """Wei the address paid for gas in blocks after ``first_block`` (read from receipts)."""
    rpc = JsonRpcClient(net.rpc_url)
    try:
        last = int(await rpc.call("eth_blockNumber"), 16)
        total = 0
        for number in range(first_block + 1, last + 1):
            block = await rpc.call("eth_getBlockByNumber", hex(number), True)
            for tx in block["transactions"]:
                if tx["from"].lower() == address.lower():
                    receipt = await rpc.call("eth_getTransactionReceipt", tx["hash"])
                    total += int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
        return total
    finally:
        await rpc.aclose()


async def test_one_wallet_sessions_on_two_chains_at_once(nets, hosts):
    base_net, bnb_net = nets
    key = base_net.accounts[USER].private_key
    assert key == bnb_net.accounts[USER].private_key  # the same wallet on both chains
    async with (
        FabstirSDK(base_net.sdk_config()) as on_base,
        FabstirSDK(bnb_net.sdk_config()) as on_bnb,
    ):
        results = await asyncio.gather(on_base.authenticate(key), on_bnb.authenticate(key))
        assert [r.chain_id for r in results] == [BASE_SEPOLIA, OPBNB_TESTNET]
        # a config for one chain refuses the other's RPC before anything is signed
        crossed = SDKConfig(
            rpc_url=bnb_net.rpc_url,
            chain_id=BASE_SEPOLIA,
            contract_addresses=base_net.sdk_config().contract_addresses,
        )
        async with FabstirSDK(crossed) as wrong:
            with pytest.raises(ChainMismatchError):
                await wrong.authenticate(key)

        # discovery on each chain finds that chain's host
        found = await asyncio.gather(
            on_base.get_discovery_manager().find_host(required_models=[BUILTIN], payment="eth"),
            on_bnb.get_discovery_manager().find_host(required_models=[BUILTIN], payment="eth"),
        )
        assert [h.address for h in found] == [h.address for h in hosts]
        assert [await sdk._ctx.unit(None) for sdk in (on_base, on_bnb)] == [
            (18, "ETH"),
            (18, "BNB"),
        ]

        # amounts are named in each chain's native token, before anything is sent
        for sdk, symbol in ((on_base, "ETH"), (on_bnb, "BNB")):
            with pytest.raises(InsufficientBalanceError, match=f"needs 100000 {symbol}, "):
                await sdk.get_payment_manager().deposit("100000")

        user = base_net.accounts[USER].address
        pms = [on_base.get_payment_manager(), on_bnb.get_payment_manager()]
        before = await asyncio.gather(*(pm.get_eth_balance() for pm in pms))
        blocks = [await sdk._ctx.client.rpc.call("eth_blockNumber") for sdk in (on_base, on_bnb)]
        sms = await asyncio.gather(on_base.get_session_manager(), on_bnb.get_session_manager())
        sessions = await asyncio.gather(
            sms[0].create_session(model=BUILTIN, host=found[0], payment="eth", deposit="0.01"),
            sms[1].create_session(model=BUILTIN, host=found[1], payment="eth", deposit="0.01"),
        )
        replies = await asyncio.gather(*(s.send_prompt("count to 3") for s in sessions))
        assert [r.text for r in replies] == ["1 2 3", "1 2 3"]
        settlements = await asyncio.gather(*(s.complete() for s in sessions))
        gas = await asyncio.gather(
            _spent_on_gas(base_net, user, int(blocks[0], 16)),
            _spent_on_gas(bnb_net, user, int(blocks[1], 16)),
        )
        after = await asyncio.gather(*(pm.get_eth_balance() for pm in pms))
        deposit = 10**16
        for session, settlement, spent, was, now in zip(
            sessions, settlements, gas, before, after, strict=True
        ):
            assert settlement.token == ZERO_ADDRESS  # paid in the chain's native token
            assert settlement.tokens_used == 1000  # padded to the proof interval
            assert settlement.host_payment == 1000 * session.price_per_token // 1000
            assert settlement.host_payment + settlement.refund == deposit
            assert spent > 0
            assert now == was - spent - settlement.host_payment
        earnings = await asyncio.gather(
            *(
                sdk.get_host_manager().get_host_earnings(ZERO_ADDRESS, h.address)
                for sdk, h in zip((on_base, on_bnb), hosts, strict=True)
            )
        )
        assert earnings == [s.host_net for s in settlements]
