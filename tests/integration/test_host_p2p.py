"""The reference host's libp2p node, as a real process on a private devnet: what it
publishes on chain, what it answers on /fabstir/host/1.0.0, its DHT records, and client
connections one after another (py-libp2p alone refused every client after the 250th)."""

from __future__ import annotations

import asyncio
import hashlib
import time

import aiohttp
import pytest

from fabstir_sdk import FabstirSDK
from fabstir_sdk.chain.model_id import model_id
from fabstir_sdk.devnet import Devnet, RunningHost
from fabstir_sdk.errors import DevnetError
from fabstir_sdk.host._p2p import p2p_seed
from fabstir_sdk.p2p import HOST_PROTOCOL, P2PNode, Provider, check_peer_id

from .host_helpers import BUILTIN, Client, open_job

pytestmark = pytest.mark.integration

HOST, LATE = 2, 6
CLIENTS = 25  # distinct peers: libp2p rate-limits one peer to a burst of 50 connections


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start() as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def host(net) -> RunningHost:
    running = await net.start_host(
        account=HOST, models=[BUILTIN, net.models[0]], p2p=True, chain_poll=0.1
    )
    yield running
    await running.stop()


@pytest.fixture(scope="module")
async def client(net, host) -> P2PNode:
    async with P2PNode() as node:
        await node.bootstrap(net.p2p_bootstrap)
        await node.remember(host.peer_id, host.p2p_addrs)  # as discovery does, from the registry
        yield node


def expected_peer_id(private_key: str) -> str:
    """The peer id P2PNode derives from the host's key (libp2p's own derivation)."""
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID

    seed = hashlib.sha256(p2p_seed(bytes.fromhex(private_key[2:]))).digest()
    return ID.from_pubkey(create_new_key_pair(seed).public_key).to_base58()


async def test_host_publishes_its_node_in_the_registry(net, host):
    key = net.accounts[HOST].private_key
    assert host.peer_id == check_peer_id(expected_peer_id(key))  # stable across restarts
    (addr,) = host.p2p_addrs
    assert addr.startswith("/ip4/127.0.0.1/tcp/") and addr.endswith(f"/p2p/{host.peer_id}")
    async with FabstirSDK(net.sdk_config()) as sdk:
        info = await sdk.get_host_manager().get_host_info(host.address)
    assert (info.peer_id, info.p2p_addrs) == (host.peer_id, host.p2p_addrs)
    assert info.metadata["peerId"] == host.peer_id
    assert net.p2p_bootstrap and net.p2p_bootstrap != host.p2p_addrs


async def test_host_answers_the_host_protocol(net, host, client):
    usdc = net.addresses.usdc_token
    served = sorted([model_id(BUILTIN), model_id(net.models[0])])
    ask = client.request
    assert await ask(host.peer_id, {"type": "capabilities"}) == {
        "type": "capabilities",
        "host": host.address,
        "api_url": host.api_url,
        "chain_id": net.chain_id,
        "protocols": [HOST_PROTOCOL],
        "features": [
            "e2ee",
            "websocket",
            "streaming",
            "checkpoints",
            "proofs",
            "single-use-init",
            "depositor-check",
        ],
    }
    models = await ask(host.peer_id, {"type": "models"})
    assert sorted(models["models"]) == served
    # the registry's prices: the stable price per model in USDC, the native one in ETH
    assert await ask(host.peer_id, {"type": "prices", "token": usdc}) == {
        "type": "prices",
        "token": usdc,
        "prices": {m: "2000" for m in served},
    }
    assert await ask(host.peer_id, {"type": "prices", "token": None}) == {
        "type": "prices",
        "token": None,
        "prices": {m: str(10**12) for m in served},
    }
    assert await ask(host.peer_id, {"type": "nonsense"}) == {
        "type": "error",
        "code": "unknown_type",
        "message": "unknown request type 'nonsense'",
    }
    pong, _ = await client.ping(host.peer_id, chain_id=net.chain_id, host=host.address)
    assert (pong.host, pong.peer_id, pong.chain_id) == (host.address, host.peer_id, net.chain_id)
    assert abs(pong.timestamp - time.time()) < 60


