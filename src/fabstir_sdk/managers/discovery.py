"""DiscoveryManager: find a good host, from the registry (always) and the DHT (with a node).

The NodeRegistry is the source of truth for who is a host, what it serves, at what price and
with which keys. Reading it costs two JSON-RPC requests whatever the number of hosts: the
active list and the block number, then one batch with every host's entry, its prices in the
tokens asked about and the new history events. Candidates are filtered, health-checked
(``GET {api_url}/health`` with a short deadline), and ranked on their price, their on-chain
reputation and the latency we measured (``_ranking.py``). Results are cached for a few
seconds; a host that fails a check, or that the caller reports, invalidates the cache.

With a libp2p node (:meth:`DiscoveryManager.create_node`), DHT provider records for the
wanted models are looked up too. A record is only a hint: its peer must be the one the
registry names for a host, and must prove it with a pong signed by that host's address;
anything else is dropped. Without py-libp2p installed everything here but the P2P methods
works, and those raise :class:`P2PUnavailableError` naming the ``p2p`` extra.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from ..chain.addresses import ZERO_ADDRESS, checksum_address
from ..chain.client import Read, block_windows
from ..chain.model_id import model_id as to_model_id
from ..errors import (
    FabstirError,
    FloatAmountError,
    NoHostAvailableError,
    P2PError,
    P2PNodeClosedError,
    ValidationError,
)
from ..models import HostInfo
from ._context import Context
from ._ranking import (
    STRATEGIES,
    Candidate,
    HostObservations,
    RankedHost,
    Reputation,
    rank,
    reputation_score,
)
from .host import host_info_from_chain

if TYPE_CHECKING:
    from ..p2p import NodeInfo, P2PNode

__all__ = ["DiscoveryManager", "RankedHost", "Reputation"]

log = logging.getLogger("fabstir_sdk.discovery")


def _hex_int(value: str) -> int:
    return int(value, 16)


@dataclass
class _History:
    """Per-host counts from JobMarketplace and NodeRegistry events, scanned incrementally."""

    scanned_to: int = -1
    job_host: dict[int, str] = field(default_factory=dict)
    completed: Counter[str] = field(default_factory=Counter)
    timed_out: Counter[str] = field(default_factory=Counter)
    slashes: Counter[str] = field(default_factory=Counter)
    slashed: Counter[str] = field(default_factory=Counter)


@dataclass
class _Registry:
    hosts: dict[str, HostInfo]
    prices: dict[str, dict[str, dict[str, int]]]  # token -> host -> model id -> price
    loaded_at: float
    block: int


class DiscoveryManager:
    """Finds hosts: ``await dm.find_host(required_models=[...])`` needs no node.

    Tunables (attributes, seconds unless noted): ``registry_ttl`` (how long the registry read
    is reused), ``health_ttl`` (how long a health result is reused), ``health_timeout``
    (deadline of one check), ``result_ttl`` (ranked results), ``history_blocks`` (how far back
    the first history scan reaches, in blocks), ``log_window`` (blocks per ``eth_getLogs``),
    ``max_batch`` (JSON-RPC calls per HTTP request).
    """

    registry_ttl = 30.0
    health_ttl = 30.0
    health_timeout = 2.0
    result_ttl = 10.0
    history_blocks = 500_000
    log_window = 50_000
    max_batch = 1000
    health_concurrency = 32

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._node: P2PNode | None = None
        self._http: aiohttp.ClientSession | None = None
        self._registry_: _Registry | None = None
        self._registry_lock = asyncio.Lock()
        self._history = _History()
        self._min_stake: int | None = None
        self._tokens: list[str] = [ZERO_ADDRESS, ctx.config.contract_addresses.usdc_token]
        self._observations: dict[str, HostObservations] = {}
        #: Overclaims seen per host: kept for the life of the manager (invalidate keeps them).
        self._overclaims: Counter[str] = Counter()
        self._checks: dict[str, asyncio.Future[bool]] = {}
        self._encoded: dict[tuple[str, ...], Read] = {}
        self._results: dict[tuple[Any, ...], tuple[float, list[RankedHost], Counter[str]]] = {}
        #: Why candidates were left out of the last ranking, counted by reason (for example
        #: ``missing_model``, ``too_expensive``, ``unhealthy``, ``dht_unregistered``).
        self.last_dropped: dict[str, int] = {}

    def __repr__(self) -> str:
        peer = self._node.info.peer_id if self._node is not None and self._node.running else None
        return f"DiscoveryManager(peer_id={peer!r})"

    # ------------------------------------------------------------------ P2P node

    @property
    def node(self) -> P2PNode | None:
        """The running libp2p node, if :meth:`create_node` started one."""
        return self._node if self._node is not None and self._node.running else None

    async def create_node(
        self,
        listen: Sequence[str] | None = None,
        bootstrap: Sequence[str] | None = None,
        *,
        bootstrap_timeout: float | None = None,
        **options: Any,
    ) -> NodeInfo:
        """Start a libp2p node (loopback, a free port, by default) and dial ``bootstrap``.

        Every address is checked before anything starts. If no bootstrap peer answers, the
        node is stopped again and :class:`PeerUnreachableError` is raised.
        ``options`` go to :class:`~fabstir_sdk.p2p.P2PNode` (``dht_server``, timeouts, ...).
        """
        from ..p2p import P2PNode, check_multiaddr
        from ..p2p._p2pnode import DEFAULT_LISTEN

        if self.node is not None:
            raise ValidationError("a P2P node is already running: await dm.stop() first")
        if isinstance(bootstrap, str):
            raise ValidationError("bootstrap must be a list of multiaddrs")
        peers = list(bootstrap or [])
        for address in peers:
            check_multiaddr(address)
        node = P2PNode(listen=list(listen) if listen else list(DEFAULT_LISTEN), **options)
        info = await node.start()
        try:
            await node.bootstrap(peers, timeout=bootstrap_timeout)
        except BaseException:
            await node.stop()
            raise
        self._node = node
        self._results.clear()
        return info

    def _require_node(self) -> P2PNode:
        from ..p2p import require_libp2p

        require_libp2p()
        node = self.node
        if node is None:
            raise P2PNodeClosedError("no P2P node: await dm.create_node() first")
        return node

    async def connect_to_peer(self, multiaddr: str) -> str:
        """Dial a peer (``/ip4/.../tcp/<port>/p2p/<peer id>``); returns its peer id."""
        return await self._require_node().connect(multiaddr)

    def get_connected_peers(self) -> list[str]:
        """Peer ids with an open connection (empty without a node)."""
        node = self.node
        return node.connected_peers() if node is not None else []

    async def send_message(
        self,
        peer_id: str,
        message: dict[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (enforced on the trio side)
    ) -> dict[str, Any]:
        """One ``/fabstir/host/1.0.0`` request; the reply as a dict (see p2p.messages)."""
        return await self._require_node().request(peer_id, message, timeout=timeout)

    async def stop(self) -> None:
        """Stop the node and close the health-check connections. Idempotent; chain-only
        discovery keeps working afterwards."""
        node, self._node = self._node, None
        if node is not None:
            await node.stop()
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    # ------------------------------------------------------------------ finding hosts

    async def find_host(
        self,
        *,
        required_models: Sequence[str] | None = None,
        max_price_per_token: int | None = None,
        min_reputation: int | None = None,
        strategy: str = "auto",
        payment: str = "usdc",
    ) -> HostInfo:
        """The best host for the filters, or :class:`NoHostAvailableError`."""
        ranked = await self.rank_hosts(
            required_models=required_models,
            max_price_per_token=max_price_per_token,
            min_reputation=min_reputation,
            strategy=strategy,
            payment=payment,
            limit=1,
        )
        return ranked[0].host

    async def find_hosts(
        self,
        *,
        required_models: Sequence[str] | None = None,
        max_price_per_token: int | None = None,
        min_reputation: int | None = None,
        strategy: str = "auto",
        payment: str = "usdc",
        limit: int = 10,
    ) -> list[HostInfo]:
        """Up to ``limit`` healthy hosts, best first (:class:`NoHostAvailableError` if none)."""
        ranked = await self.rank_hosts(
            required_models=required_models,
            max_price_per_token=max_price_per_token,
            min_reputation=min_reputation,
            strategy=strategy,
            payment=payment,
            limit=limit,
        )
        return [r.host for r in ranked]

    async def rank_hosts(
        self,
        *,
        required_models: Sequence[str] | None = None,
        max_price_per_token: int | None = None,
        min_reputation: int | None = None,
        strategy: str = "auto",
        payment: str = "usdc",
        limit: int = 10,
    ) -> list[RankedHost]:
        """Like :meth:`find_hosts`, with the price, reputation, latency and score of each.

        ``max_price_per_token`` is in the ``payment`` token (``"usdc"``, ``"eth"`` or an ERC-20
        address), in the contract's unit: base units per 1000 tokens. A host's price is the
        highest of its prices for ``required_models`` (with none given: its cheapest model).
        ``min_reputation`` is on the 0..100 scale of :meth:`get_reputation`.
        """
        models = _models(required_models)
        cap = _optional_int(max_price_per_token, "max_price_per_token", minimum=1)
        floor = _optional_int(min_reputation, "min_reputation", minimum=0, maximum=100)
        if strategy not in STRATEGIES:
            raise ValidationError(f"strategy must be one of {sorted(STRATEGIES)}, got {strategy!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError("limit must be a positive int")
        token = self._token(payment)
        key = (models, cap, floor, strategy, token, self.node is not None)
        now = time.monotonic()
        cached = self._results.get(key)
        if cached is not None and now - cached[0] < self.result_ttl:
            ranked, reasons = cached[1], cached[2]
        else:
            ranked, reasons = await self._rank(models, cap, floor, strategy, token)
            self._results[key] = (now, ranked, reasons)
        self.last_dropped = dict(reasons)
        if not ranked:
            message = _explain(reasons)
            unserved = await self._unserved(required_models or (), token)
            raise NoHostAvailableError(
                f"{unserved} ({message})" if unserved else message, dict(reasons)
            )
        return ranked[:limit]

    async def _unserved(self, required: Sequence[str], token: str) -> str:
        """Names each required model no registered host serves, and whether it is approved
        on chain: the reason a person needs when a model name has a typo, say."""
        names = {to_model_id(m): m for m in required}
        registry = await self._registry(token)
        served = {m for host in registry.hosts.values() for m in host.models}
        missing = [mid for mid in sorted(names) if mid not in served]
        if not missing:
            return ""
        mr = self._ctx.contract("model_registry")
        approved = await self._ctx.client.reads(
            *(Read.of(mr.call("isModelApproved", mid)) for mid in missing)
        )
        return "; ".join(
            f"model {names[mid]} is approved on chain, but no host serves it"
            if ok
            else f"model {names[mid]} is not approved on chain, and no host serves it"
            for mid, ok in zip(missing, approved, strict=True)
        )

    async def _rank(
        self,
        models: tuple[str, ...],
        cap: int | None,
        floor: int | None,
        strategy: str,
        token: str,
    ) -> tuple[list[RankedHost], Counter[str]]:
        registry = await self._registry(token)
        reasons: Counter[str] = Counter()
        fits: list[tuple[HostInfo, int, int]] = []
        for host in registry.hosts.values():
            prices = registry.prices.get(token, {}).get(host.address, {})
            if not set(models) <= set(host.models):
                reasons["missing_model"] += 1
                continue
            wanted = [prices.get(m, 0) for m in models] if models else list(prices.values())
            if not wanted or min(wanted) <= 0:
                reasons["no_price"] += 1
                continue
            price = max(wanted) if models else min(wanted)
            if cap is not None and price > cap:
                reasons["too_expensive"] += 1
                continue
            if self._overclaims[host.address]:
                reasons["overclaimed"] += 1
                continue
            reputation = self._reputation(host).score
            if floor is not None and reputation < floor:
                reasons["low_reputation"] += 1
                continue
            fits.append((host, price, reputation))
        dht = await self._dht_confirmed(models, registry, reasons) if self.node else set()
        healthy = await asyncio.gather(*(self._healthy(h) for h, _, _ in fits))
        candidates = []
        for (host, price, reputation), ok in zip(fits, healthy, strict=True):
            if not ok:
                reasons["unhealthy"] += 1
                continue
            observations = self._observations[host.address]
            candidates.append(Candidate(host, price, reputation, observations, host.address in dht))
        return rank(candidates, strategy), reasons

    def report_failure(self, address: str) -> None:
        """Tell discovery a host failed (for example mid-session): it is re-checked before
        it is offered again, and cached results are dropped."""
        host = checksum_address(address, what="address")
        self._observations.setdefault(host, HostObservations()).record_failure(time.monotonic())
        self._results.clear()

    def report_overclaim(self, address: str, *, claimed: int, reported: int) -> None:
        """Record that a host claimed ``claimed`` tokens (proved, or in a ``stream_end``)
        where what it sent accounts for ``reported``: its reputation drops to 0 and it is no
        longer offered by this manager."""
        host = checksum_address(address, what="address")
        self._overclaims[host] += 1
        self._results.clear()
        log.warning(
            "host %s claimed %d tokens where what it sent accounts for %d", host, claimed, reported
        )

    def invalidate(self) -> None:
        """Forget cached registry reads, health results and rankings."""
        self._registry_ = None
        self._observations.clear()
        self._results.clear()

    # ------------------------------------------------------------------ reputation

    async def get_reputation(self, address: str) -> Reputation:
        """The host's on-chain record and its 0..100 score (see docs/discovery.md)."""
        host = checksum_address(address, what="address")
        registry = await self._registry(self._tokens[0])
        info = registry.hosts.get(host)
        if info is None:
            nr = self._ctx.contract("node_registry")
            info = host_info_from_chain(
                host, await self._ctx.client.read(nr.call("getNodeFullInfo", host))
            )
        return self._reputation(info)

    def _reputation(self, host: HostInfo) -> Reputation:
        h, address = self._history, host.address
        overclaims = self._overclaims[address]
        score = reputation_score(
            completed=h.completed[address],
            timed_out=h.timed_out[address],
            slashes=h.slashes[address],
            stake=host.stake,
            min_stake=self._min_stake or 1,
        )
        return Reputation(
            address=address,
            score=0 if overclaims else score,
            overclaims=overclaims,
            sessions_completed=h.completed[address],
            sessions_timed_out=h.timed_out[address],
            slashes=h.slashes[address],
            slashed_amount=h.slashed[address],
            stake=host.stake,
        )

    # ------------------------------------------------------------------ registry

    def _token(self, payment: str) -> str:
        if payment == "usdc":
            return self._ctx.config.contract_addresses.usdc_token
        if payment == "eth":
            return ZERO_ADDRESS
        return checksum_address(payment, what="payment")

    async def _registry(self, token: str) -> _Registry:
        """The registry snapshot, re-read when older than ``registry_ttl`` (single flight)."""
        async with self._registry_lock:
            snapshot = self._registry_
            fresh = (
                snapshot is not None and time.monotonic() - snapshot.loaded_at < self.registry_ttl
            )
            if token not in self._tokens:
                self._tokens.append(token)
                if fresh:
                    assert snapshot is not None
                    snapshot.prices[token] = await self._prices(list(snapshot.hosts), token)
            if not fresh:
                snapshot = self._registry_ = await self._load()
                self._results.clear()
            assert snapshot is not None
            return snapshot

    async def _reads(self, reads: list[Read]) -> list[Any]:
        """``reads`` in as few HTTP requests as ``max_batch`` allows, sent concurrently."""
        chunks = [reads[i : i + self.max_batch] for i in range(0, len(reads), self.max_batch)]
        parts = await asyncio.gather(*(self._ctx.client.reads(*c) for c in chunks))
        return [value for part in parts for value in part]

    async def _prices(self, hosts: list[str], token: str) -> dict[str, dict[str, int]]:
        results = await self._reads(
            [self._registry_read("getHostModelPrices", h, token) for h in hosts]
        )
        return {h: _price_table(r) for h, r in zip(hosts, results, strict=True)}

    def _registry_read(self, fn: str, *args: str) -> Read:
        """A NodeRegistry read, encoded once per host: checksumming and ABI-encoding cost
        more than the node's answer when a refresh asks for hundreds of them."""
        key = (fn, *args)
        read = self._encoded.get(key)
        if read is None:
            call = self._ctx.contract("node_registry").call(fn, *args)
            read = self._encoded[key] = Read.of(call)
        return read

    async def _load(self) -> _Registry:
        nr = self._ctx.contract("node_registry")
        first = [
            Read.of(nr.call("getAllActiveNodes")),
            Read("eth_blockNumber", (), _hex_int, "eth_blockNumber"),
        ]
        if self._min_stake is None:
            first.append(Read.of(nr.call("MIN_STAKE")))
        active, latest, *rest = await self._ctx.client.reads(*first)
        if rest:
            self._min_stake = int(rest[0])
        hosts = [str(a) for a in active]  # the ABI decoder returns them checksummed
        tokens = list(self._tokens)
        reads = [self._registry_read("getNodeFullInfo", h) for h in hosts]
        reads += [self._registry_read("getHostModelPrices", h, t) for t in tokens for h in hosts]
        history = self._history_reads(latest)
        results = await self._reads(reads + [r for _, r in history])
        n = len(hosts)
        infos = {}
        for address, raw in zip(hosts, results[:n], strict=True):
            info = host_info_from_chain(address, raw)
            if info.is_active:
                infos[address] = info
        prices = {
            t: {
                h: _price_table(r)
                for h, r in zip(hosts, results[n * (i + 1) : n * (i + 2)], strict=True)
            }
            for i, t in enumerate(tokens)
        }
        self._absorb_history(history, results[n * (len(tokens) + 1) :], latest)
        return _Registry(infos, prices, time.monotonic(), latest)

    # ------------------------------------------------------------------ history

    def _history_reads(self, latest: int) -> list[tuple[str, Read]]:
        """``eth_getLogs`` reads for the blocks not scanned yet, in ``log_window`` windows."""
        if latest < self._history.scanned_to:  # the chain went back (a devnet revert): rescan
            self._history = _History()
        start = self._history.scanned_to + 1
        if self._history.scanned_to < 0:
            start = max(0, latest - self.history_blocks)
        # The marketplace logged nothing before the block it was deployed at; the registry
        # may be older than the marketplace, so its slashes are read from ``start`` still.
        market = max(start, self._ctx.config.deployment_block)
        jm = self._ctx.contract("job_marketplace")
        nr = self._ctx.contract("node_registry")
        sources = [
            (jm, "SessionJobCreated", market),
            (jm, "SessionCompleted", market),
            (jm, "SessionTimedOut", market),
            (nr, "SlashExecuted", start),
        ]
        return [
            (event, Read.logs(c.address, [c.event_topic(event)], low, high, f"logs {event}"))
            for c, event, first in sources
            for low, high in block_windows(first, latest, self.log_window)
        ]

    def _absorb_history(
        self, reads: list[tuple[str, Read]], results: list[Any], latest: int
    ) -> None:
        jm = self._ctx.contract("job_marketplace")
        nr = self._ctx.contract("node_registry")
        h = self._history
        by_event: dict[str, list[dict[str, Any]]] = {}
        for (event, _), logs in zip(reads, results, strict=True):
            by_event.setdefault(event, []).extend(logs)
        for args in jm.events({"logs": by_event.get("SessionJobCreated", [])}, "SessionJobCreated"):
            h.job_host[int(args["jobId"])] = args["host"]
        for event, counter in (("SessionCompleted", h.completed), ("SessionTimedOut", h.timed_out)):
            for args in jm.events({"logs": by_event.get(event, [])}, event):
                host = h.job_host.get(int(args["jobId"]))
                if host is not None:
                    counter[host] += 1
        for args in nr.events({"logs": by_event.get("SlashExecuted", [])}, "SlashExecuted"):
            h.slashes[args["host"]] += 1
            h.slashed[args["host"]] += int(args["amount"])
        h.scanned_to = latest

    # ------------------------------------------------------------------ health

    async def _healthy(self, host: HostInfo) -> bool:
        """Whether the host answered ``/health`` lately (checked if not, single flight)."""
        observations = self._observations.setdefault(host.address, HostObservations())
        if time.monotonic() - observations.checked_at < self.health_ttl:
            return observations.healthy
        pending = self._checks.get(host.address)
        if pending is None:
            pending = self._checks[host.address] = asyncio.ensure_future(self._check(host))
            pending.add_done_callback(lambda _: self._checks.pop(host.address, None))
        return await asyncio.shield(pending)

    async def _check(self, host: HostInfo) -> bool:
        observations = self._observations.setdefault(host.address, HostObservations())
        url = host.api_url.rstrip("/") + "/health"
        if not url.startswith(("http://", "https://")):
            observations.record_failure(time.monotonic())
            return False
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.health_concurrency)
            )
        started = time.perf_counter()
        try:
            async with self._http.get(
                url,
                timeout=aiohttp.ClientTimeout(total=self.health_timeout),
                allow_redirects=False,
            ) as response:
                body = await response.content.read(4096)
                ok = 200 <= response.status < 300 and b'"unhealthy"' not in body
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.debug("health check of %s at %s failed: %r", host.address, url, exc)
            ok = False
        elapsed = time.perf_counter() - started
        if ok:
            observations.record_success(elapsed, time.monotonic())
        else:
            observations.record_failure(time.monotonic())
            self._results.clear()
        return ok

    # ------------------------------------------------------------------ DHT

    async def _dht_confirmed(
        self, models: tuple[str, ...], registry: _Registry, reasons: Counter[str]
    ) -> set[str]:
        """Registered hosts whose DHT record for the models checks out (signed pong)."""
        node = self.node
        if node is None or not models:
            return set()
        from ..p2p import Provider

        found: dict[str, Provider] = {}
        lookups = await asyncio.gather(
            *(node.find_providers(m, timeout=self.health_timeout * 2) for m in models),
            return_exceptions=True,
        )
        for result in lookups:
            if isinstance(result, P2PError):
                log.debug("DHT lookup failed: %s", result)
                continue
            if isinstance(result, BaseException):
                raise result
            for provider in result:
                found.setdefault(provider.peer_id, provider)
        by_peer = {h.peer_id: h for h in registry.hosts.values() if h.peer_id}
        checks = []
        for peer, provider in found.items():
            host = by_peer.get(peer)
            if host is None:
                reasons["dht_unregistered"] += 1
                continue
            checks.append(self._verify_peer(node, host, provider.addrs))
        verified = await asyncio.gather(*checks)
        confirmed = {address for address in verified if address is not None}
        if len(checks) > len(confirmed):
            reasons["dht_mismatch"] += len(checks) - len(confirmed)
        return confirmed

    async def _verify_peer(self, node: P2PNode, host: HostInfo, hint: list[str]) -> str | None:
        assert host.peer_id is not None
        chain_id = self._ctx.config.chain_id
        try:
            await node.remember(host.peer_id, host.p2p_addrs or hint)
            await node.ping(
                host.peer_id, chain_id=chain_id, host=host.address, timeout=self.health_timeout
            )
        except FabstirError as exc:
            log.debug("DHT record of %s not confirmed: %s", host.address, exc)
            return None
        return host.address


def _price_table(raw: Any) -> dict[str, int]:
    model_ids, prices = raw
    return {"0x" + bytes(m).hex(): int(p) for m, p in zip(model_ids, prices, strict=True)}


def _models(required: Sequence[str] | None) -> tuple[str, ...]:
    if required is None:
        return ()
    if isinstance(required, str) or not isinstance(required, Sequence):
        raise ValidationError("required_models must be a list of models")
    return tuple(sorted({to_model_id(m) for m in required}))


def _optional_int(
    value: object, what: str, *, minimum: int, maximum: int | None = None
) -> int | None:
    if value is None:
        return None
    if isinstance(value, float):
        raise FloatAmountError(f"{what} must be an int, not a float")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{what} must be an int")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ValidationError(f"{what} must be {bound}, got {value}")
    return value


def _explain(reasons: Counter[str]) -> str:
    if not reasons:
        return "no host is registered and active"
    parts = ", ".join(f"{count} {why.replace('_', ' ')}" for why, count in sorted(reasons.items()))
    return f"no host fits: {parts}"
