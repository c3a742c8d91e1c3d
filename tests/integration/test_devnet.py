"""The devnet against a real anvil: launcher, clean-up in every exit path, deployment, time."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3

from fabstir_sdk import SDKConfig, ValidationError
from fabstir_sdk.chain.artifacts import load_abi
from fabstir_sdk.devnet import (
    DEVNET_MODELS,
    FAB_PER_ACCOUNT,
    PLACEHOLDER_SHA256,
    USDC_PER_ACCOUNT,
    AnvilProcess,
    Devnet,
    _anvil,
)
from fabstir_sdk.errors import DevnetError

pytestmark = pytest.mark.integration


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
async def w3(devnet):
    """Plain web3.py on the devnet: checks that do not go through our own code."""
    web3 = AsyncWeb3(AsyncHTTPProvider(devnet.rpc_url))
    yield web3
    await web3.provider.disconnect()


def contract(w3, name, address):
    return w3.eth.contract(address=address, abi=load_abi(name))


async def send(w3, account, tx):
    """Sign ``tx`` for a devnet account, send it and return the receipt."""
    tx = {
        "from": account.address,
        "nonce": await w3.eth.get_transaction_count(account.address, "pending"),
        "chainId": await w3.eth.chain_id,
        "gas": 200_000,
        "gasPrice": 2 * await w3.eth.gas_price,
        **tx,
    }
    signed = Account.sign_transaction(tx, account.private_key)
    receipt = await w3.eth.wait_for_transaction_receipt(
        await w3.eth.send_raw_transaction(signed.raw_transaction)
    )
    assert receipt["status"] == 1
    return receipt


# ---------------------------------------------------------------- the launcher


async def test_anvil_starts_answers_and_stops_without_trace(tmp_path, process_gone):
    anvil = await AnvilProcess.start(log_path=tmp_path / "anvil.log")
    try:
        web3 = AsyncWeb3(AsyncHTTPProvider(anvil.rpc_url))
        assert await web3.eth.chain_id == 31337
        assert len(await web3.eth.accounts) == 10
        await web3.provider.disconnect()
        assert anvil.rpc_url.startswith("http://127.0.0.1:") and port_open(anvil.port)
        assert "running" in repr(anvil)
    finally:
        await anvil.stop()
    assert await process_gone(anvil.pid, within=0)  # stop() returns only once it is reaped
    assert not port_open(anvil.port)
    await anvil.stop()  # idempotent
    anvil.kill()


async def test_explicit_port_in_use_is_refused(tmp_path):
    already = set(_anvil._live)  # the shared session devnet may be running
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(DevnetError, match=f"port {port} on 127.0.0.1 is already in use"):
            await AnvilProcess.start(log_path=tmp_path / "anvil.log", port=port)
    assert _anvil._live == already


async def test_free_port_race_is_retried(tmp_path, monkeypatch):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real = _anvil._free_port
        monkeypatch.setattr(_anvil, "_free_port", lambda: next(ports, None) or real())
        anvil = await AnvilProcess.start(log_path=tmp_path / "anvil.log")
        try:
            assert anvil.port != taken
        finally:
            await anvil.stop()


async def test_failed_start_reports_the_log_without_the_fork_url(tmp_path, process_gone):
    already = set(_anvil._live)
    secret = "http://user:s3cret-api-key@127.0.0.1:9/v2/s3cret-api-key"
    with pytest.raises(DevnetError) as info:
        await AnvilProcess.start(log_path=tmp_path / "anvil.log", fork_url=secret)
    message = str(info.value)
    assert "exited with code" in message and str(tmp_path / "anvil.log") in message
    assert "Error" in message  # the log tail is in the message
    assert "s3cret" not in message
    assert _anvil._live == already


async def test_error_inside_the_context_still_stops_anvil(process_gone):
    with pytest.raises(RuntimeError, match="test body failed"):
        async with Devnet.start() as net:
            pid, port, state = net.anvil.pid, net.anvil.port, net.state_dir
            assert state.is_dir()
            raise RuntimeError("test body failed")
    assert await process_gone(pid, within=0)
    assert not port_open(port)
    assert not state.exists()  # the temporary state dir went with it


async def test_awaited_devnet_stops_idempotently(tmp_path, process_gone):
    net = await Devnet.start(state_dir=tmp_path)
    manifest = net.manifest_path
    assert manifest.is_file() and manifest.parent == tmp_path / "deployments"
    await net.stop()
    await net.stop()
    assert await process_gone(net.anvil.pid, within=0)
    assert not manifest.exists()  # its RPC URL is dead: no stale manifest
    assert (tmp_path / "anvil.log").exists()  # the caller's state dir is kept


def _python(code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_atexit_stops_a_devnet_nobody_stopped(process_gone):
    child = _python(
        """
        import asyncio, atexit
        nets = []
        def report():  # registered before the devnet's hook, so it runs after it
            print(nets[0].anvil.pid, nets[0].anvil.running, flush=True)
        atexit.register(report)
        from fabstir_sdk.devnet import Devnet
        async def main():
            nets.append(await Devnet.start())
        asyncio.run(main())
        """
    )
    out, err = await asyncio.to_thread(child.communicate, timeout=60)
    assert child.returncode == 0, err
    pid, running = out.split()
    assert running == "False"  # stopped by our atexit hook, not only by the kernel
    assert await process_gone(int(pid))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
async def test_anvil_dies_when_python_is_killed(tmp_path, process_gone):
    child = _python(
        f"""
        import asyncio, pathlib
        from fabstir_sdk.devnet import AnvilProcess
        async def main():
            anvil = await AnvilProcess.start(log_path=pathlib.Path({str(tmp_path)!r}) / "a.log")
            print(anvil.pid, flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
        """
    )
    try:
        # only against a hang: a loaded machine starts Python and anvil late
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 120)
        pid = int(line)
        assert not await process_gone(pid, within=0.2)
        child.send_signal(signal.SIGKILL)  # no atexit, no finally: only the kernel can help
    finally:
        child.kill()
        await asyncio.to_thread(child.communicate)
    assert await process_gone(pid)


# ---------------------------------------------------------------- the deployment


async def test_every_contract_has_code(devnet, w3):
    for name, address in devnet.addresses.model_dump().items():
        assert len(await w3.eth.get_code(address)) > 0, name


async def test_contracts_are_wired(devnet, w3):
    a, deployer = devnet.addresses, devnet.accounts[0].address
    market = contract(w3, "JobMarketplace", a.job_marketplace).functions
    assert await market.proofSystem().call() == a.proof_system
    assert await market.nodeRegistry().call() == a.node_registry
    assert await market.hostEarnings().call() == a.host_earnings
    assert await market.usdcAddress().call() == a.usdc_token
    assert await market.acceptedTokens(a.usdc_token).call()
    assert await market.tokenMinDeposits(a.usdc_token).call() == 500_000
    assert await market.tokenMaxDeposits(a.usdc_token).call() == 10**12
    assert await market.feeBasisPoints().call() == 1000
    assert await market.disputeWindow().call() == 30
    assert await market.treasuryAddress().call() == deployer
    proof = contract(w3, "ProofSystem", a.proof_system).functions
    assert await proof.authorizedCallers(a.job_marketplace).call()
    earnings = contract(w3, "HostEarnings", a.host_earnings).functions
    assert await earnings.authorizedCallers(a.job_marketplace).call()
    nodes = contract(w3, "NodeRegistry", a.node_registry).functions
    assert await nodes.fabToken().call() == a.fab_token
    assert await nodes.modelRegistry().call() == a.model_registry
    assert await nodes.treasury().call() == deployer
    assert await nodes.slashingAuthority().call() == deployer
    assert await nodes.getAllActiveNodes().call() == []  # no hosts registered
    registry = contract(w3, "ModelRegistry", a.model_registry).functions
    assert await registry.governanceToken().call() == a.fab_token
    for name, address in a.model_dump().items():
        owner = contract(w3, _ARTIFACT[name], address).functions.owner()
        assert await owner.call() == deployer, name


_ARTIFACT = {
    "job_marketplace": "JobMarketplace",
    "node_registry": "NodeRegistry",
    "proof_system": "ProofSystem",
    "host_earnings": "HostEarnings",
    "model_registry": "ModelRegistry",
    "usdc_token": "TestUSDC",
    "fab_token": "FABToken",
}


async def test_models_approved(devnet, w3):
    registry = contract(w3, "ModelRegistry", devnet.addresses.model_registry).functions
    assert devnet.models == [m.spec for m in DEVNET_MODELS]
    assert len(devnet.models) >= 2
    for model in DEVNET_MODELS:
        model_id = await registry.getModelId(model.repo, model.file).call()
        assert "0x" + model_id.hex() == model.model_id
        assert await registry.isModelApproved(model_id).call()
        assert "0x" + (await registry.getModelHash(model_id).call()).hex() == PLACEHOLDER_SHA256


async def test_balances_minted_exactly(devnet, w3):
    usdc = contract(w3, "TestUSDC", devnet.addresses.usdc_token).functions
    fab = contract(w3, "FABToken", devnet.addresses.fab_token).functions
    assert len(devnet.accounts) == 10
    for account in devnet.accounts:
        assert await usdc.balanceOf(account.address).call() == USDC_PER_ACCOUNT == 10**12
        assert await fab.balanceOf(account.address).call() == FAB_PER_ACCOUNT == 10**23
        assert await w3.eth.get_balance(account.address) > 9_999 * 10**18
    assert await usdc.totalSupply().call() == 10 * USDC_PER_ACCOUNT
    assert await fab.totalSupply().call() == 10 * FAB_PER_ACCOUNT


async def test_manifest_written_without_keys(devnet):
    text = devnet.manifest_path.read_text()
    manifest = json.loads(text)
    assert devnet.manifest_path.name == "31337.json"
    assert devnet.manifest_path.parent.name == "deployments"
    assert manifest["chain_id"] == 31337 and manifest["name"] == "devnet"
    assert manifest["rpc_url"] == devnet.rpc_url
    assert manifest["contracts"] == devnet.addresses.model_dump()
    assert [f"{m['repo']}:{m['file']}" for m in manifest["models"]] == devnet.models
    for account in devnet.accounts:
        assert account.private_key[2:].lower() not in text.lower()
    assert "private" not in text.lower()
    from_file = SDKConfig.from_manifest(devnet.manifest_path, rpc_url=devnet.rpc_url)
    assert from_file.contract_addresses == devnet.sdk_config().contract_addresses


async def test_sdk_config(devnet):
    config = devnet.sdk_config(tx_timeout=5)
    assert (config.rpc_url, config.chain_id) == (devnet.rpc_url, 31337)
    assert config.contract_addresses == devnet.addresses
    assert config.tx_timeout == 5
    assert config.storage_dir is not None and config.storage_dir.is_relative_to(devnet.state_dir)
    assert devnet.s5_portal_url is None


async def test_accounts_match_anvil_and_hide_keys(devnet, w3):
    assert [a.address for a in devnet.accounts] == list(await w3.eth.accounts)
    for account in devnet.accounts:
        assert Account.from_key(account.private_key).address == account.address
        assert account.private_key not in repr(devnet.accounts)
    assert all(a.private_key not in repr(devnet) for a in devnet.accounts)


# ---------------------------------------------------------------- time and state


async def test_advance_time_is_exact(devnet, w3):
    before = (await w3.eth.get_block("latest"))["timestamp"]
    await asyncio.sleep(1.1)  # wall-clock time must not leak into the jump
    assert await devnet.advance_time(45) == before + 45
    assert (await w3.eth.get_block("latest"))["timestamp"] == before + 45
    receipt = await send(w3, devnet.accounts[1], {"to": devnet.accounts[2].address, "value": 1})
    assert (await w3.eth.get_block(receipt["blockNumber"]))["timestamp"] >= before + 45


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
async def test_advance_time_refuses_bad_seconds(devnet, bad):
    with pytest.raises(ValidationError):
        await devnet.advance_time(bad)


async def test_snapshot_and_revert_restore_balances(devnet, w3):
    usdc = contract(w3, "TestUSDC", devnet.addresses.usdc_token)
    sender, receiver = devnet.accounts[1], devnet.accounts[2]
    snapshot = await devnet.snapshot()
    data = usdc.encode_abi("transfer", [receiver.address, 123_456])
    await send(w3, sender, {"to": devnet.addresses.usdc_token, "data": data})
    assert await usdc.functions.balanceOf(receiver.address).call() == USDC_PER_ACCOUNT + 123_456
    await devnet.revert(snapshot)
    assert await usdc.functions.balanceOf(sender.address).call() == USDC_PER_ACCOUNT
    assert await usdc.functions.balanceOf(receiver.address).call() == USDC_PER_ACCOUNT
    assert await w3.eth.get_transaction_count(sender.address) == 0
    with pytest.raises(DevnetError, match="no snapshot"):
        await devnet.revert(snapshot)  # spent


_fresh: dict[str, int] = {}


async def test_fixture_isolation_part_1_changes_state(devnet, w3):
    _fresh["block"] = await w3.eth.block_number
    await send(w3, devnet.accounts[3], {"to": devnet.accounts[4].address, "value": 10**18})
    await devnet.advance_time(3600)


async def test_fixture_isolation_part_2_sees_fresh_state(devnet, w3):
    assert await w3.eth.get_transaction_count(devnet.accounts[3].address) == 0
    assert await w3.eth.get_balance(devnet.accounts[4].address) == 10_000 * 10**18
    assert await w3.eth.block_number == _fresh["block"]


async def test_interval_mining(process_gone):
    async with Devnet.start(block_time=1) as net:
        web3 = AsyncWeb3(AsyncHTTPProvider(net.rpc_url))
        try:
            first = await web3.eth.block_number
            # anvil mines on its own clock: wait for two new blocks (bounded, not timed)
            async with asyncio.timeout(30):
                while await web3.eth.block_number < first + 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)  # another process: poll it
        finally:
            await web3.provider.disconnect()
    assert await process_gone(net.anvil.pid, within=0)


async def test_rpc_client_ignores_proxy_variables(devnet, monkeypatch):
    """Loopback JSON-RPC must not be sent to an HTTP proxy from the environment."""
    from fabstir_sdk.chain.rpc import JsonRpcClient

    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = JsonRpcClient(devnet.rpc_url)
    try:
        assert await client.call("eth_chainId") == hex(31337)
    finally:
        await client.aclose()
