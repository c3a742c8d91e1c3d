"""``Devnet.start(fork_url=...)``: fork a live chain and use the contracts deployed there.

The "remote" chain is our own devnet (a second anvil running our deployment): the fork must
see its contracts, balances and registrations, and what happens on the fork must never
reach it.
"""

from __future__ import annotations

import json

import pytest

from fabstir_sdk import ConfigError, ContractAddresses, FabstirSDK, SDKConfig, ValidationError
from fabstir_sdk.chain.rpc import JsonRpcClient
from fabstir_sdk.config import BASE_SEPOLIA_CHAIN_ID
from fabstir_sdk.devnet import USDC_PER_ACCOUNT, AnvilProcess, Devnet, _anvil
from fabstir_sdk.devnet._fork import shipped_manifest
from fabstir_sdk.errors import DevnetError

pytestmark = pytest.mark.integration

USER, HOST = 1, 2
STRANGER = "0x000000000000000000000000000000000000dEaD"


async def rpc_call(url: str, method: str, *params):
    rpc = JsonRpcClient(url)
    try:
        return await rpc.call(method, *params)
    finally:
        await rpc.aclose()


async def block_number(url: str) -> int:
    return int(await rpc_call(url, "eth_blockNumber"), 16)


async def test_fork_sees_the_original_and_writes_only_to_itself(devnet, host, sdk_for):
    original = await sdk_for(USER)
    pm = original.get_payment_manager()
    await pm.deposit("0.25")  # ETH pre-funded into the marketplace
    await rpc_call(devnet.rpc_url, "anvil_setBalance", STRANGER, hex(12345))
    head = await block_number(devnet.rpc_url)

    async with Devnet.start(fork_url=devnet.rpc_url, manifest=devnet.manifest_path) as fork:
        assert (fork.chain_id, fork.addresses, fork.models) == (
            31337,
            devnet.addresses,
            devnet.models,
        )
        assert fork.rpc_url != devnet.rpc_url and fork.deployment.transactions == 0
        written = json.loads(fork.manifest_path.read_text())
        assert written["contracts"] == devnet.addresses.model_dump()
        assert written["rpc_url"] == fork.rpc_url
        assert written["source"] == "fabstir_sdk.devnet on a local anvil forking chain 31337"
        assert await block_number(fork.rpc_url) == head

        async with FabstirSDK(fork.sdk_config()) as user:
            await user.authenticate(fork.accounts[USER].private_key)
            fpm = user.get_payment_manager()
            assert await fpm.get_deposit_balance() == 25 * 10**16
            assert await fpm.get_token_balance(fork.addresses.usdc_token) == USDC_PER_ACCOUNT
            assert await fpm.get_eth_balance(STRANGER) == 12345
            info = await user.get_host_manager().get_host_info(devnet.accounts[HOST].address)
            assert info.is_active and info.api_url == "http://127.0.0.1:8080"
            assert info.models == _model_ids(devnet.models[:2])

            # write on the fork: take the deposit back, and the host moves
            await fpm.withdraw("0.25")
            assert await fpm.get_deposit_balance() == 0
        async with FabstirSDK(fork.sdk_config()) as fork_host:
            await fork_host.authenticate(fork.accounts[HOST].private_key)
            await fork_host.get_host_manager().update_api_url("http://127.0.0.1:9999")
            hm = fork_host.get_host_manager()
            moved = await hm.get_host_info(fork.accounts[HOST].address)
            assert moved.api_url == "http://127.0.0.1:9999"
        assert await block_number(fork.rpc_url) == head + 2

    # the original never saw any of it
    assert await block_number(devnet.rpc_url) == head
    assert await pm.get_deposit_balance() == 25 * 10**16
    info = await original.get_host_manager().get_host_info(devnet.accounts[HOST].address)
    assert info.api_url == "http://127.0.0.1:8080"


def _model_ids(specs: list[str]) -> list[str]:
    from fabstir_sdk.chain.model_id import model_id

    return [model_id(s) for s in specs]


