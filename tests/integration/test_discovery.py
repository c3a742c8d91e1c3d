"""DiscoveryManager against the devnet: batched registry reads, filters, reputation from
on-chain history, health checks, ranking and the cache.

Hosts are real registry entries; their ``api_url`` points at a small aiohttp server on
loopback whose ``/{name}/health`` answers as each test tells it (until the reference host
exists). The RPC goes through a counting proxy so the number of HTTP requests is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from fabstir_sdk import (
    FabstirSDK,
    FloatAmountError,
    InvalidAddressError,
    NoHostAvailableError,
    ValidationError,
)
from fabstir_sdk.chain.model_id import model_id
from fabstir_sdk.devnet._hosts import register_hosts

ETH_PRICE, USDC_PRICE = 10**12, 2000


class HealthServer:
    """``GET /{name}/health``: 200 after ``delay[name]`` seconds, or ``status[name]``."""

    def __init__(self) -> None:
        self.delay: dict[str, float] = {}
        self.status: dict[str, int] = {}
        self.hits: Counter[str] = Counter()
        self.url = ""
        self.stopping = asyncio.Event()

    async def health(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.hits[name] += 1
        with contextlib.suppress(TimeoutError):  # a delay ends early when the server stops
            await asyncio.wait_for(self.stopping.wait(), self.delay.get(name, 0))
        status = self.status.get(name, 200)
        body = {"status": "healthy" if status == 200 else "unhealthy", "issues": None}
        return web.json_response(body, status=status)

    def api_url(self, name: str) -> str:
        return f"{self.url}/{name}"


class RpcProxy:
    """Forwards JSON-RPC to the devnet, counting HTTP requests and the calls inside them."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.requests: list[list[str]] = []
        self.get_logs: list[dict[str, str]] = []  # each eth_getLogs filter, in order
        self.url = ""
        self._session: aiohttp.ClientSession | None = None

    async def forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        payload = json.loads(body)
        calls = payload if isinstance(payload, list) else [payload]
        self.requests.append([c["method"] for c in calls])
        self.get_logs += [c["params"][0] for c in calls if c["method"] == "eth_getLogs"]
        assert self._session is not None
        async with self._session.post(
            self.target, data=body, headers={"Content-Type": "application/json"}
        ) as reply:
            return web.Response(body=await reply.read(), content_type="application/json")


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@contextlib.asynccontextmanager
async def health_server() -> AsyncIterator[HealthServer]:
    server = HealthServer()
    app = web.Application()
    app.router.add_get("/{name}/health", server.health)
    runner, server.url = await _serve(app)
    try:
        yield server
    finally:
        server.stopping.set()
        await runner.cleanup()


@pytest.fixture
async def health():
    async with health_server() as server:
        yield server


@pytest.fixture
async def proxy(devnet):
    rpc = RpcProxy(devnet.rpc_url)
    app = web.Application()
    app.router.add_post("/", rpc.forward)
    rpc._session = aiohttp.ClientSession()
    runner, rpc.url = await _serve(app)
    yield rpc
    await runner.cleanup()
    await rpc._session.close()


@pytest.fixture
async def reader(devnet, proxy):
    """An unauthenticated SDK reading through the counting proxy. Its health deadline is
    30 s (2 s by default): a host answering in time must not be taken for a down one on a
    busy machine; the tests of the deadline set their own."""
    async with FabstirSDK(devnet.sdk_config(rpc_url=proxy.url)) as sdk:
        sdk.get_discovery_manager().health_timeout = 30.0
        yield sdk


# --------------------------------------------------------------------------- batching


async def test_100_hosts_in_one_round_of_requests(devnet, health, proxy, reader):
    hosts = await register_hosts(devnet, 100, api_url=lambda i: health.api_url(f"h{i}"))
    dm = reader.get_discovery_manager()
    assert dm.node is None  # chain only: no create_node()
    found = await dm.find_hosts(required_models=[devnet.models[0]], limit=100)
    assert sorted(h.address for h in found) == sorted(h.address for h in hosts)
    # one request for the list, the block and MIN_STAKE; one for every host's entry, its
    # prices in ETH and USDC, and the four history event queries
    assert proxy.requests == [
        ["eth_call", "eth_blockNumber", "eth_call"],
        ["eth_call"] * 300 + ["eth_getLogs"] * 4,
    ]
    assert sum(health.hits.values()) == 100
    # warm: the cache answers, no request leaves
    assert (await dm.find_host(required_models=[devnet.models[0]])).address == found[0].address
    assert len(proxy.requests) == 2
    assert sum(health.hits.values()) == 100


