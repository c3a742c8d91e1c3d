"""chain/together.py: one task at a time handles the queue, in the event loop that uses it.

A Together (a TxSender's sends and receipt polls) outlives event loops when its SDK object
does: a notebook, per-test loops, ``asyncio.run`` twice. A task left behind in a dead loop
must not keep the next loop's requests waiting forever."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from fabstir_sdk.chain.together import Together


@dataclass
class Req:
    value: int
    done: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Handler:
    """Answers each request with its value doubled; ``block`` holds a batch (the first
    loop's) until released, which never happens for the abandoned one."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.block = True
        self.entered: asyncio.Event | None = None

    async def __call__(self, batch: list[Req]) -> None:
        self.batches.append([r.value for r in batch])
        if self.block:
            self.block = False
            assert self.entered is not None
            self.entered.set()
            await asyncio.get_running_loop().create_future()  # never settled
        for r in batch:
            r.done.set_result(r.value * 2)


def run_with_deadline(main: Any) -> Any:
    """``asyncio.run(main())`` in a thread; None if it has not returned within 60 s (the
    queue would otherwise hang forever: no assertion here depends on speed)."""
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(main())), daemon=True)
    thread.start()
    thread.join(60)
    return result[0] if result else None


def test_a_task_abandoned_in_a_dead_loop_does_not_stall_the_next_loop():
    """The first loop stops with the handler blocked and is closed without cancelling its
    tasks (a loop a notebook or a test runner drops): the next loop's requests are served,
    and the request left in the dead loop is not handed to the handler again."""
    handler = Handler()
    together: Together[Req] = Together(handler)

    async def first() -> None:
        handler.entered = asyncio.Event()
        asyncio.get_running_loop().create_task(together(Req(1)))
        await handler.entered.wait()
        together._waiting.append(Req(2))  # queued behind the blocked batch, never taken

    loop = asyncio.new_event_loop()
    loop.run_until_complete(first())
    loop.close()  # the task and its blocked batch are abandoned, not cancelled

    async def second() -> list[int]:
        return list(await asyncio.gather(together(Req(3)), together(Req(4))))

    assert run_with_deadline(second) == [6, 8]
    assert handler.batches == [[1], [3, 4]]


def test_a_task_cancelled_before_it_ran_does_not_stall_the_next_asyncio_run():
    """``asyncio.run`` ends while the queue's task is made but has not run a step: the run
    cancels it, its ``finally`` never runs. The next ``asyncio.run`` on the same Together
    is served."""
    handler = Handler()
    handler.block = False
    together: Together[Req] = Together(handler)

    async def first() -> None:
        # returns at once: the caller runs (queues, makes the task) in the loop's last round
        asyncio.get_running_loop().create_task(together(Req(1)))

    asyncio.run(first())
    assert handler.batches == []
    assert together._task is not None and together._task.cancelled()  # left behind

    async def second() -> int:
        return int(await together(Req(5)))

    assert run_with_deadline(second) == 10
    assert handler.batches == [[5]]
