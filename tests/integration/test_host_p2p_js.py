"""Interoperability: a js-libp2p peer (npm ``libp2p`` 3, kad-dht, Noise, Yamux; see
js_host_peer.mjs) provides a model record through our py-libp2p bootstrap peer; our
DiscoveryManager finds it on the DHT and the peer's signed pong confirms it against the
registry."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fabstir_sdk.chain.model_id import model_id
from fabstir_sdk.devnet._hosts import host_account, register_hosts
from fabstir_sdk.p2p import P2PNode, model_key

from .test_discovery import health_server

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PEER_SCRIPT = Path(__file__).with_name("js_host_peer.mjs")


@contextlib.asynccontextmanager
async def js_host_peer(
    bootstrap: str, model: str, private_key: str, chain_id: int
) -> AsyncIterator[dict[str, Any]]:
    """The js peer as a child process: ``{"peerId", "addrs"}`` once it has provided."""
    node = shutil.which("node")
    assert node, "the interop test needs Node.js"
    assert (ROOT / "node_modules" / "libp2p").is_dir(), "js-libp2p is missing: run make setup"
    env = {
        **os.environ,
        "BOOTSTRAP": bootstrap,
        "MODEL_KEY": model_key(model),
        "MODEL_ID": model_id(model),
        "HOST_KEY": private_key,  # a devnet key (public knowledge)
        "CHAIN_ID": str(chain_id),
    }
    proc = await asyncio.create_subprocess_exec(
        node,
        str(PEER_SCRIPT),
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            ready = json.loads(line)
        except (TimeoutError, ValueError):
            proc.kill()
            errors = (await proc.stderr.read()).decode(errors="replace")[-2000:]
            raise AssertionError(f"the js peer did not start:\n{errors}") from None
        yield ready
    finally:
        proc.stdin.close()  # it stops when stdin closes
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_a_js_libp2p_host_is_found_on_the_dht_and_confirmed(devnet, sdk_for):
    model = devnet.models[-1]
    account = host_account(0)
    async with (
        health_server() as health,
        P2PNode(dht_server=True) as bootstrap,
        js_host_peer(bootstrap.info.addrs[0], model, account.private_key, devnet.chain_id) as js,
    ):
        peer = js["peerId"]
        assert all(a.endswith(f"/p2p/{peer}") for a in js["addrs"])
        (registered,) = await register_hosts(
            devnet,
            1,
            api_url=lambda i: health.api_url("js"),
            models=[model],
            metadata=lambda i: {"peerId": peer, "p2pAddrs": js["addrs"]},
        )
        assert registered.address == account.address

        dm = (await sdk_for(1)).get_discovery_manager()
        await dm.create_node(bootstrap=[bootstrap.info.addrs[0]])
        node = dm.node
        assert node is not None
        # py-libp2p finds the record js-libp2p provided, with the js peer's address
        (provider,) = await node.find_providers(model)
        assert provider.peer_id == peer
        assert [f"{a}/p2p/{peer}" for a in provider.addrs] == js["addrs"]

        ranked = await dm.rank_hosts(required_models=[model])
        assert {r.host.address: r.dht for r in ranked} == {account.address: True}
        assert dm.last_dropped == {}

        # the js peer speaks /fabstir/host/1.0.0: a pong signed by the registered key
        pong, _ = await node.ping(peer, chain_id=devnet.chain_id, host=account.address)
        assert (pong.host, pong.peer_id) == (account.address, peer)
        assert await dm.send_message(peer, {"type": "models"}) == {
            "type": "models",
            "models": [model_id(model)],
        }
        assert await dm.send_message(peer, {"type": "nonsense"}) == {
            "type": "error",
            "code": "unknown_type",
            "message": "unknown request type 'nonsense'",
        }