async def test_find_host_returns_the_registry_entry(devnet, health, reader):
    (host,) = await register_hosts(
        devnet,
        1,
        api_url=lambda i: health.api_url("solo"),
        models=devnet.models[:2],
        metadata=lambda i: {"publicKey": "02" + "33" * 32, "peerId": None},
    )
    info = await reader.get_discovery_manager().find_host(required_models=[devnet.models[1]])
    assert info.address == host.address
    assert info.api_url == health.api_url("solo")
    assert info.models == [model_id(m) for m in devnet.models[:2]]
    assert info.public_key == "02" + "33" * 32
    assert (info.min_price_per_token_native, info.min_price_per_token_stable) == (
        ETH_PRICE,
        USDC_PRICE,
    )


# --------------------------------------------------------------------------- filters


async def test_filters_models_prices_and_tokens(devnet, health, reader):
    prices = {0: 1000, 1: 2000, 2: 3000}
    hosts = await register_hosts(
        devnet,
        3,
        api_url=lambda i: health.api_url(f"p{i}"),
        models=devnet.models[:2],
        price_stable=lambda i: prices[i],
        price_native=lambda i: ETH_PRICE * (3 - i),  # the USDC-cheapest is the ETH-dearest
    )
    dm = reader.get_discovery_manager()
    m0 = devnet.models[0]
    found = await dm.find_hosts(required_models=[m0], max_price_per_token=2000, strategy="cheapest")
    assert [h.address for h in found] == [hosts[0].address, hosts[1].address]
    found = await dm.find_hosts(
        required_models=[m0], max_price_per_token=2 * ETH_PRICE, payment="eth", strategy="cheapest"
    )
    assert [h.address for h in found] == [hosts[2].address, hosts[1].address]
    with pytest.raises(NoHostAvailableError) as info:
        await dm.find_host(required_models=[m0], max_price_per_token=999)
    assert info.value.reasons == {"too_expensive": 3}
    with pytest.raises(NoHostAvailableError) as info:
        await dm.find_host(required_models=[devnet.models[2]])
    assert info.value.reasons == {"missing_model": 3}
    assert "3 missing model" in str(info.value)


async def test_per_model_price_overrides_count(devnet, health, sdk_for):
    (plain,) = await register_hosts(devnet, 1, api_url=lambda i: health.api_url("plain"))
    sdk = await sdk_for(2)
    await sdk.get_host_manager().register_host(
        health.api_url("override"),
        devnet.models[:1],
        min_price_per_token_native=ETH_PRICE,
        min_price_per_token_stable=1000,
    )
    usdc = devnet.addresses.usdc_token
    await sdk.get_host_manager().set_model_pricing(devnet.models[0], usdc, 5000)
    dm = sdk.get_discovery_manager()
    ranked = await dm.rank_hosts(required_models=[devnet.models[0]], strategy="cheapest")
    assert [(r.host.address, r.price_per_token) for r in ranked] == [
        (plain.address, USDC_PRICE),
        (devnet.accounts[2].address, 5000),
    ]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"strategy": "random"}, ValidationError),
        ({"max_price_per_token": 0}, ValidationError),
        ({"max_price_per_token": 1.5}, FloatAmountError),
        ({"max_price_per_token": "100"}, ValidationError),
        ({"min_reputation": 101}, ValidationError),
        ({"min_reputation": -1}, ValidationError),
        ({"required_models": "repo:file"}, ValidationError),
        ({"required_models": ["no-separator"]}, ValidationError),
        ({"payment": "0x1234"}, InvalidAddressError),
        ({"limit": 0}, ValidationError),
    ],
)
async def test_bad_filters_are_refused_before_any_request(reader, proxy, kwargs, error):
    with pytest.raises(error):
        await reader.get_discovery_manager().find_hosts(**kwargs)
    assert proxy.requests == []


