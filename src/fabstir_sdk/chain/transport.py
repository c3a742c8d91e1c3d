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
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from ..errors import RpcError, RpcUnavailableError

__all__ = ["HttpTransport", "MockTransport", "RpcTransport", "redact_url"]


#: A path segment that reads as a credential (see :func:`redact_url`).
_KEY_SEGMENT = re.compile(
    r"[0-9A-Fa-f]{16,}"  # Infura's 32 hex digits, Ankr's 64, QuickNode's token
    r"|(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{20,}"  # Alchemy's key
)


def redact_url(url: str) -> str:
    """``url`` fit for a message or a log: credentials in it become ``***``.

    Signer services and RPC providers take credentials in user info
    (``https://user:pass@host``), query values (``?token=...``), and path segments (Alchemy
    ``/v2/<key>``, Infura ``/v3/<32 hex digits>``, QuickNode ``/<token>/``, Ankr
    ``/base/<64 hex digits>``). User info, each query value and the fragment are hidden
    whole. A path segment is hidden when it looks like a key: 16 or more hex digits, or 20
    or more characters of ``[A-Za-z0-9_-]`` with at least one digit and one letter. Shorter
    or ordinary segments (``/v2``, ``/rpc``, ``/base``) are kept, as are the scheme, host and
    port, so the message still says which endpoint failed::

        >>> redact_url("https://base-mainnet.g.alchemy.com/v2/AbCdEf0123456789ghIJkl_mn")
        'https://base-mainnet.g.alchemy.com/v2/***'
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    path = "/".join(
        "***" if _KEY_SEGMENT.fullmatch(segment) else segment for segment in parts.path.split("/")
    )
    query = "&".join(
        f"{name}=***" if sep else "***"
        for name, sep, _ in (piece.partition("=") for piece in parts.query.split("&"))
    )
    return urlunsplit(
        parts._replace(
            netloc=netloc,
            path=path,
            query=query if parts.query else "",
            fragment="***" if parts.fragment else "",
        )
    )


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
        self._shown = redact_url(url)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"HttpTransport({self._shown!r})"

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
                        limit = self.max_reply_bytes
                        raise RpcError(f"JSON-RPC reply from {self._shown} is over {limit} bytes")
                return json.loads(body)
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise RpcUnavailableError(repr(exc)) from exc
        except aiohttp.ClientResponseError as exc:  # its repr holds the URL, credentials too
            raise RpcError(
                f"JSON-RPC request to {self._shown} failed: HTTP {exc.status} {exc.message}"
            ) from None
        except aiohttp.ClientError as exc:  # InvalidURL and kin: the URL is in the text
            raise RpcError(
                f"JSON-RPC request to {self._shown} failed: {type(exc).__name__}"
            ) from None
        except ValueError as exc:  # not JSON
            raise RpcError(f"JSON-RPC request to {self._shown} failed: {exc!r}") from exc

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
