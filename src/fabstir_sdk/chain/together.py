"""Requests that wait together go together: one task at a time handles what waits.

A caller's request joins a queue; if no task is handling the queue, one starts and takes
everything queued as one batch; requests made while that batch is out wait for the next.
A lone request goes at once; a crowd goes in as many round trips as there are batches
(the transactions and receipt polls of a thousand sessions from one account), not one
round trip each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["Together"]


class Request(Protocol):
    """A queued request: the handler settles ``done``, which its caller awaits."""

    @property
    def done(self) -> asyncio.Future[Any]: ...


R = TypeVar("R", bound=Request)


class Together(Generic[R]):
    """Runs ``handle(batch)`` on the requests waiting, batch after batch, until none wait.

    ``handle`` settles each request's ``done`` future; a request whose caller was cancelled
    before its batch was taken is left out. If ``handle`` raises, the requests it left
    unsettled get the error (cancelled, when the task is: the loop is closing).

    It serves the event loop that calls it: a task left unfinished by a loop that ended is
    replaced in the next loop that calls, and the requests queued in the old loop are
    dropped. It is not thread-safe (one loop at a time).
    """

    def __init__(self, handle: Callable[[list[R]], Awaitable[None]]) -> None:
        self._handle = handle
        self._waiting: list[R] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, request: R) -> Any:
        """Queue ``request`` and wait for its result."""
        loop = asyncio.get_running_loop()
        task = self._task
        if task is not None and (task.done() or task.get_loop() is not loop):
            # Left behind by a loop that ended (a second ``asyncio.run`` with the same SDK
            # object, a notebook's or a test runner's new loop): it will never take the
            # queue again. The requests queued in that loop go with it; their callers are
            # gone and their futures cannot be settled from here.
            self._task = None
            self._waiting = [r for r in self._waiting if r.done.get_loop() is loop]
        self._waiting.append(request)
        if self._task is None:
            self._task = loop.create_task(self._run())
        return await request.done

    async def _run(self) -> None:
        me = asyncio.current_task()
        batch: list[R] = []
        try:
            while self._waiting and self._task is me:  # not replaced (see __call__)
                batch = [r for r in self._waiting if not r.done.done()]  # cancelled: left out
                self._waiting.clear()
                if batch:
                    await self._handle(batch)
        except asyncio.CancelledError:
            for request in [*batch, *self._queue_of(me)]:
                request.done.cancel()
            raise
        except Exception as exc:  # a bug in the handler: its callers hear of it
            for request in [*batch, *self._queue_of(me)]:
                if not request.done.done():
                    request.done.set_exception(exc)
        finally:
            if self._task is me:
                self._task = None

    def _queue_of(self, task: asyncio.Task[Any] | None) -> list[R]:
        """The waiting requests, taken off the queue, if ``task`` still handles it (a task
        replaced by another loop's leaves that loop's queue alone)."""
        if self._task is not task:
            return []
        waiting, self._waiting = self._waiting, []
        return waiting