async def test_fork_at_a_block_and_by_addresses(devnet, sdk_for):
    before = await block_number(devnet.rpc_url)
    user = await sdk_for(USER)
    await user.get_payment_manager().deposit("0.5")
    async with Devnet.start(
        fork_url=devnet.rpc_url, fork_block=before, addresses=devnet.addresses
    ) as fork:
        assert fork.addresses == devnet.addresses and fork.models == devnet.models
        assert fork.deployment.deployer == ""  # no manifest said who deployed
        async with FabstirSDK(fork.sdk_config()) as forked:
            await forked.authenticate(fork.accounts[USER].private_key)
            assert await forked.get_payment_manager().get_deposit_balance() == 0  # older state
    assert await user.get_payment_manager().get_deposit_balance() == 5 * 10**17


async def test_fork_of_base_sepolia_uses_its_shipped_addresses(devnet, tmp_path):
    """A chain with id 84532 whose Base Sepolia addresses hold our contracts' code: forking
    it with no addresses picks the shipped manifest, as forking Base Sepolia itself would."""
    sepolia = SDKConfig.base_sepolia().contract_addresses
    remote = await AnvilProcess.start(log_path=tmp_path / "remote.log", chain_id=84532)
    try:
        for field in ContractAddresses.model_fields:
            code = await rpc_call(
                devnet.rpc_url, "eth_getCode", getattr(devnet.addresses, field), "latest"
            )
            await rpc_call(remote.rpc_url, "anvil_setCode", getattr(sepolia, field), code)
        async with Devnet.start(fork_url=remote.rpc_url) as fork:
            assert fork.chain_id == BASE_SEPOLIA_CHAIN_ID
            assert fork.addresses == sepolia
            assert fork.models == []  # the copied registry has no storage: no models
            config = fork.sdk_config()
            assert (config.chain_id, config.contract_addresses) == (84532, sepolia)
            assert fork.manifest_path.name == "84532.json"
    finally:
        await remote.stop()


def test_shipped_manifests():
    assert shipped_manifest(BASE_SEPOLIA_CHAIN_ID).name == "base-sepolia.json"
    assert shipped_manifest(8453) is None  # Base mainnet has no published addresses yet
    assert shipped_manifest(31337) is None


async def test_fork_refusals(devnet, tmp_path):
    already = set(_anvil._live)
    with pytest.raises(DevnetError, match="no known Fabstir deployment on chain 31337: pass"):
        await Devnet.start(fork_url=devnet.rpc_url)
    sepolia = SDKConfig.base_sepolia().contract_addresses
    with pytest.raises(
        DevnetError,
        match=f"no contract on the forked chain at job_marketplace {sepolia.job_marketplace}, ",
    ):
        await Devnet.start(fork_url=devnet.rpc_url, addresses=sepolia)
    with pytest.raises(DevnetError, match=r"base-sepolia\.json is for chain 84532, but the forked"):
        await Devnet.start(
            fork_url=devnet.rpc_url,
            manifest=shipped_manifest(BASE_SEPOLIA_CHAIN_ID),
        )
    broken = tmp_path / "broken.json"
    broken.write_text('{"chain_id": 31337, "contracts": {"job_marketplace": "0x12"}}')
    with pytest.raises(ConfigError, match=r"broken\.json has no address for node_registry, "):
        await Devnet.start(fork_url=devnet.rpc_url, manifest=broken)
    assert _anvil._live == already  # every refused fork's anvil was stopped


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"fork_block": 3}, "fork_block only apply with fork_url"),
        ({"manifest": "m.json", "addresses": None}, "manifest only apply with fork_url"),
        (
            {"fork_url": "http://127.0.0.1:1", "manifest": "m.json", "addresses": "x"},
            "pass addresses or manifest, not both",
        ),
        ({"fork_url": "http://127.0.0.1:1", "fork_block": -1}, "fork_block must be a block"),
    ],
)
def test_fork_options_are_checked_before_anything_starts(options, message):
    with pytest.raises(ValidationError, match=message):
        Devnet.start(**options)
