"""A JSON-RPC proxy on loopback that can go down or lose answers: real-socket RPC faults."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import aiohttp
from aiohttp import web


class Gate:
    """One held request: ``await gate.arrived.wait()``, then ``gate.opened.set()``; ``calls``
    are the request's JSON-RPC calls (to check that the one held is the one meant)."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.opened = asyncio.Event()
        self.calls: list[dict] = []


class RpcProxy:
    """Forwards JSON-RPC to ``upstream``; ``down()``/``up()`` and ``lose_answer_to(method)``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: Counter[str] = Counter()
        #: The methods of each HTTP request, in arrival order (one list per batch).
        self.requests: list[list[str]] = []
        self._lose: set[str] = set()
        #: Methods this "node" does not have: answered with JSON-RPC's method-not-found.
        self.missing: set[str] = set()
        #: The widest eth_getLogs block range answered, as providers cap it (None: any).
        self.max_log_blocks: int | None = None
        self._holds: list[tuple[str, str, int, asyncio.Event]] = []
        self._gates: dict[str, Gate] = {}
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._client: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> RpcProxy:
        self._client = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await self.up()
        return self

    async def up(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()
        if not self.port:
            server = self._site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def down(self) -> None:
        """Stop listening and drop open connections: clients get 'connection refused'."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    def lose_answer_to(self, method: str) -> None:
        """Forward the next request that calls ``method``, then drop the answer."""
        self._lose.add(method)

    def hold(self, method: str, *, until: str, seen: int) -> None:
        """Keep requests calling ``method`` back until ``until`` has been called ``seen``
        times (counting from now)."""
        self._holds.append((method, until, self.seen[until] + seen, asyncio.Event()))

    def gate(self, method: str) -> Gate:
        """Keep the next request that calls ``method`` back until the gate is opened; the
        gate's ``arrived`` event says that it is held."""
        gate = self._gates[method] = Gate()
        return gate

    async def stop(self) -> None:
        await self.down()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        payload = json.loads(body)
        calls = payload if isinstance(payload, list) else [payload]
        methods = [c.get("method", "") for c in calls]
        self.seen.update(methods)
        self.requests.append(methods)
        for held, until, count, opened in self._holds:
            if self.seen[until] >= count:
                opened.set()
            elif held in methods:
                await opened.wait()
        for method in methods:
            gate = self._gates.pop(method, None)
            if gate is not None:
                gate.calls = calls
                gate.arrived.set()
                await gate.opened.wait()
        assert self._client is not None
        if any(self._refusal(c) for c in calls):
            return await self._with_refusals(payload, calls)
        async with self._client.post(
            self.upstream, data=body, headers={"Content-Type": "application/json"}
        ) as upstream:
            answer = await upstream.read()
        lost = self._lose.intersection(methods)
        if lost:
            self._lose -= lost
            assert request.transport is not None
            request.transport.close()  # the node acted; the client never hears of it
            raise ConnectionResetError("answer dropped by the proxy")
        response = web.Response(body=answer, content_type="application/json")
        response.force_close()  # no keep-alive: once down, every new request is refused
        return response

    def _refusal(self, call: dict) -> dict | None:
        """The error this node answers ``call`` with, if it refuses it."""
        method = call.get("method")
        if method in self.missing:
            return {
                "code": -32601,
                "message": f"the method {method} does not exist/is not available",
            }
        if method == "eth_getLogs" and self.max_log_blocks is not None:
            (query,) = call["params"]
            span = int(query["toBlock"], 16) - int(query["fromBlock"], 16) + 1
            if span > self.max_log_blocks:
                return {
                    "code": -32005,
                    "message": f"block range greater than {self.max_log_blocks} max",
                }
        return None

    async def _with_refusals(self, payload: object, calls: list[dict]) -> web.Response:
        """Answer the refused calls with their errors, as a limited node does, and forward
        the others."""
        assert self._client is not None
        forwarded = [c for c in calls if self._refusal(c) is None]
        answers: dict[object, dict] = {}
        if forwarded:
            async with self._client.post(self.upstream, json=forwarded) as upstream:
                answers = {a["id"]: a for a in await upstream.json()}
        replies = [
            answers.get(c.get("id"))
            or {"jsonrpc": "2.0", "id": c.get("id"), "error": self._refusal(c)}
            for c in calls
        ]
        body = replies if isinstance(payload, list) else replies[0]
        response = web.json_response(body)
        response.force_close()
        return response
