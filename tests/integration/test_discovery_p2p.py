"""DiscoveryManager with a libp2p node: DHT records checked against the registry, the node's
API through the manager, and its lifecycle inside the SDK."""

from __future__ import annotations

import threading

import pytest
from eth_account import Account

from fabstir_sdk import (
    FabstirSDK,
    InvalidMultiaddrError,
    P2PNodeClosedError,
    PeerUnreachableError,
    ValidationError,
)
from fabstir_sdk.chain.model_id import model_id
from fabstir_sdk.devnet._hosts import host_account, register_hosts
from fabstir_sdk.p2p import HostLoad, HostProtocolServer, P2PNode

from .test_discovery import health_server


@pytest.fixture
async def health():
    async with health_server() as server:
        yield server


def p2p_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "fabstir-p2p")


async def host_node(devnet, key: str, bootstrap: P2PNode, model: str) -> P2PNode:
    """A DHT-server node answering /fabstir/host/1.0.0 as the account ``key``, providing
    ``model`` through ``bootstrap``."""
    node = P2PNode(dht_server=True)
    await node.start()
    await node.serve(
        HostProtocolServer(
            Account.from_key(key),
            chain_id=devnet.chain_id,
            api_url="http://127.0.0.1:1",
            models=[model_id(model)],
            prices={None: {model_id(model): 10**12}},
            load=lambda: HostLoad(active_sessions=0, max_sessions=4),
        )
    )
    await node.connect(bootstrap.info.addrs[0])
    assert await node.provide(model)
    return node


async def test_dht_records_are_checked_against_the_registry(devnet, health, sdk_for):
    model = devnet.models[0]
    threads = p2p_threads()
    async with P2PNode(dht_server=True) as bootstrap:
        honest_key = host_account(0).private_key
        impostor_key = "0x" + "42" * 32  # not the registered host's key
        honest = await host_node(devnet, honest_key, bootstrap, model)
        impostor = await host_node(devnet, impostor_key, bootstrap, model)
        rogue = await host_node(devnet, "0x" + "43" * 32, bootstrap, model)  # not registered
        try:
            peers = {0: honest, 1: impostor}
            registered = await register_hosts(
                devnet,
                3,
                api_url=lambda i: health.api_url(f"d{i}"),
                models=[model],
                metadata=lambda i: (
                    {"peerId": peers[i].peer_id, "p2pAddrs": peers[i].info.addrs}
                    if i in peers
                    else {}
                ),
            )
            user = await sdk_for(1)
            dm = user.get_discovery_manager()
            info = await dm.create_node(bootstrap=[bootstrap.info.addrs[0]])
            assert dm.get_connected_peers() == [bootstrap.peer_id]
            ranked = await dm.rank_hosts(required_models=[model], limit=10)
            dht = {r.host.address: r.dht for r in ranked}
            # every registered host stays a candidate (the registry is the truth); only the
            # honest host's record is confirmed by a pong its registered key signed
            assert dht == {
                registered[0].address: True,
                registered[1].address: False,
                registered[2].address: False,
            }
            assert dm.last_dropped == {"dht_unregistered": 1, "dht_mismatch": 1}
            assert rogue.peer_id not in {r.host.peer_id for r in ranked}

            # the node's own API through the manager
            assert await dm.connect_to_peer(honest.info.addrs[0]) == honest.peer_id
            assert honest.peer_id in dm.get_connected_peers()
            reply = await dm.send_message(honest.peer_id, {"type": "load"})
            assert reply == {"type": "load", "active_sessions": 0, "max_sessions": 4, "queued": 0}
            with pytest.raises(InvalidMultiaddrError):
                await dm.connect_to_peer("/ip4/127.0.0.1/tcp/1")
            with pytest.raises(ValidationError):
                await dm.create_node()  # one node at a time
            assert info.peer_id == dm.node.peer_id

            # a provider whose node went away is no longer confirmed
            await honest.stop()
            dm.invalidate()
            ranked = await dm.rank_hosts(required_models=[model], limit=10)
            assert not any(r.dht for r in ranked)
            assert dm.last_dropped["dht_mismatch"] == 2

            await dm.stop()
            assert dm.node is None and dm.get_connected_peers() == []
            with pytest.raises(P2PNodeClosedError):
                await dm.send_message(honest.peer_id, {"type": "load"})
            # chain-only discovery keeps working after stop()
            assert (await dm.find_host(required_models=[model])).address in {
                h.address for h in registered
            }
        finally:
            for node in (honest, impostor, rogue):
                await node.stop()
    assert p2p_threads() == threads


async def test_dead_bootstrap_leaves_nothing_running(devnet, sdk_for):
    async with P2PNode() as gone:
        dead = gone.info.addrs[0]
    threads = p2p_threads()
    dm = (await sdk_for(1)).get_discovery_manager()
    with pytest.raises(PeerUnreachableError):
        await dm.create_node(bootstrap=[dead])
    assert dm.node is None
    assert p2p_threads() == threads
    with pytest.raises(InvalidMultiaddrError):
        await dm.create_node(bootstrap=["/ip4/127.0.0.1/tcp/1"])
    assert p2p_threads() == threads


async def test_closing_the_sdk_stops_the_node(devnet):
    threads = p2p_threads()
    sdk = FabstirSDK(devnet.sdk_config())
    dm = sdk.get_discovery_manager()
    await dm.create_node()
    assert p2p_threads() == threads + 1
    await sdk.aclose()
    assert p2p_threads() == threads
    assert dm.node is None
