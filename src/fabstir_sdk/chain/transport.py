"""How a JSON-RPC payload reaches a node: the seam between the SDK and the network.

:class:`~fabstir_sdk.chain.rpc.JsonRpcClient` hands its transport one JSON-RPC request
object, or a list of them for a batch, and gets the decoded reply back, as httpx hands a
request to its transport. :class:`HttpTransport` posts it with aiohttp (the default);
:class:`MockTransport` answers with a function of yours, so a test can script a node (a
taken nonce, a lying reply) without a socket::

    def node(payload):
        ...
        return {"jsonrpc": "2.0", "id": payload["id"], "result": "0x1"}

    sdk = FabstirSDK(config, transport=MockTransport(node))

A transport raises :class:`~fabstir_sdk.RpcUnavailableError` when the node could not be
reached or asked to be tried later (the client retries those within ``rpc_retry_for``), and
:class:`~fabstir_sdk.RpcError` for anything else.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from ..errors import RpcError, RpcUnavailableError

__all__ = ["HttpTransport", "MockTransport", "RpcTransport"]


class RpcTransport:
    """Carries JSON-RPC payloads to one node; subclass it and override :meth:`handle`."""

    async def handle(self, payload: Any) -> Any:
        """Send ``payload`` (a request object or a list of them); return the decoded reply."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections; the transport may be used again afterwards."""


class HttpTransport(RpcTransport):
    """JSON-RPC over HTTP POST with aiohttp; proxies from the environment are not used.

    aiohttp's loopback round trip measured ~0.2 ms here against ~0.9 ms for httpx and more
    for web3.py's provider stack, so a transaction costs little more than the node's work.
    """

    #: A reply larger than this is refused (RpcError) without reading the rest: an endpoint
    #: cannot make the SDK buffer an endless answer.
    max_reply_bytes = 64 << 20

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"HttpTransport({self.url!r})"

    async def handle(self, payload: Any) -> Any:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(
                self.url, data=json.dumps(payload), headers={"Content-Type": "application/json"}
            ) as response:
                if response.status == 429 or response.status >= 500:
                    raise RpcUnavailableError(f"HTTP {response.status}")
                response.raise_for_status()
                body = bytearray()
                async for piece in response.content.iter_any():
                    body += piece
                    if len(body) > self.max_reply_bytes:
                        raise RpcError(
                            f"JSON-RPC reply from {self.url} is over {self.max_reply_bytes} bytes"
                        )
                return json.loads(body)
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise RpcUnavailableError(repr(exc)) from exc
        except (aiohttp.ClientError, ValueError) as exc:
            raise RpcError(f"JSON-RPC request to {self.url} failed: {exc!r}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


Handler = Callable[[Any], Any]


class MockTransport(RpcTransport):
    """Answers every payload with ``handler(payload)`` (a plain or an async function)."""

    def __init__(self, handler: Handler | Callable[[Any], Awaitable[Any]]) -> None:
        self._handler = handler

    def __repr__(self) -> str:
        return f"MockTransport({getattr(self._handler, '__name__', self._handler)!r})"

    async def handle(self, payload: Any) -> Any:
        reply = self._handler(json.loads(json.dumps(payload)))  # what a node would see
        if inspect.isawaitable(reply):
            reply = await reply
        return reply
