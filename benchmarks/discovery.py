"""Host discovery on the devnet: the SDK's batched registry reads against per-host calls.

Fifty hosts are registered (their ``/health`` answers from one aiohttp server on loopback);
ten of them also run a libp2p node that provides the model on the DHT. Baselines measured in
the same run: one ``eth_call`` through web3.py, the registry read one call per host (what the
upstream SDK does), and one round trip on an open py-libp2p stream with no SDK on it.

Targets (issue 5): registry discovery of 50 hosts <= 10 raw eth_call round trips; warm
find_host <= 5 ms; send_message within 2x of a raw stream round trip; ``import fabstir_sdk``
< 300 ms.

A second devnet runs real reference-host processes: what their libp2p node adds to a host's
start, a cold DHT lookup and find_host through the DHT against them, and one client
connection (connect, ask, hang up) to a host process, the unit of the 1000-connection test.
"""

from __future__ import annotations

import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

from aiohttp import web
from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3

from fabstir_sdk import FabstirSDK
from fabstir_sdk.chain.abi import Contract
from fabstir_sdk.chain.model_id import model_id
from fabstir_sdk.devnet import Devnet
from fabstir_sdk.devnet._hosts import host_account, register_hosts
from fabstir_sdk.p2p import HostLoad, HostProtocolServer, P2PNode

from ._report import Row
from .payments import _median_ms

HOSTS, DHT_HOSTS = 50, 10
ECHO = "/fabstir-bench/echo/1.0.0"


