"""The session jobs an agent opened as a payer's delegate, found in the marketplace's logs.

The marketplace indexes jobs by depositor only (``userSessions``): a job an agent opens with
``createSessionForModelAsDelegate`` is its owner's there. The agent is named only in the
job's ``SessionCreatedByDelegate`` event (indexed ``delegate``), so these ids come from
``eth_getLogs`` filtered on that topic, scanned once and then only for new blocks.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..chain.client import Read

if TYPE_CHECKING:
    from ._context import Context

__all__ = ["DelegatedJobs"]

_EVENT = "SessionCreatedByDelegate"


def _topic(address: str) -> str:
    """An address as a 32-byte log topic."""
    return "0x" + "00" * 12 + address[2:].lower()


def _logs(result: Any) -> list[dict[str, Any]]:
    return list(result or [])


@dataclass
class _Scan:
    first: int
    scanned_to: int
    ids: set[int] = field(default_factory=set)


class DelegatedJobs:
    """Ids of the jobs each delegate opened, per address, kept up to date incrementally.

    ``log_window``: blocks per ``eth_getLogs`` (nodes cap the range of one request);
    ``max_batch``: requests per HTTP batch.
    """

    log_window = 50_000
    max_batch = 100

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._scans: dict[str, _Scan] = {}
        self._lock = asyncio.Lock()

    async def ids(self, delegate: str, *, from_block: int = 0) -> set[int]:
        """Jobs ``delegate`` opened for a payer since ``from_block`` (scanned once; later
        calls read only the blocks mined since)."""
        async with self._lock:
            latest = int(await self._ctx.client.rpc.call("eth_blockNumber"), 16)
            scan = self._scans.get(delegate)
            if scan is None or from_block < scan.first or latest < scan.scanned_to:
                # first scan, an earlier start, or the chain went back (a devnet revert)
                scan = self._scans[delegate] = _Scan(first=from_block, scanned_to=from_block - 1)
            await self._scan(scan, delegate, latest)
            return set(scan.ids)

    async def _scan(self, scan: _Scan, delegate: str, latest: int) -> None:
        mp = self._ctx.contract("job_marketplace")
        reads = [
            Read(
                "eth_getLogs",
                (
                    {
                        "address": mp.address,
                        "topics": [mp.event_topic(_EVENT), None, None, _topic(delegate)],
                        "fromBlock": hex(low),
                        "toBlock": hex(min(latest, low + self.log_window - 1)),
                    },
                ),
                _logs,
                f"logs {_EVENT}",
            )
            for low in range(scan.scanned_to + 1, latest + 1, self.log_window)
        ]
        chunks = [reads[i : i + self.max_batch] for i in range(0, len(reads), self.max_batch)]
        for chunk in chunks:
            for logs in await self._ctx.client.reads(*chunk):
                for args in mp.events({"logs": logs}, _EVENT):
                    scan.ids.add(int(args["sessionId"]))
        scan.scanned_to = latest
