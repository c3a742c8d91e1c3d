"""The host as a process: start, graceful stop, crash, restart, bad start, no orphans."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from fabstir_sdk import FabstirSDK, SessionState
from fabstir_sdk.devnet import Devnet
from fabstir_sdk.errors import DevnetError

from .host_helpers import Client, open_job, read_job

pytestmark = pytest.mark.integration

ACCOUNT = 6  # not the conftest's host (2): these tests run on the shared devnet
_HOST_RUN = [sys.executable, "-m", "fabstir_sdk.host", "run", "--port", "0"]


async def _host_info(net, address):
    async with FabstirSDK(net.sdk_config()) as sdk:
        return await sdk.get_host_manager().get_host_info(address)


async def test_stop_is_graceful_and_leaves_nothing(devnet, process_gone):
    host = await devnet.start_host(account=ACCOUNT)
    assert host.running and host.address == devnet.accounts[ACCOUNT].address
    assert (host.peer_id, host.p2p_addrs) == (None, [])
    info = await _host_info(devnet, host.address)
    assert info.is_active and info.api_url == host.api_url
    await host.stop()
    assert await process_gone(host.pid, within=0.5)
    assert host._popen.returncode == 0  # it handled SIGTERM and exited cleanly
    await host.stop()  # idempotent
    log = host.log_path.read_text()
    assert "serving" in log
    assert devnet.accounts[ACCOUNT].private_key[2:].lower() not in log.lower()
    assert devnet.accounts[ACCOUNT].private_key[2:] not in repr(host)


async def test_crash_then_restart_updates_the_registry(devnet, process_gone):
    first = await devnet.start_host(account=ACCOUNT)
    job_id = await open_job(devnet, first.address)
    client = await Client.session(devnet, first, job_id)
    _, end, _ = await client.ask("count to 120")
    assert end.tokens_used == 120
    first.kill()  # a crash: no final proof, no settlement
    assert await process_gone(first.pid, within=0.5)
    with pytest.raises(Exception):
        await client.next()
    job = await read_job(devnet, job_id)
    assert (job.status, job.tokens_used) == (SessionState.ACTIVE, 0)
    second = await devnet.start_host(account=ACCOUNT)
    try:
        assert second.api_url != first.api_url
        info = await _host_info(devnet, second.address)
        assert info.api_url == second.api_url  # registered already: the URL was updated
        # the restarted host serves the same job: a resumed session, billed from the chain
        client = await Client.session(devnet, second, job_id)
        text, _, _ = await client.ask("count to 2")
        assert text == "1 2"
        await client.close()
    finally:
        await second.stop()
    assert await process_gone(second.pid, within=0.5)


async def test_a_host_that_cannot_start_reports_why(devnet):
    with pytest.raises(DevnetError, match="did not start") as info:
        await devnet.start_host(account=ACCOUNT, models=["nobody/unknown:model.gguf"])
    assert "not in the registry" in str(info.value)
    assert devnet.accounts[ACCOUNT].private_key[2:] not in str(info.value)


async def test_devnet_stop_stops_its_hosts(process_gone):
    async with Devnet.start() as net:
        host = await net.start_host(account=ACCOUNT)
        pid = host.pid
    assert await process_gone(pid, within=0.5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
async def test_host_dies_when_python_is_killed(process_gone):
    code = textwrap.dedent(
        """
        import asyncio
        from fabstir_sdk.devnet import Devnet
        async def main():
            net = await Devnet.start()
            host = await net.start_host(account=2)
            print(host.pid, net.anvil.pid, flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
        """
    )
    child = subprocess.Popen(  # noqa: ASYNC220  (as the anvil test: a throwaway parent)
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 60)
        host_pid, anvil_pid = map(int, line.split())
        assert not await process_gone(host_pid, within=0.2)
        child.send_signal(signal.SIGKILL)  # no atexit, no finally: only the kernel can help
    finally:
        child.kill()
        await asyncio.to_thread(child.communicate)
    assert await process_gone(host_pid)
    assert await process_gone(anvil_pid)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "set FABSTIR_HOST_PRIVATE_KEY"),
        ({"FABSTIR_HOST_PRIVATE_KEY": "0x1234"}, "must be 32 bytes of hex"),
    ],
)
async def test_cli_refuses_a_missing_or_bad_key(devnet, env, message):
    base = {k: v for k, v in os.environ.items() if k != "FABSTIR_HOST_PRIVATE_KEY"}
    out = await asyncio.to_thread(
        subprocess.run,
        [*_HOST_RUN, "--manifest", str(devnet.manifest_path), "--model", devnet.models[2]],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert message in out.stderr and "1234" not in out.stderr
    assert out.stdout == ""


async def test_checkpoints_published_to_s5(devnet, tmp_path):
    """With storage, proofs and sealed deltas go to S5 and their CIDs on chain."""
    import hashlib

    import coincurve

    from fabstir_sdk.chain.client import ChainClient
    from fabstir_sdk.protocol import open_checkpoint_delta
    from fabstir_sdk.s5._blob import BlobId
    from fabstir_sdk.s5._local import LocalStore

    host = await devnet.start_host(account=ACCOUNT, storage_dir=tmp_path / "s5", chain_poll=0.1)
    recovery = coincurve.PrivateKey()
    try:
        job_id = await open_job(devnet, host.address)
        recovery_hex = recovery.public_key.format(compressed=True).hex()
        client = await Client.session(devnet, host, job_id, recovery_public_key=recovery_hex)
        await client.ask("My name is Ada.")
        await devnet.advance_time(2)
        await client.ws.send(client.proto.checkpoint_request_frame())
        answer = await client.next()
        assert answer.total_tokens == 1000
        await client.close()
    finally:
        await host.stop()
    job = await read_job(devnet, job_id)
    chain = ChainClient(devnet.rpc_url)
    try:
        mp = chain.contract("JobMarketplace", devnet.addresses.job_marketplace)
        proof_hash, tokens, _, _, delta_cid = await chain.read(
            mp.call("getProofSubmission", job_id, 0)
        )
    finally:
        await chain.aclose()
    assert tokens == 1000 and "0x" + bytes(proof_hash).hex() == job.last_proof_hash
    store = LocalStore(tmp_path / "s5")
    proof = await store.get_blob(BlobId.parse(job.last_proof_cid))
    assert "0x" + hashlib.sha256(proof).hexdigest() == job.last_proof_hash
    assert json.loads(proof)["tokenRange"] == [0, 1000]
    envelope = json.loads(await store.get_blob(BlobId.parse(delta_cid)))
    delta, signer = open_checkpoint_delta(envelope, recovery_private_key=recovery.secret)
    assert signer == host.address
    assert [(m["role"], m["content"]) for m in delta["messages"]] == [
        ("user", "My name is Ada."),
        ("assistant", "Nice to meet you, Ada. I will remember your name."),
    ]
    assert "My name is Ada" not in json.dumps(envelope)  # sealed: only the user can read it