# --------------------------------------------------------------------------- reputation


async def _session(user, host: str, model: str) -> int:
    pm = user.get_payment_manager()
    created = await pm.create_eth_session_job(
        host, "0.005", ETH_PRICE, 3600, 100, model=model, proof_timeout_window=60
    )
    return created.job_id


async def test_reputation_from_on_chain_history(devnet, health, sdk_for):
    good, flaky, slashed = await register_hosts(
        devnet, 3, api_url=lambda i: health.api_url(f"r{i}"), models=devnet.models[:1]
    )
    user = await sdk_for(1)
    model = devnet.models[0]
    for _ in range(3):
        await user.get_payment_manager().complete_session_job(
            await _session(user, good.address, model)
        )
    timed_out = [await _session(user, flaky.address, model) for _ in range(2)]
    await user.get_payment_manager().complete_session_job(
        await _session(user, flaky.address, model)
    )
    await devnet.advance_time(61)
    for job in timed_out:
        await user.get_payment_manager().trigger_session_timeout(job)
    # the deployer is the registry's slashing authority
    owner = await sdk_for(0)
    nr = owner._ctx.contract("node_registry")
    await owner._ctx.require_sender().send(
        nr.call("slashStake", slashed.address, 100 * 10**18, "bafyevidence", "cheated")
    )

    dm = (await sdk_for(3)).get_discovery_manager()
    rep = {h: await dm.get_reputation(h.address) for h in (good, flaky, slashed)}
    assert (rep[good].sessions_completed, rep[good].sessions_timed_out, rep[good].score) == (
        3,
        0,
        66,  # 80 * 4/5 + 2
    )
    assert (rep[flaky].sessions_completed, rep[flaky].sessions_timed_out, rep[flaky].score) == (
        1,
        2,
        34,  # 80 * 2/5 + 2
    )
    assert (rep[slashed].slashes, rep[slashed].slashed_amount, rep[slashed].stake) == (
        1,
        100 * 10**18,
        900 * 10**18,
    )
    assert rep[slashed].score == 20  # (40 + 20 * 0.09) / 2, floored

    ranked = await dm.rank_hosts(required_models=[model], strategy="reliable")
    assert [r.host.address for r in ranked] == [good.address, flaky.address, slashed.address]
    assert [r.reputation for r in ranked] == [66, 34, 20]
    with pytest.raises(NoHostAvailableError) as info:
        await dm.find_host(required_models=[model], min_reputation=67)
    assert info.value.reasons == {"low_reputation": 3}
    found = await dm.find_hosts(required_models=[model], min_reputation=30)
    assert sorted(h.address for h in found) == sorted([good.address, flaky.address])


async def test_the_history_scan_starts_at_the_deployment_block(
    devnet, health, proxy, reader, sdk_for
):
    """The marketplace's events are read from the block it was deployed at (the config's
    ``deployment_block``), not from block 0; the registry's slashes from the start of the
    history window still (a registry may be older than its marketplace). Every host and
    its history are found all the same."""
    block = devnet.deployment.block
    assert block > 0 and reader.config.deployment_block == block
    model = devnet.models[0]
    hosts = await register_hosts(
        devnet, 3, api_url=lambda i: health.api_url(f"d{i}"), models=devnet.models[:1]
    )
    user = await sdk_for(1)
    await user.get_payment_manager().complete_session_job(
        await _session(user, hosts[0].address, model)
    )
    owner = await sdk_for(0)  # the deployer is the registry's slashing authority
    await owner._ctx.require_sender().send(
        owner._ctx.contract("node_registry").call(
            "slashStake", hosts[2].address, 100 * 10**18, "bafyevidence", "cheated"
        )
    )
    dm = reader.get_discovery_manager()
    found = await dm.find_hosts(required_models=[model], limit=10)
    assert sorted(h.address for h in found) == sorted(h.address for h in hosts)
    latest = await reader._ctx.client.rpc.call("eth_blockNumber")  # no block mined since
    addresses = reader.config.contract_addresses
    assert [(p["address"], p["fromBlock"], p["toBlock"]) for p in proxy.get_logs] == [
        *[(addresses.job_marketplace, hex(block), latest)] * 3,
        (addresses.node_registry, "0x0", latest),
    ]
    assert proxy.get_logs[0]["fromBlock"] == hex(block)
    reputations = [await dm.get_reputation(h.address) for h in hosts]
    assert [(r.sessions_completed, r.slashes) for r in reputations] == [(1, 0), (0, 0), (0, 1)]