async def test_load_counts_live_sessions(net, host, client):
    idle = {"type": "load", "active_sessions": 0, "max_sessions": 256, "queued": 0}
    assert await client.request(host.peer_id, {"type": "load"}) == idle
    job = await open_job(net, host.address)
    session = await Client.session(net, host, job)
    try:
        reply = await client.request(host.peer_id, {"type": "load"})
        assert reply == {**idle, "active_sessions": 1}
    finally:
        await session.close()
    deadline = time.monotonic() + 30  # until the host sees the close (however busy it is)
    while time.monotonic() < deadline:
        if await client.request(host.peer_id, {"type": "load"}) == idle:
            break
        await asyncio.sleep(0.05)
    assert await client.request(host.peer_id, {"type": "load"}) == idle


async def test_a_dht_record_per_served_model(net, host, client):
    mine = [Provider(peer_id=host.peer_id, addrs=host.p2p_addrs)]
    assert await client.find_providers(BUILTIN) == mine
    assert await client.find_providers(net.models[0]) == mine
    assert await client.find_providers(net.models[1]) == []  # not served


@pytest.mark.parametrize(
    "connections", [300, pytest.param(1000, marks=pytest.mark.long)], ids=lambda n: f"{n}"
)
async def test_sequential_client_connections(net, host, connections):
    """Clients connect, ask once and hang up, one after another, from 25 peer ids: every
    one is answered, and the host still serves HTTP and a newcomer afterwards. 300 is past
    the 250 inbound connections py-libp2p alone accepted in a node's life; the full 1000
    run is marked ``long`` (CI runs it)."""
    target = host.p2p_addrs[0]
    want = sorted([model_id(BUILTIN), model_id(net.models[0])])
    nodes = [P2PNode() for _ in range(CLIENTS)]
    answered = 0
    try:
        await asyncio.gather(*(n.start() for n in nodes))
        async with asyncio.timeout(connections * 0.8):  # a hang guard, not a speed goal
            for i in range(connections):
                node = nodes[i % CLIENTS]
                assert await node.connect(target) == host.peer_id
                reply = await node.request(host.peer_id, {"type": "models"})
                assert (reply["type"], sorted(reply["models"])) == ("models", want), i
                await node.disconnect(host.peer_id)
                answered += 1
    finally:
        await asyncio.gather(*(n.stop() for n in nodes))
    assert answered == connections
    assert host.running
    async with P2PNode() as newcomer:
        await newcomer.connect(target)
        pong, _ = await newcomer.ping(host.peer_id, chain_id=net.chain_id, host=host.address)
        assert pong.peer_id == host.peer_id
    async with aiohttp.ClientSession() as http, http.get(f"{host.api_url}/health") as response:
        assert response.status == 200


async def test_a_host_whose_bootstrap_peers_are_down_still_serves(net):
    dead = "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"
    late = await net.start_host(account=LATE, p2p=True, p2p_bootstrap=[dead], debug=True)
    try:
        assert late.peer_id is not None
        async with P2PNode() as direct:
            await direct.connect(late.p2p_addrs[0])
            # nobody else holds its record, but a client that dials it finds it there
            reply = await direct.request(late.peer_id, {"type": "models"})
            assert reply == {"type": "models", "models": [model_id(BUILTIN)]}
            await direct.ping(late.peer_id, chain_id=net.chain_id, host=late.address)
    finally:
        await late.stop()
    log = late.log_path.read_text()
    assert "no P2P bootstrap peer answered" in log
    assert "libp2p " in log  # libp2p's records were there, at DEBUG ...
    key = net.accounts[LATE].private_key[2:]
    seed = p2p_seed(bytes.fromhex(key))
    for secret in (key, seed.hex(), hashlib.sha256(seed).hexdigest()):  # ... and no key
        assert secret.lower() not in log.lower()


async def test_a_bad_listen_address_stops_the_host_before_it_registers(net):
    account = net.accounts[7]
    with pytest.raises(DevnetError) as failed:
        await net.start_host(account=7, p2p=True, p2p_listen=["/ip4/127.0.0.1/udp/4001"])
    assert "InvalidMultiaddrError" in str(failed.value) or "only /ip4" in str(failed.value)
    async with FabstirSDK(net.sdk_config()) as sdk:
        info = await sdk.get_host_manager().get_host_info(account.address)
    assert not info.is_active  # nothing registered, no stake moved
