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
    """

    def __init__(self, handle: Callable[[list[R]], Awaitable[None]]) -> None:
        self._handle = handle
        self._waiting: list[R] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, request: R) -> Any:
        """Queue ``request`` and wait for its result."""
        self._waiting.append(request)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return await request.done

    async def _run(self) -> None:
        batch: list[R] = []
        try:
            while self._waiting:
                batch = [r for r in self._waiting if not r.done.done()]  # cancelled: left out
                self._waiting.clear()
                if batch:
                    await self._handle(batch)
        except asyncio.CancelledError:
            for request in [*batch, *self._waiting]:
                request.done.cancel()
            self._waiting.clear()
            raise
        except Exception as exc:  # a bug in the handler: its callers hear of it
            for request in [*batch, *self._waiting]:
                if not request.done.done():
                    request.done.set_exception(exc)
            self._waiting.clear()
        finally:
            self._task = None