# --------------------------------------------------------------------------- health, ranking


async def test_down_hosts_are_dropped_and_latency_is_measured(devnet, health, reader):
    fast, slow, broken = await register_hosts(
        devnet, 3, api_url=lambda i: health.api_url(["fast", "slow", "broken"][i])
    )
    (dead,) = await register_hosts(
        devnet, 1, api_url=lambda i: "http://127.0.0.1:9/nothing-listens", first=3
    )
    # "slow" answers 3 s late: more than a stalled, loaded machine adds to "fast"'s answer
    health.delay["slow"] = 3.0
    health.status["broken"] = 503
    dm = reader.get_discovery_manager()
    ranked = await dm.rank_hosts(strategy="fastest")
    assert [r.host.address for r in ranked] == [fast.address, slow.address]
    assert ranked[1].latency_ms >= 1000
    assert ranked[0].latency_ms < ranked[1].latency_ms
    with pytest.raises(NoHostAvailableError) as info:
        await dm.find_host(required_models=[devnet.models[0]], max_price_per_token=1)
    assert info.value.reasons == {"too_expensive": 4}
    assert dead.address not in {r.host.address for r in ranked}
    assert broken.address not in {r.host.address for r in ranked}


async def test_a_host_that_times_out_is_unhealthy(devnet, health, reader):
    await register_hosts(devnet, 1, api_url=lambda i: health.api_url("sleepy"))
    health.delay["sleepy"] = 5
    dm = reader.get_discovery_manager()
    dm.health_timeout = 0.1
    with pytest.raises(NoHostAvailableError) as info:
        await dm.find_host()
    assert info.value.reasons == {"unhealthy": 1}


async def test_strategies_pick_different_hosts(devnet, health, reader):
    cheap, quick = await register_hosts(
        devnet,
        2,
        api_url=lambda i: health.api_url(["cheap", "quick"][i]),
        price_stable=lambda i: [1000, 1100][i],
    )
    health.delay["cheap"] = 3.0  # more than a stalled, loaded machine adds to "quick"'s answer
    dm = reader.get_discovery_manager()
    assert (await dm.find_host(strategy="cheapest")).address == cheap.address
    assert (await dm.find_host(strategy="fastest")).address == quick.address


async def test_cache_ttl_and_invalidation_on_failure(devnet, health, reader):
    first, second = await register_hosts(
        devnet, 2, api_url=lambda i: health.api_url(f"c{i}"), price_stable=lambda i: 1000 * (i + 1)
    )
    dm = reader.get_discovery_manager()
    assert (await dm.find_host(strategy="cheapest")).address == first.address
    assert (await dm.find_host(strategy="cheapest")).address == first.address
    assert health.hits == {"c0": 1, "c1": 1}  # the second call came from the cache
    # the session layer reports the host failed: the cache is dropped and the host skipped
    # (not re-checked within the health TTL)
    health.status["c0"] = 503
    dm.report_failure(first.address)
    assert (await dm.find_host(strategy="cheapest")).address == second.address
    assert health.hits == {"c0": 1, "c1": 1}
    # once the TTLs have passed the host is checked again; still down, still skipped
    dm.health_ttl = dm.result_ttl = 0
    assert (await dm.find_host(strategy="cheapest")).address == second.address
    assert health.hits == {"c0": 2, "c1": 2}
    # and back when it recovers
    health.status["c0"] = 200
    assert (await dm.find_host(strategy="cheapest")).address == first.address
    assert health.hits == {"c0": 3, "c1": 3}
    ranked = await dm.rank_hosts(strategy="cheapest")
    assert ranked[0].failures == 2  # observed failures are remembered


async def test_no_hosts_at_all(reader):
    with pytest.raises(NoHostAvailableError, match="no host is registered and active"):
        await reader.get_discovery_manager().find_host()
