"""The session jobs an agent opened as a payer's delegate, found in the marketplace's logs.

The marketplace indexes jobs by depositor only (``userSessions``): a job an agent opens with
``createSessionForModelAsDelegate`` is its owner's there. The agent is named only in the
job's ``SessionCreatedByDelegate`` event (indexed ``delegate``), so these ids come from
``eth_getLogs`` filtered on that topic, scanned once and then only for new blocks.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..chain.client import Read, block_windows
from ..errors import RpcFailure

if TYPE_CHECKING:
    from ._context import Context

__all__ = ["DelegatedJobs"]

log = logging.getLogger("fabstir_sdk.session")

_EVENT = "SessionCreatedByDelegate"


def _topic(address: str) -> str:
    """An address as a 32-byte log topic."""
    return "0x" + "00" * 12 + address[2:].lower()


@dataclass
class _Scan:
    first: int
    scanned_to: int
    ids: set[int] = field(default_factory=set)


class DelegatedJobs:
    """Ids of the jobs each delegate opened, per address, kept up to date incrementally.

    ``log_window``: blocks per ``eth_getLogs`` at first; a node that refuses a range that
    large (providers cap it, each its own way) gets windows ten times smaller until it
    answers, down to one block. ``max_batch``: requests per HTTP batch.
    """

    log_window = 50_000
    max_batch = 100

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._scans: dict[str, _Scan] = {}
        self._lock = asyncio.Lock()
        self._window = self.log_window

    async def ids(self, delegate: str, *, from_block: int = 0) -> set[int]:
        """Jobs ``delegate`` opened for a payer since ``from_block`` (scanned once; later
        calls read only the blocks mined since). The scan starts at the config's
        ``deployment_block`` if that is later: the marketplace logged nothing before it."""
        from_block = max(from_block, self._ctx.config.deployment_block)
        async with self._lock:
            latest = int(await self._ctx.client.rpc.call("eth_blockNumber"), 16)
            scan = self._scans.get(delegate)
            if scan is None or from_block < scan.first or latest < scan.scanned_to:
                # first scan, an earlier start, or the chain went back (a devnet revert)
                scan = self._scans[delegate] = _Scan(first=from_block, scanned_to=from_block - 1)
            while True:
                try:
                    await self._scan(scan, delegate, latest)
                    return set(scan.ids)
                except RpcFailure as refused:
                    if self._window <= 1:
                        raise
                    self._window = max(1, self._window // 10)
                    log.info(
                        "eth_getLogs refused (%s): scanning %d blocks at a time",
                        refused.node_message,
                        self._window,
                    )

    async def _scan(self, scan: _Scan, delegate: str, latest: int) -> None:
        """Read the logs from ``scan.scanned_to`` to ``latest``; ``scan`` keeps what each
        batch found, so a refused batch costs only itself."""
        mp = self._ctx.contract("job_marketplace")
        topics = [mp.event_topic(_EVENT), None, None, _topic(delegate)]
        windows = block_windows(scan.scanned_to + 1, latest, self._window)
        for start in range(0, len(windows), self.max_batch):
            chunk = windows[start : start + self.max_batch]
            reads = [
                Read.logs(mp.address, topics, low, high, f"logs {_EVENT}") for low, high in chunk
            ]
            for logs in await self._ctx.client.reads(*reads):
                for args in mp.events({"logs": logs}, _EVENT):
                    scan.ids.add(int(args["sessionId"]))
            scan.scanned_to = chunk[-1][1]
        scan.scanned_to = latest
