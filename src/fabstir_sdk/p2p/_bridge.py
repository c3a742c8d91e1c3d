"""Run trio on its own thread and call across to and from asyncio.

py-libp2p is trio-only and cannot share the application's asyncio loop, so the node lives on
one daemon thread running ``trio.run``. The bridge posts work with ``TrioToken.run_sync_soon``
(asyncio -> trio) and ``loop.call_soon_threadsafe`` / ``run_coroutine_threadsafe`` (trio ->
asyncio); no executor threads are used. Rules that keep it sound:

* asyncio code never touches trio or libp2p objects; it only hands functions to :meth:`call`.
* Cancelling the asyncio caller cancels the trio task, and :meth:`call` returns only after
  the trio task has finished, so nothing keeps running behind the caller's back.
* Cancelling the trio side of :meth:`to_asyncio` cancels the asyncio task the same way.
* :meth:`stop` ends ``trio.run`` and joins the thread: no thread, task or socket survives.

trio itself (~0.15 s) and libp2p (~0.6 s) are imported on the trio thread, so starting a
node never stalls the asyncio loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import FabstirError, P2PNodeClosedError, P2PTimeoutError
from ._errors import translate

if TYPE_CHECKING:
    import trio

__all__ = ["TrioBridge"]

log = logging.getLogger("fabstir_sdk.p2p")

T = TypeVar("T")
#: How long a cancelled caller waits for the trio task to notice, before giving up on it.
_CANCEL_GRACE = 5.0
_STOP_TIMEOUT = 10.0


class TrioBridge:
    """One trio thread serving one asyncio loop."""

    def __init__(self, name: str = "fabstir-p2p") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop_event: trio.Event | None = None
        self._finished: asyncio.Future[None] | None = None
        self._closed = False
        self._crash: BaseException | None = None
        self._pending: set[asyncio.Future[Any]] = set()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"TrioBridge({self._name!r}, {state})"

    @property
    def running(self) -> bool:
        return self._token is not None and not self._closed

    async def start(self, main: Callable[..., Awaitable[Any]]) -> Any:
        """Start the thread and run ``main(task_status=...)`` in its root nursery.

        ``main`` calls ``task_status.started(value)`` once it is ready (``value`` is returned
        here) and then runs until the bridge stops. If it fails first, its error is raised.
        """
        if self._thread is not None:
            raise P2PNodeClosedError("this bridge was already started")
        loop = self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[Any] = loop.create_future()
        self._finished = loop.create_future()
        self._thread = threading.Thread(
            target=self._thread_main, args=(main, ready), name=self._name, daemon=True
        )
        self._thread.start()
        try:
            return await asyncio.shield(ready)
        except BaseException:
            await self.stop()
            raise

    def _thread_main(self, main: Callable[..., Awaitable[Any]], ready: asyncio.Future[Any]) -> None:
        try:
            import trio

            trio.run(self._trio_main, main, ready)
        except BaseException as exc:  # the run itself failed; _trio_main reports the rest
            self._crash = exc
            self._post(ready, exception=translate(exc))
        finally:
            self._token = None
            self._closed = True
            assert self._loop is not None and self._finished is not None
            with contextlib.suppress(RuntimeError):  # the asyncio loop is already closed
                self._loop.call_soon_threadsafe(self._fail_pending)
            self._post(self._finished, result=None)

    def _fail_pending(self) -> None:
        """On the asyncio loop, once trio has ended: no caller waits forever."""
        for future in list(self._pending):
            if not future.done():
                future.set_exception(P2PNodeClosedError("the P2P node stopped"))
        self._pending.clear()

    async def _trio_main(
        self, main: Callable[..., Awaitable[Any]], ready: asyncio.Future[Any]
    ) -> None:
        import trio

        self._token = trio.lowlevel.current_trio_token()
        self._stop_event = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                value = await nursery.start(main)
                self._post(ready, result=value)
                await self._stop_event.wait()
                nursery.cancel_scope.cancel()
        except BaseException as exc:
            self._crash = exc
            if ready.done():
                log.warning("the P2P node stopped on an error: %s", translate(exc))
            self._post(ready, exception=translate(exc))
        finally:
            self._nursery = None

    def _post(
        self,
        future: asyncio.Future[Any],
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        """Resolve an asyncio future from the trio thread (if it is still pending)."""

        def settle() -> None:
            if future.done():
                return
            if exception is not None:
                future.set_exception(exception)
            else:
                future.set_result(result)

        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(settle)

    async def call(
        self,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109 (enforced on the trio side)
    ) -> T:
        """``await fn(*args)`` on the trio thread; its result or typed error comes back.

        ``timeout`` runs on the trio side and raises :class:`P2PTimeoutError`. Cancelling the
        caller cancels ``fn`` and waits for it to finish.
        """
        token = self._token
        if token is None or self._closed:
            raise P2PNodeClosedError("the P2P node is not running")
        import trio  # already loaded by the trio thread

        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._pending.add(done)
        done.add_done_callback(self._pending.discard)
        done.add_done_callback(_consume)
        scopes: list[trio.CancelScope] = []  # filled on the trio thread, before any cancel
        by_caller = threading.Event()  # set when the asyncio side asked for cancellation

        async def runner(scope: trio.CancelScope) -> None:
            try:
                with scope:
                    if timeout is not None:
                        scope.deadline = trio.current_time() + timeout
                    value = await fn(*args)
                    self._post(done, result=value)
                    return
                if by_caller.is_set():
                    self._post(done, exception=asyncio.CancelledError())
                elif self._stop_event is not None and self._stop_event.is_set():
                    self._post(done, exception=P2PNodeClosedError("the P2P node stopped"))
                else:
                    self._post(done, exception=P2PTimeoutError(f"no answer within {timeout:g} s"))
            except BaseException as exc:
                if isinstance(exc, trio.Cancelled) or _only_cancelled(exc):
                    self._post(done, exception=P2PNodeClosedError("the P2P node stopped"))
                    raise
                self._post(done, exception=translate(exc))

        def spawn() -> None:
            if self._nursery is None:
                self._post(done, exception=P2PNodeClosedError("the P2P node is not running"))
                return
            scope = trio.CancelScope()
            scopes.append(scope)
            self._nursery.start_soon(runner, scope)

        def cancel() -> None:
            for scope in scopes:
                scope.cancel()

        try:
            token.run_sync_soon(spawn)
        except trio.RunFinishedError:
            raise P2PNodeClosedError("the P2P node is not running") from None
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            by_caller.set()
            try:
                token.run_sync_soon(cancel)
                await asyncio.wait_for(asyncio.shield(done), _CANCEL_GRACE)
            except (trio.RunFinishedError, asyncio.CancelledError, TimeoutError, FabstirError):
                pass
            raise

    async def to_asyncio(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """From the trio thread: ``await fn(*args)`` on the asyncio loop.

        Cancelling the trio caller (a deadline, the node stopping) cancels the asyncio task.
        """
        if self._loop is None or self._loop.is_closed():
            raise P2PNodeClosedError("the asyncio loop is gone")
        import trio

        token = trio.lowlevel.current_trio_token()
        arrived = trio.Event()
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            _as_coroutine(fn, *args), self._loop
        )

        def wake(_: concurrent.futures.Future[T]) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(arrived.set)

        future.add_done_callback(wake)
        try:
            await arrived.wait()
        finally:
            if not future.done():
                future.cancel()
        return future.result()

    async def stop(self) -> None:
        """End the trio run and join the thread. Safe to call more than once."""
        thread = self._thread
        if thread is None:
            return
        token, event = self._token, self._stop_event
        if token is not None and event is not None:
            try:
                token.run_sync_soon(event.set)
            except Exception as exc:  # trio.RunFinishedError: it has ended already
                if type(exc).__name__ != "RunFinishedError":
                    raise
        if self._finished is not None:
            await asyncio.wait_for(asyncio.shield(self._finished), _STOP_TIMEOUT)
        thread.join(_STOP_TIMEOUT)
        self._closed = True


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark an outcome as seen: a caller that gave up must not cause a warning later."""
    if not future.cancelled():
        future.exception()


async def _as_coroutine(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await fn(*args)


def _only_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_cancelled(e) for e in exc.exceptions)
    return type(exc).__name__ == "Cancelled"
