"""``Devnet.start(fork_url=...)``: fork a live chain and use the contracts deployed there.

The "remote" chain is our own devnet (a second anvil running our deployment): the fork must
see its contracts, balances and registrations, and what happens on the fork must never
reach it.
"""

from __future__ import annotations

import json
import re

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
TOY = "fabstir/builtin:toy-1.gguf"


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


@pytest.fixture
async def bare_chain(tmp_path):
    """A chain with our contracts whose deployment gave the test accounts nothing: deployed
    by a stranger's key, no tokens minted to anyone, like a live chain seen by a new user."""
    from fabstir_sdk.devnet._deploy import DEVNET_MODELS, deploy, write_manifest
    from fabstir_sdk.devnet._hosts import host_account

    remote = await AnvilProcess.start(log_path=tmp_path / "remote.log")
    rpc = JsonRpcClient(remote.rpc_url)
    try:
        stranger = host_account(424242)
        await rpc.call("anvil_setBalance", stranger.address, hex(10**20))
        # nor the built-in toy model: the fork approves it
        deployment = await deploy(rpc, stranger, [], chain_id=31337, models=DEVNET_MODELS[:2])
        manifest = tmp_path / "bare.json"
        write_manifest(manifest, deployment, chain_id=31337, rpc_url=remote.rpc_url)
        yield remote, deployment, manifest
    finally:
        await rpc.aclose()
        await remote.stop()


async def test_fork_funds_the_test_accounts_and_runs_a_full_session(bare_chain):
    from fabstir_sdk.devnet import FAB_PER_ACCOUNT

    remote, deployment, manifest = bare_chain
    usdc, fab = deployment.addresses.usdc_token, deployment.addresses.fab_token
    fork = await Devnet.start(fork_url=remote.rpc_url, manifest=manifest)
    async with fork, FabstirSDK(fork.sdk_config()) as user:
        await user.authenticate(fork.accounts[USER].private_key)
        pm = user.get_payment_manager()
        for account in fork.accounts:
            assert await pm.get_token_balance(usdc, account.address) == USDC_PER_ACCOUNT
            assert await pm.get_token_balance(fab, account.address) == FAB_PER_ACCOUNT

        assert fork.models == [*(m.spec for m in deployment.models), TOY]
        host = await fork.start_host(account=HOST)  # stakes the fork's FAB, registers
        assert host.models == [TOY]
        info = await user.get_host_manager().get_host_info(host.address)
        assert info.is_active and info.api_url == host.api_url
        assert FAB_PER_ACCOUNT - await pm.get_token_balance(fab, host.address) == info.stake

        sm = await user.get_session_manager()
        session = await sm.create_session(model=host.models[0], host=host.address, deposit="1")
        assert (await session.send_prompt("count to 3")).text == "1 2 3"
        settlement = await session.complete()
        # the first checkpoint is padded to the proof interval: 1000 tokens at 2000 per 1000
        assert (settlement.tokens_used, settlement.host_payment) == (1000, 2000)
        assert (settlement.treasury_fee, settlement.host_net, settlement.refund) == (
            200,
            1800,
            998_000,
        )
        assert await pm.get_token_balance(usdc) == USDC_PER_ACCOUNT - 2000
        assert await user.get_host_manager().get_host_earnings(usdc, host.address) == 1800

    # the chain that was forked still has nothing for them, and no toy model
    async with FabstirSDK(SDKConfig.from_manifest(manifest, rpc_url=remote.rpc_url)) as seen:
        listed = await seen.get_model_manager().list_models()
        assert [f"{m.repo}:{m.file}" for m in listed] == [m.spec for m in deployment.models]
        pm = seen.get_payment_manager()
        for account in fork.accounts:
            assert await pm.get_token_balance(usdc, account.address) == 0
            assert await pm.get_token_balance(fab, account.address) == 0


FORK_ONLY_CONFTEST = """
import os

import pytest


@pytest.fixture(scope="session")
def fabstir_devnet_options():
    return {"fork_url": os.environ["FORK_URL"], "manifest": os.environ["FORK_MANIFEST"]}
"""

FORK_SESSION_TEST = """
import os

from fabstir_sdk.devnet import USDC_PER_ACCOUNT


async def test_a_paid_session_on_the_fork(fabstir_devnet, fabstir_sdk, fabstir_host):
    assert fabstir_devnet.deployment.transactions == 0  # forked, not deployed
    assert fabstir_devnet.addresses.job_marketplace == os.environ["MARKET"]
    usdc = fabstir_devnet.addresses.usdc_token
    sm = await fabstir_sdk.get_session_manager()
    session = await sm.create_session(model=fabstir_host.models[0], host=fabstir_host.address)
    assert (await session.send_prompt("count to 3")).text == "1 2 3"
    settlement = await session.complete()
    assert (settlement.host_payment, settlement.host_net) == (2000, 1800)
    pm = fabstir_sdk.get_payment_manager()
    assert await pm.get_token_balance(usdc) == USDC_PER_ACCOUNT - 2000
"""


