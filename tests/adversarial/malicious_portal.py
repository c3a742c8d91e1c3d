"""A malicious S5 portal: a real portal (``PortalServer``) behind a proxy that lies on demand.

Each misbehaviour is a switch, off by default (then it is an honest portal):

- ``rollback``: registry reads answer with the *oldest* validly signed entry the portal ever
  served for that key (a portal rolled back to an old snapshot, or one hiding new writes);
- ``flip_blobs``: every downloaded blob has one byte flipped;
- ``slow``: every request is held forever (the client's own deadline is the only way out);
- ``lose_writes``: uploads and registry writes are answered as a real portal would (the
  right CID, 204) and thrown away.

The real portal behind it is bound to the proxy's URL (account challenges are bound to the
authority the client sees), so the client never knows there is a proxy.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import defaultdict
from pathlib import Path

import aiohttp
from aiohttp import web

from fabstir_sdk.s5 import blob_id
from fabstir_sdk.s5.server import PortalServer


class MaliciousPortal:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.rollback = False
        self.flip_blobs = False
        self.slow = False
        self.lose_writes = False
        #: Every registry answer served, per ``pk`` query value, oldest first.
        self.registry_answers: dict[str, list[bytes]] = defaultdict(list)
        self.lost: list[str] = []  # what was thrown away ("upload", "registry")
        self.held = 0  # requests being held by ``slow``
        self._release = asyncio.Event()
        self._portal: PortalServer | None = None
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._portal = PortalServer(self.root, public_url=self.url)
        await self._portal.start()
        self._client = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        return self.url

    def answer_again(self) -> None:
        """End ``slow``: held requests and new ones are served."""
        self.slow = False
        self._release.set()
        self._release = asyncio.Event()  # for the next time ``slow`` is switched on

    async def stop(self) -> None:
        self._release.set()  # let held requests go, so the server can stop
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()
        if self._portal is not None:
            await self._portal.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._portal is not None and self._client is not None
        if self.slow:
            self.held += 1
            await self._release.wait()
        body = await request.read()
        path = request.path
        if self.lose_writes and request.method == "POST" and path == "/s5/upload":
            self.lost.append("upload")
            return web.json_response({"cid": blob_id(body).legacy_cid()})
        if self.lose_writes and request.method == "POST" and path == "/s5/registry":
            self.lost.append("registry")
            return web.Response(status=204)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        async with self._client.request(
            request.method,
            f"http://127.0.0.1:{self._portal.port}{request.path_qs}",
            data=body or None,
            headers=headers,
        ) as upstream:
            answer = await upstream.read()
            status, kind = upstream.status, upstream.content_type
        if path == "/s5/registry" and request.method == "GET" and status == 200:
            pk = request.query.get("pk", "")
            history = self.registry_answers[pk]
            if answer not in history:
                history.append(answer)
            if self.rollback:
                answer = history[0]
        elif path.startswith("/s5/download/") and status == 200 and self.flip_blobs and answer:
            flipped = bytearray(answer)
            flipped[len(flipped) // 2] ^= 0x01
            answer = bytes(flipped)
        return web.Response(body=answer, status=status, content_type=kind)

    def revisions_served(self, pk: str) -> list[int]:
        return [json.loads(a)["revision"] for a in self.registry_answers[pk]]
