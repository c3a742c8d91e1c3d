"""JSON-RPC with batches and retries: the client under every chain operation.

One batch carries all of an operation's reads, so checking a session job before sending it
costs one round trip however many values it needs. The bytes travel by a transport
(:mod:`fabstir_sdk.chain.transport`: aiohttp by default, or a test's own).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

from ..errors import RpcError, RpcFailure, RpcUnavailableError
from .transport import HttpTransport, RpcTransport, redact_url

__all__ = ["RETRY_SAFE", "JsonRpcClient", "RpcFailure", "unreachable_reason"]

log = logging.getLogger("fabstir_sdk.chain")

#: Methods a lost request may repeat without effect. eth_sendRawTransaction is among them
#: because the SDK only ever resends the same signed bytes: the same transaction hash.
RETRY_SAFE = frozenset(
    {
        "eth_blockNumber",
        "eth_call",
        "eth_chainId",
        "eth_estimateGas",
        "eth_feeHistory",
        "eth_gasPrice",
        "eth_getBalance",
        "eth_getBlockByNumber",
        "eth_getLogs",
        "eth_getTransactionByHash",
        "eth_getTransactionCount",
        "eth_getTransactionReceipt",
        "eth_maxPriorityFeePerGas",
        "eth_sendRawTransaction",
    }
)


_FIRST_DELAY = 0.05


def unreachable_reason(exc: BaseException) -> str:
    """Why a node could not be reached, in words ("connection refused"), not a repr."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    errno = getattr(getattr(exc, "os_error", None), "errno", None) or getattr(exc, "errno", None)
    if isinstance(errno, int) and errno:
        return os.strerror(errno).lower()
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "cannot connect"
    text = str(exc)
    return text if text.startswith("HTTP ") else f"{type(exc).__name__}: {text}"[:200]


class JsonRpcClient:
    """JSON-RPC to one node, over ``transport`` (default: HTTP to ``url``).

    With ``retry_for > 0``, a batch made only of :data:`RETRY_SAFE` methods is retried with
    backoff while the node is unreachable, times out or answers 429/5xx, for up to
    ``retry_for`` seconds; then :class:`RpcUnavailableError`.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        retry_for: float = 0.0,
        transport: RpcTransport | None = None,
    ) -> None:
        self.url = url
        self._shown = redact_url(url)  # for messages and logs: no credentials
        self.retry_for = retry_for
        self.transport = transport or HttpTransport(url, timeout=timeout)
        self._next_id = 1

    def __repr__(self) -> str:
        return f"JsonRpcClient({self._shown!r})"

    async def call(self, method: str, *params: Any) -> Any:
        """One call; a JSON-RPC error raises :class:`RpcFailure`."""
        (result,) = await self.batch([(method, params)])
        return result

    async def batch(
        self,
        calls: Sequence[tuple[str, Sequence[Any]]],
        *,
        labels: Sequence[str] = (),
        return_errors: bool = False,
    ) -> list[Any]:
        """Several calls in one HTTP request, results in call order.

        A failed call raises :class:`RpcFailure` (named by ``labels[i]`` if given), or with
        ``return_errors=True`` takes its place in the result list.
        """
        if not calls:
            return []
        first, self._next_id = self._next_id, self._next_id + len(calls)
        payload = [
            {"jsonrpc": "2.0", "id": first + i, "method": method, "params": list(params)}
            for i, (method, params) in enumerate(calls)
        ]
        retry = self.retry_for > 0 and all(method in RETRY_SAFE for method, _ in calls)
        body = await self._post(payload if len(payload) > 1 else payload[0], retry=retry)
        replies = body if isinstance(body, list) else [body]
        by_id = {
            reply["id"]: reply
            for reply in replies
            if isinstance(reply, dict) and isinstance(reply.get("id"), int)
        }
        results: list[Any] = []
        for i, (method, _params) in enumerate(calls):
            reply = by_id.get(first + i)
            what = labels[i] if i < len(labels) else method
            if reply is None:
                raise RpcError(f"{what}: no answer from {self._shown}")
            if "error" in reply:
                error = reply["error"]
                failure = RpcFailure(what, error if isinstance(error, dict) else {"data": error})
                if not return_errors:
                    raise failure
                results.append(failure)
            else:
                results.append(reply.get("result"))
        return results

    async def _post(self, payload: Any, *, retry: bool) -> Any:
        deadline = time.monotonic() + self.retry_for
        delay = _FIRST_DELAY
        while True:
            try:
                return await self.transport.handle(payload)
            except RpcUnavailableError as exc:
                cause = exc.__cause__ or exc
                why = unreachable_reason(cause)
                if not retry:
                    raise RpcUnavailableError(
                        f"RPC endpoint {self._shown} unreachable ({why})"
                    ) from cause
                if delay == _FIRST_DELAY:  # one line per request kept waiting: the rest is DEBUG
                    log.warning(
                        "RPC endpoint %s unreachable (%s); retrying for up to %g s",
                        self._shown,
                        why,
                        self.retry_for,
                    )
                if time.monotonic() + delay > deadline:
                    raise RpcUnavailableError(
                        f"RPC endpoint {self._shown} unreachable for {self.retry_for:g} s ({why}): "
                        "is the node running, and is the URL right?"
                    ) from cause
                log.debug(
                    "JSON-RPC to %s failed (%r); retrying in %.2f s", self._shown, cause, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def aclose(self) -> None:
        await self.transport.aclose()
