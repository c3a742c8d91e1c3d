"""The chain's clock, read by one task for every job that waits on it.

A host waits on chain time for two things: a claim the proof rate limit does not allow yet,
and the dispute window before it may complete a job. One reader serves every waiter: a host
settling a thousand jobs reads the pending block once per poll, not once per job per poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

__all__ = ["ChainClock"]


def to_next_second() -> float:
    """Seconds until the wall clock's next whole second (and a little): a chain's block
    timestamps count whole seconds of the wall clock, so a wait for the chain's clock is
    over then, not a fixed poll later."""
    return 1.0 - time.time() % 1.0 + 0.005


class ChainClock:
    """``await clock.until(t)``: returns the chain's time once it is at least ``t``.

    ``read`` returns the chain's time (the pending block's timestamp); it is called at most
    every ``poll`` seconds while anyone waits, and sooner when the earliest wait ends at the
    next second. A failed read fails every wait in progress.
    """

    def __init__(self, read: Callable[[], Awaitable[int]], poll: float) -> None:
        self._read = read
        self._poll = poll
        self._waits: list[tuple[int, asyncio.Future[int]]] = []
        self._reader: asyncio.Task[None] | None = None
        self._new = asyncio.Event()  # a wait came in: it may be due now, read at once

    def __repr__(self) -> str:
        return f"ChainClock(waits={len(self._waits)}, poll={self._poll})"

    async def until(self, timestamp: int) -> int:
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waits.append((timestamp, done))
        self._new.set()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._tick(), name="fabstir-chain-clock")
        return await done

    async def _tick(self) -> None:
        while True:
            self._waits = [(t, f) for t, f in self._waits if not f.done()]
            if not self._waits:
                return
            try:
                now = await self._read()
            except Exception as exc:
                for _, waiting in self._waits:
                    if not waiting.done():
                        waiting.set_exception(exc)
                continue
            later = []
            for timestamp, waiting in self._waits:
                if waiting.done():
                    continue
                if now >= timestamp:
                    waiting.set_result(now)
                else:
                    later.append((timestamp, waiting))
            self._waits = later
            if later:
                earliest = min(t for t, _ in later)
                delay = min(self._poll, earliest - now - 1 + to_next_second())
                self._new.clear()
                with contextlib.suppress(TimeoutError):  # a new wait is not held a poll
                    await asyncio.wait_for(self._new.wait(), delay)

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        for _, waiting in self._waits:
            waiting.cancel()
        self._waits = []