def _import_ms(runs: int) -> float:
    code = (
        "import time; t = time.perf_counter(); import fabstir_sdk; print(time.perf_counter() - t)"
    )
    samples = [
        float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
        * 1000
        for _ in range(max(3, runs // 5))
    ]
    return statistics.median(samples)


async def _health_server() -> tuple[web.AppRunner, str]:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "healthy", "issues": None})

    app = web.Application()
    app.router.add_get("/{name}/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def _host_nodes(net: Devnet, bootstrap: P2PNode, model: str) -> list[P2PNode]:
    nodes = []
    for i in range(DHT_HOSTS):
        node = P2PNode(dht_server=True)
        await node.start()
        await node.serve(
            HostProtocolServer(
                Account.from_key(host_account(i).private_key),
                chain_id=net.chain_id,
                api_url="",
                models=[model_id(model)],
                prices={None: {model_id(model): 10**12}},
                load=lambda: HostLoad(active_sessions=0, max_sessions=4),
            )
        )
        await node.connect(bootstrap.info.addrs[0])
        await node.provide(model)
        nodes.append(node)
    return nodes


async def _raw_stream_rtt_ms(client: P2PNode, host: P2PNode, runs: int) -> float:
    """Round trips of the same-sized payload on an open py-libp2p stream, timed on trio."""

    async def echo(stream: Any) -> None:
        while True:
            data = await stream.read(65536)
            if not data:
                return
            await stream.write(data)

    async def mount() -> None:
        host._node._host.set_stream_handler(ECHO, echo)  # type: ignore[union-attr]

    await host._bridge.call(mount)
    payload = b'\x0f{"type":"load"}'

    async def measure() -> float:
        from libp2p.peer.id import ID

        stream = await client._node._host.new_stream(  # type: ignore[union-attr]
            ID.from_base58(host.peer_id), [ECHO]
        )
        samples = []
        for i in range(runs + 1):
            start = time.perf_counter()
            await stream.write(payload)
            await stream.read(65536)
            if i:
                samples.append((time.perf_counter() - start) * 1000)
        await stream.close()
        return statistics.median(samples)

    result: float = await client._bridge.call(measure)
    return result


async def run(runs: int) -> list[Row]:
    import_ms = _import_ms(runs)
    async with Devnet.start() as net:
        runner, health_url = await _health_server()
        model = net.models[0]
        async with P2PNode(dht_server=True) as bootstrap:
            nodes = await _host_nodes(net, bootstrap, model)
            await register_hosts(
                net,
                HOSTS,
                api_url=lambda i: f"{health_url}/h{i}",
                metadata=lambda i: (
                    {"peerId": nodes[i].peer_id, "p2pAddrs": nodes[i].info.addrs}
                    if i < DHT_HOSTS
                    else {}
                ),
            )
            rows = await _measure(net, runs, model, bootstrap, nodes)
            for node in nodes:
                await node.stop()
        await runner.cleanup()
    rows += await _host_processes(runs)
    _print(runs, import_ms, rows)
    by_name = {name: ms for name, ms, _ in rows}
    raw_call, per_host = rows[0][0], rows[1][0]
    raw_rtt = "raw py-libp2p stream round trip"
    report = [Row("discovery", "import fabstir_sdk", import_ms)]
    for name, ms, _ in rows:
        if name.startswith("SDK registry read"):
            report.append(Row("discovery", name, ms, per_host, by_name[per_host]))
        elif name == per_host:
            report.append(Row("discovery", name, ms, raw_call, by_name[raw_call]))
        elif name.startswith("send_message"):
            report.append(Row("discovery", name, ms, raw_rtt, by_name[raw_rtt]))
        elif name.startswith("host start with "):
            report.append(Row("discovery", name, ms, HOST_START, by_name[HOST_START]))
        elif not name.startswith("raw "):
            report.append(Row("discovery", name, ms))
    return report


async def _measure(
    net: Devnet, runs: int, model: str, bootstrap: P2PNode, nodes: list[P2PNode]
) -> list[tuple[str, float, str]]:
    w3 = AsyncWeb3(AsyncHTTPProvider(net.rpc_url))
    nr = Contract("NodeRegistry", net.addresses.node_registry)
    registry = w3.eth.contract(address=nr.address, abi=nr._abi)

    async def raw_call() -> None:
        await registry.functions.MIN_STAKE().call()

    async def raw_per_host() -> None:
        for address in await registry.functions.getAllActiveNodes().call():
            await registry.functions.getNodeFullInfo(address).call()

    sdk = FabstirSDK(net.sdk_config())
    dm = sdk.get_discovery_manager()
    usdc = net.addresses.usdc_token

    async def sdk_registry() -> None:
        dm.invalidate()
        await dm._registry(usdc)

    async def chain_cold() -> None:
        dm.invalidate()
        await dm.find_host(required_models=[model])

    async def warm() -> None:
        await dm.find_host(required_models=[model])

    raw = await _median_ms(runs, raw_call)
    rows: list[tuple[str, float, str]] = [("raw web3.py eth_call (baseline)", raw, "1.00x")]
    per_host = await _median_ms(max(3, runs // 5), raw_per_host)
    rows.append((f"raw registry read, 1+{HOSTS} eth_calls", per_host, f"{per_host / raw:.2f}x"))
    batched = await _median_ms(runs, sdk_registry)
    rows.append((f"SDK registry read, {HOSTS} hosts", batched, f"{batched / raw:.2f}x"))
    rows.append(
        (f"find_host chain-only cold ({HOSTS} /health)", await _median_ms(runs, chain_cold), "-")
    )
    rows.append(("find_host chain-only warm", await _median_ms(runs, warm), "-"))

    await dm.create_node(bootstrap=[bootstrap.info.addrs[0]])
    rows.append(
        (f"find_host chain+DHT cold ({DHT_HOSTS} on DHT)", await _median_ms(runs, chain_cold), "-")
    )
    rows.append(("find_host chain+DHT warm", await _median_ms(runs, warm), "-"))
    node = dm.node
    assert node is not None
    raw_rtt = await _raw_stream_rtt_ms(node, nodes[0], runs)
    rows.append(("raw py-libp2p stream round trip", raw_rtt, "1.00x"))

    async def send() -> None:
        await dm.send_message(nodes[0].peer_id, {"type": "load"})

    rtt = await _median_ms(runs, send)
    rows.append(("send_message round trip", rtt, f"{rtt / raw_rtt:.2f}x"))
    await sdk.aclose()
    await w3.provider.disconnect()
    return rows


HOST_START = "host start without libp2p"
PROCESS_HOSTS = 3


async def _host_processes(runs: int) -> list[tuple[str, float, str]]:
    """Real host processes on a devnet of their own (only they are registered there)."""
    async with Devnet.start() as net:
        starts: dict[bool, list[float]] = {False: [], True: []}
        hosts = []
        for i in range(2 * PROCESS_HOSTS):  # alternate, so machine load hits both alike
            p2p = i % 2 == 1
            started = time.perf_counter()
            hosts.append(await net.start_host(account=2 + i, p2p=p2p))
            starts[p2p].append((time.perf_counter() - started) * 1000)
        plain, p2p_ms = statistics.median(starts[False]), statistics.median(starts[True])
        rows = [
            (HOST_START, plain, "1.00x"),
            ("host start with libp2p (+ DHT records)", p2p_ms, f"{p2p_ms / plain:.2f}x"),
        ]
        on_dht = [h for h in hosts if h.peer_id]
        async with FabstirSDK(net.sdk_config()) as sdk:
            dm = sdk.get_discovery_manager()
            await dm.create_node(bootstrap=net.p2p_bootstrap)
            node = dm.node
            assert node is not None
            builtin = net.models[-1]

            async def lookup() -> None:
                assert len(await node.find_providers(builtin)) == PROCESS_HOSTS

            async def cold() -> None:
                dm.invalidate()
                ranked = await dm.rank_hosts(required_models=[builtin])
                assert sum(r.dht for r in ranked) == PROCESS_HOSTS

            rows.append(
                (f"DHT lookup, {PROCESS_HOSTS} host processes", await _median_ms(runs, lookup), "-")
            )
            rows.append(
                (
                    f"find_host chain+DHT cold, {len(hosts)} host processes",
                    await _median_ms(runs, cold),
                    "-",
                )
            )
            rows.append(await _connection_ms(on_dht[0].p2p_addrs[0], on_dht[0].peer_id, runs))
    return rows


async def _connection_ms(target: str, peer: str, runs: int) -> tuple[str, float, str]:
    """Connect, ask once, hang up, each time from one of 25 peers (libp2p rate-limits
    a single peer's reconnections), as the host test does 1000 times."""
    clients = [P2PNode() for _ in range(25)]
    await asyncio.gather(*(c.start() for c in clients))
    turn = 0

    async def once() -> None:
        nonlocal turn
        client = clients[turn % len(clients)]
        turn += 1
        await client.connect(target)
        await client.request(peer, {"type": "models"})
        await client.disconnect(peer)

    try:
        ms = await _median_ms(max(runs, 100), once)
    finally:
        await asyncio.gather(*(c.stop() for c in clients))
    return ("client connection to a host process (connect, ask, hang up)", ms, "-")


def _print(runs: int, import_ms: float, rows: list[tuple[str, float, str]]) -> None:
    print(f"\n# discovery on the devnet: median of {runs} runs, {HOSTS} hosts")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(f"{'operation':<62} {'ms':>8} {'vs raw':>8}")
    print(f"{'import fabstir_sdk (target < 300 ms)':<62} {import_ms:8.1f} {'-':>8}")
    for name, ms, ratio in rows:
        print(f"{name:<62} {ms:8.2f} {ratio:>8}")
