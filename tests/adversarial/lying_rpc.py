"""A lying JSON-RPC endpoint: the real node behind tests/integration/rpc_proxy.py's proxy,
with answers rewritten on demand (each a switch, off by default):

- ``chain_id``: ``eth_chainId`` answers this id instead of the node's;
- ``foreign_receipt``: receipt polls are answered with the receipt of this other tx hash;
- ``revert_receipts``: receipts say ``status: 0x0`` although the transaction succeeded;
- ``truncate``: every answer is cut in half (invalid JSON);
- ``oversize``: every answer is padded with this many bytes of whitespace.
"""

from __future__ import annotations

import json

import rlp
from aiohttp import web

from tests.integration.rpc_proxy import RpcProxy


class LyingRpc(RpcProxy):
    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.chain_id: int | None = None
        self.foreign_receipt: str | None = None
        self.revert_receipts = False
        self.truncate = False
        self.oversize = 0
        self.lies = 0
        self.raw_sent: list[str] = []  # every eth_sendRawTransaction payload, as sent

    def signed_chain_ids(self) -> list[int]:
        """The chain id inside each signed (EIP-1559) transaction that went through."""
        ids = []
        for raw in self.raw_sent:
            data = bytes.fromhex(raw.removeprefix("0x"))
            assert data[0] == 2, "an EIP-1559 transaction"
            ids.append(int.from_bytes(rlp.decode(data[1:])[0], "big"))
        return ids

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        payload = json.loads(body)
        calls = payload if isinstance(payload, list) else [payload]
        self.seen.update(c.get("method", "") for c in calls)
        assert self._client is not None
        rewritten = []
        for call in calls:
            if call.get("method") == "eth_sendRawTransaction":
                self.raw_sent.extend(call.get("params", []))
            if call.get("method") == "eth_getTransactionReceipt" and self.foreign_receipt:
                call = {**call, "params": [self.foreign_receipt]}
            rewritten.append(call)
        sent = rewritten if isinstance(payload, list) else rewritten[0]
        async with self._client.post(self.upstream, json=sent) as upstream:
            answer = await upstream.json(content_type=None)
        replies = answer if isinstance(answer, list) else [answer]
        methods = {c.get("id"): c.get("method") for c in calls}
        for reply in replies:
            method = methods.get(reply.get("id"))
            if method == "eth_chainId" and self.chain_id is not None:
                reply["result"] = hex(self.chain_id)
                self.lies += 1
            elif method == "eth_getTransactionReceipt" and reply.get("result"):
                if self.revert_receipts:
                    reply["result"]["status"] = "0x0"
                    self.lies += 1
                if self.foreign_receipt:
                    self.lies += 1
        raw = json.dumps(answer).encode()
        if self.truncate:
            raw = raw[: len(raw) // 2]
            self.lies += 1
        if self.oversize:
            raw = raw + b" " * self.oversize
            self.lies += 1
        response = web.Response(body=raw, content_type="application/json")
        response.force_close()
        return response
