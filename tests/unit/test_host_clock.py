"""The host's shared chain clock: a wait that is already due is not held until the reader's
next poll (a final proof queued behind a dispute-window wait took up to a poll longer)."""

from __future__ import annotations

import asyncio

import pytest

from fabstir_sdk.host._clock import ChainClock


async def test_a_new_wait_already_due_is_answered_at_the_next_read():
    now = 1_000
    reads = 0
    read_done = asyncio.Event()

    async def read() -> int:
        nonlocal reads
        reads += 1
        read_done.set()
        return now

    clock = ChainClock(read, poll=3600)  # a reader that slept a poll would never return here
    far = asyncio.ensure_future(clock.until(now + 10_000))  # a dispute window, say
    await read_done.wait()
    await asyncio.sleep(0)  # the reader is asleep now
    assert reads == 1 and not far.done()
    assert await clock.until(now - 5) == now  # due already: one more read, no poll
    assert reads == 2 and not far.done()
    await clock.aclose()
    with pytest.raises(asyncio.CancelledError):
        await far
