"""DiscoveryManager with a libp2p node against real host processes on a private devnet: a
host's DHT record counts only when the peer is the one the registry names and its pong is
signed by the registered key; whatever disagrees with the chain is dropped."""

from __future__ import annotations

import asyncio

import pytest

from fabstir_sdk import FabstirSDK
from fabstir_sdk.devnet import Devnet
from fabstir_sdk.devnet._hosts import register_hosts

from .host_helpers import BUILTIN
from .test_discovery import health_server

pytestmark = pytest.mark.integration

HONEST, CHAIN_ONLY, UNREGISTERED = 2, 3, 5


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start() as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def hosts(net):
    """A P2P host, a host without a node, and a P2P host that never registered."""
    started = await asyncio.gather(
        net.start_host(account=HONEST, p2p=True),
        net.start_host(account=CHAIN_ONLY),
        net.start_host(account=UNREGISTERED, p2p=True, no_register=True),
    )
    yield started
    for host in started:
        await host.stop()


async def test_the_dht_finds_host_processes_and_the_chain_wins(net, hosts):
    honest, chain_only, rogue = hosts
    assert chain_only.peer_id is None and chain_only.p2p_addrs == []
    assert honest.peer_id and rogue.peer_id and rogue.peer_id != honest.peer_id
    async with health_server() as health:
        async with FabstirSDK(net.sdk_config()) as sdk:
            dm = sdk.get_discovery_manager()
            await dm.create_node(bootstrap=net.p2p_bootstrap)

            # the rogue's record names a peer no registered host lists: dropped
            ranked = await dm.rank_hosts(required_models=[BUILTIN])
            assert {r.host.address: r.dht for r in ranked} == {
                honest.address: True,
                chain_only.address: False,
            }
            assert dm.last_dropped == {"dht_unregistered": 1}
            (found,) = [r.host for r in ranked if r.dht]
            assert (found.peer_id, found.p2p_addrs) == (honest.peer_id, honest.p2p_addrs)

            # a registered host whose metadata claims the rogue's peer: the rogue answers the
            # ping with a pong signed by its own key, not the registered one -> not confirmed;
            # the registry entry stays a candidate (the chain is the truth), without the DHT
            (impostor,) = await register_hosts(
                net,
                1,
                api_url=lambda i: health.api_url("impostor"),
                models=[BUILTIN],
                metadata=lambda i: {"peerId": rogue.peer_id, "p2pAddrs": rogue.p2p_addrs},
            )
            dm.invalidate()
            ranked = await dm.rank_hosts(required_models=[BUILTIN])
            assert {r.host.address: r.dht for r in ranked} == {
                honest.address: True,
                chain_only.address: False,
                impostor.address: False,
            }
            assert dm.last_dropped == {"dht_mismatch": 1}

        # the registry's addresses went stale (a host restarted on another port and left
        # its entry alone): a new client still confirms it, dialling the address its DHT
        # record carries (Noise proves the peer id whichever address answers)
        stale = f"/ip4/127.0.0.1/tcp/1/p2p/{honest.peer_id}"
        async with FabstirSDK(net.sdk_config()) as owner:
            await owner.authenticate(net.accounts[HONEST].private_key)
            hm = owner.get_host_manager()
            metadata = (await hm.get_host_info(honest.address)).metadata
            await hm.update_metadata({**metadata, "p2pAddrs": [stale]})
        async with FabstirSDK(net.sdk_config()) as sdk:
            dm = sdk.get_discovery_manager()
            await dm.create_node(bootstrap=net.p2p_bootstrap)
            ranked = await dm.rank_hosts(required_models=[BUILTIN])
            assert {r.host.address: r.dht for r in ranked} == {
                honest.address: True,
                chain_only.address: False,
                impostor.address: False,
            }
            (found,) = [r.host for r in ranked if r.dht]
            assert found.p2p_addrs == [stale]

            # the honest host dies: its record lingers on the DHT, but no pong confirms it
            honest.kill()
            dm.invalidate()
            ranked = await dm.rank_hosts(required_models=[BUILTIN])
            assert {r.host.address: r.dht for r in ranked} == {
                chain_only.address: False,
                impostor.address: False,
            }
            assert dm.last_dropped == {"dht_mismatch": 2, "unhealthy": 1}
