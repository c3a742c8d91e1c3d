"""A small JSON-RPC client for the devnet's own calls: readiness, evm_* methods, deployment.

The SDK talks to contracts through :mod:`fabstir_sdk.chain` (web3). The devnet needs raw,
batched JSON-RPC (anvil's ``evm_*`` methods, 30 transactions in one request), which is
faster this way and keeps web3 out of ``fabstir devnet up``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from ..errors import RpcError

__all__ = ["JsonRpcClient", "RpcFailure"]


class RpcFailure(RpcError):
    """The node answered one call with a JSON-RPC error (``code``, ``data`` kept)."""

    def __init__(self, what: str, error: dict[str, Any]) -> None:
        self.what = what
        self.code: int | None = error.get("code")
        self.data: Any = error.get("data")
        self.node_message = str(error.get("message", "unknown error"))
        super().__init__(f"{what}: {self.node_message}")


class JsonRpcClient:
    """JSON-RPC over HTTP to one node; proxies from the environment are ignored (loopback)."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url
        self._http = httpx.AsyncClient(timeout=timeout, trust_env=False)
        self._next_id = 1

    async def call(self, method: str, *params: Any) -> Any:
        """One call; a JSON-RPC error raises :class:`RpcFailure`."""
        (result,) = await self.batch([(method, params)])
        return result

    async def batch(
        self, calls: Sequence[tuple[str, Sequence[Any]]], *, labels: Sequence[str] = ()
    ) -> list[Any]:
        """Several calls in one HTTP request, results in call order.

        The first failed call raises :class:`RpcFailure`, named by ``labels[i]`` if given.
        """
        if not calls:
            return []
        first, self._next_id = self._next_id, self._next_id + len(calls)
        payload = [
            {"jsonrpc": "2.0", "id": first + i, "method": method, "params": list(params)}
            for i, (method, params) in enumerate(calls)
        ]
        body = await self._post(payload if len(payload) > 1 else payload[0])
        replies = body if isinstance(body, list) else [body]
        by_id = {reply.get("id"): reply for reply in replies if isinstance(reply, dict)}
        results = []
        for i, (method, _params) in enumerate(calls):
            reply = by_id.get(first + i)
            what = labels[i] if i < len(labels) else method
            if reply is None:
                raise RpcError(f"{what}: no answer from {self.url}")
            if "error" in reply:
                raise RpcFailure(what, reply["error"] or {})
            results.append(reply.get("result"))
        return results

    async def _post(self, payload: Any) -> Any:
        try:
            response = await self._http.post(self.url, json=payload)
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, OSError, ValueError) as exc:
            raise RpcError(f"JSON-RPC request to {self.url} failed: {exc!r}") from exc

    async def aclose(self) -> None:
        await self._http.aclose()