@pytest.mark.parametrize("override", ["conftest", "option"])
async def test_the_plugin_fixtures_run_a_session_on_a_fork_with_one_override(
    bare_chain, tmp_path, override
):
    """One override, in the user's conftest (``fabstir_devnet_options``) or on pytest's
    command line (``--fabstir-fork-url``): the host fixture stakes and registers on the
    fork, the SDK fixture pays with the fork's USDC."""
    from .test_plugin import run_pytest, write

    remote, deployment, manifest = bare_chain
    project = tmp_path / "project"
    write(project / "test_on_fork.py", FORK_SESSION_TEST)
    if override == "conftest":
        write(project / "conftest.py", FORK_ONLY_CONFTEST)
        args: tuple[str, ...] = ()
    else:
        args = ("--fabstir-fork-url", remote.rpc_url, "--fabstir-fork-manifest", str(manifest))
    env = {"FORK_URL": remote.rpc_url, "FORK_MANIFEST": str(manifest)}
    env["MARKET"] = deployment.addresses.job_marketplace
    out = await run_pytest(project, *args, env=env)
    assert re.search(r"^1 passed", out, re.M), out


def _erc20_code(slot: int, *, vyper: bool = False) -> str:
    """Runtime code of a minimal token: ``decimals()`` is 6 and ``balanceOf(a)`` reads
    ``mapping(address => uint)`` at ``slot`` (Solidity layout, or Vyper's with the hash
    inputs swapped), masking the top bit as Circle's FiatToken does (its blacklist flag)."""
    key_at, slot_at = ("20", "00") if vyper else ("00", "20")
    head = "60003560e01c8063313ce5671460{dec}576370a082311460{bal}57600080fd"
    dec = "5b600660005260206000f3"
    bal = (
        "5b"
        f"60043560{key_at}52"
        f"60{slot:02x}60{slot_at}52"
        "6040600020"
        "54"
        "7f7f" + "ff" * 31 + "16"
        "600052"
        "60206000f3"
    )
    dec_at = len(head.format(dec="00", bal="00")) // 2
    bal_at = dec_at + len(dec) // 2
    return "0x" + head.format(dec=f"{dec_at:02x}", bal=f"{bal_at:02x}") + dec + bal


@pytest.mark.parametrize(("slot", "vyper"), [(9, False), (3, True)])
async def test_fork_funding_finds_other_balance_layouts(tmp_path, slot, vyper):
    """Circle's USDC keeps balances at slot 9 with a flag in the top bit; Vyper tokens hash
    slot then key: probing finds both, and balanceOf then reports exactly the amount."""
    from eth_utils.crypto import keccak

    from fabstir_sdk.devnet._fork import fund_accounts

    usdc, fab = "0x" + "70c3e".rjust(40, "0"), "0x" + "fab".rjust(40, "0")
    chain = await AnvilProcess.start(log_path=tmp_path / "anvil.log")
    rpc = JsonRpcClient(chain.rpc_url)
    try:
        for token in (usdc, fab):
            await rpc.call("anvil_setCode", token, _erc20_code(slot, vyper=vyper))
        accounts = await rpc.call("eth_accounts")
        fields = dict.fromkeys(ContractAddresses.model_fields, usdc)
        addresses = ContractAddresses(**{**fields, "fab_token": fab})
        funded = await fund_accounts(rpc, addresses, accounts[:3])
        assert funded == {addresses.usdc_token: 10**12, addresses.fab_token: 10**11}  # 6 decimals
        for account in accounts[:3]:
            word = bytes.fromhex(account[2:]).rjust(32, b"\0"), slot.to_bytes(32, "big")
            key = "0x" + keccak(b"".join(word[::-1] if vyper else word)).hex()
            stored = await rpc.call("eth_getStorageAt", usdc, key, "latest")
            assert int(stored, 16) == 10**12
    finally:
        await rpc.aclose()
        await chain.stop()


async def test_fork_funding_says_when_it_cannot_find_the_balances(tmp_path):
    from fabstir_sdk.devnet._fork import fund_accounts

    token = "0x" + "70c3e".rjust(40, "0")
    chain = await AnvilProcess.start(log_path=tmp_path / "anvil.log")
    rpc = JsonRpcClient(chain.rpc_url)
    try:
        await rpc.call("anvil_setCode", token, _erc20_code(200))  # beyond the probed slots
        addresses = ContractAddresses(**dict.fromkeys(ContractAddresses.model_fields, token))
        with pytest.raises(DevnetError) as info:
            await fund_accounts(rpc, addresses, await rpc.call("eth_accounts"))
        assert str(info.value) == (
            f"cannot fund the test accounts with the token at {addresses.usdc_token}: its "
            "balances are not stored where ERC-20 tokens keep them (tried slots 0-63 and the "
            "ERC-7201 one)"
        )
    finally:
        await rpc.aclose()
        await chain.stop()


async def test_an_unreachable_chain_to_fork_is_named_in_one_line():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    already = set(_anvil._live)
    with pytest.raises(DevnetError) as info:
        await Devnet.start(fork_url=url)
    assert str(info.value) == f"cannot fork {url}: connection refused"
    assert _anvil._live == already
