"""``fabstir devnet up`` as a user runs it: a subprocess, its printed RPC URL, Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
from pathlib import Path

import pytest

from fabstir_sdk.chain.rpc import JsonRpcClient
from fabstir_sdk.chain.units import format_units

pytestmark = pytest.mark.integration

FABSTIR = [sys.executable, "-m", "fabstir_sdk.cli"]


async def _spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *FABSTIR, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )


async def _read_until(proc: asyncio.subprocess.Process, marker: str) -> str:
    """stdout up to and including the first line containing ``marker`` (30 s at most)."""
    text = ""
    async with asyncio.timeout(30):
        while marker not in text:
            line = await proc.stdout.readline()
            if not line:
                err = (await proc.stderr.read()).decode()
                raise AssertionError(f"fabstir exited early:\n{text}\n{err}")
            text += line.decode()
    return text


@pytest.fixture
async def cli():
    """Spawns ``fabstir ...`` processes and makes sure none outlives the test."""
    spawned: list[asyncio.subprocess.Process] = []

    async def run(*args: str) -> asyncio.subprocess.Process:
        proc = await _spawn(*args)
        spawned.append(proc)
        return proc

    yield run
    for proc in spawned:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _chain_id(rpc_url: str) -> int:
    client = JsonRpcClient(rpc_url)
    try:
        return int(await client.call("eth_chainId"), 16)
    finally:
        await client.aclose()


def _manifest(path: str) -> dict | None:
    file = Path(path)
    return json.loads(file.read_text()) if file.exists() else None


def _port_open(rpc_url: str) -> bool:
    port = int(rpc_url.rsplit(":", 1)[1])
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_devnet_up_prints_url_and_stops_on_ctrl_c(cli, tmp_path, process_gone):
    proc = await cli("devnet", "up", "--state-dir", str(tmp_path))
    text = await _read_until(proc, "Press Ctrl-C to stop.")
    rpc_url = re.search(r"RPC URL\s+(http://127\.0\.0\.1:\d+)", text).group(1)
    pid = int(re.search(r"anvil\s+pid (\d+)", text).group(1))
    manifest = re.search(r"manifest\s+(\S+)", text).group(1)
    assert re.search(r"chain id\s+31337", text)
    for name in ("job_marketplace", "node_registry", "proof_system", "host_earnings",
                 "model_registry", "usdc_token", "fab_token"):  # fmt: skip
        assert re.search(rf"{name}\s+0x[0-9a-fA-F]{{40}}", text), name
    assert len(re.findall(r"\[\d\] 0x[0-9a-fA-F]{40}  0x[0-9a-f]{64}", text)) == 10
    # balances read from the chain: account 0 paid the deployment's gas
    held = re.findall(r"\[(\d)\] (0x[0-9a-fA-F]{40})  0x[0-9a-f]{64}  (.*)$", text, re.M)
    assert [line for _, _, line in held[1:]] == ["10000 ETH, 1000000 USDC, 100000 FAB"] * 9
    client = JsonRpcClient(rpc_url)
    try:
        deployer_wei = int(await client.call("eth_getBalance", held[0][1], "latest"), 16)
    finally:
        await client.aclose()
    assert deployer_wei < 10**22
    assert held[0][2] == f"{format_units(deployer_wei, 18)} ETH, 1000000 USDC, 100000 FAB"
    assert _manifest(manifest)["rpc_url"] == rpc_url
    assert await _chain_id(rpc_url) == 31337

    proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(15):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "Devnet stopped." in out.decode()
    assert "Traceback" not in err.decode()
    assert _manifest(manifest) is None  # a stopped devnet leaves no stale manifest
    assert await process_gone(pid, within=0)
    assert not _port_open(rpc_url)


async def test_devnet_up_json_and_sigterm(cli, tmp_path, process_gone):
    proc = await cli("devnet", "up", "--json", "--state-dir", str(tmp_path))
    async with asyncio.timeout(30):
        info = json.loads(await proc.stdout.readline())
    assert info["chain_id"] == 31337 and await _chain_id(info["rpc_url"]) == 31337
    assert len(info["contracts"]) == 7 and len(info["accounts"]) == 10
    assert len(info["models"]) >= 2
    assert [a["balances"] for a in info["accounts"][1:]] == [
        {"eth": 10**22, "usdc": 10**12, "fab": 10**23}
    ] * 9
    assert 0 < info["accounts"][0]["balances"]["eth"] < 10**22

    proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        await proc.wait()
    assert proc.returncode == 0
    assert await process_gone(info["anvil_pid"], within=0)


async def test_error_is_one_line_unless_debug(cli):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = str(squatter.getsockname()[1])
        proc = await cli("devnet", "up", "--port", port)
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
        assert proc.returncode == 1
        assert err.decode() == f"fabstir: error: port {port} on 127.0.0.1 is already in use\n"
        proc = await cli("--debug", "devnet", "up", "--port", port)
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
        assert proc.returncode == 1
        assert "Traceback" in err.decode() and "DevnetError" in err.decode()


async def test_help_lists_the_subcommands(cli):
    proc = await cli("--help")
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode == 0
    assert "devnet" in out.decode() and "demo" in out.decode()
