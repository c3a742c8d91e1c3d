"""``fabstir_sdk.run``: ``asyncio.run`` where SIGTERM does what Ctrl-C does.

Under ``asyncio.run``, Ctrl-C cancels the main task: ``async with`` blocks and ``finally``
clauses run, so a session is ended or completed and its money settled, then
``KeyboardInterrupt`` is raised. SIGTERM (``kill``, ``docker stop``, systemd, a CI runner's
timeout) kills the process outright, and nothing settles until the host gives up on the
session. :func:`run` gives SIGTERM the Ctrl-C path: the same cancellation, the same clean-up,
the same ``KeyboardInterrupt`` at the end. The ``fabstir`` commands run this way.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run"]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """Run ``main`` like :func:`asyncio.run`; SIGTERM interrupts it as Ctrl-C would.

    Only in the main thread (signals are delivered there); elsewhere, and on platforms
    without ``loop.add_signal_handler`` (Windows), it is plain ``asyncio.run``.
    """
    with asyncio.Runner(debug=debug) as runner:
        if threading.current_thread() is not threading.main_thread():
            return runner.run(main)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            return _run_as_ctrl_c(runner, main)
        # SIGINT ignored (a shell's background job) or taken by the embedding program: the
        # Runner does not handle it, so SIGTERM cancels ``main`` here, as Ctrl-C would.
        return _run_terminable(runner, main)


def _run_as_ctrl_c(runner: asyncio.Runner, main: Coroutine[Any, Any, T]) -> T:
    """SIGTERM re-raised as SIGINT: the Runner's own handler cancels the main task (and a
    second signal interrupts at once), exactly as for Ctrl-C."""
    loop = runner.get_loop()
    try:
        loop.add_signal_handler(signal.SIGTERM, signal.raise_signal, signal.SIGINT)
    except (NotImplementedError, RuntimeError):
        return runner.run(main)
    try:
        return runner.run(main)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _run_terminable(runner: asyncio.Runner, main: Coroutine[Any, Any, T]) -> T:
    """The Runner's Ctrl-C logic for SIGTERM alone: the first cancels ``main`` and ends in
    ``KeyboardInterrupt``; a second interrupts at once."""
    loop = runner.get_loop()
    task: asyncio.Task[T] | None = None
    terms = 0

    async def guarded() -> T:
        nonlocal task
        task = asyncio.current_task()
        return await main

    def on_term() -> None:
        nonlocal terms
        terms += 1
        if terms > 1 or task is None:
            raise KeyboardInterrupt
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGTERM, on_term)
    except (NotImplementedError, RuntimeError):
        return runner.run(main)
    try:
        return runner.run(guarded())
    except asyncio.CancelledError:
        if terms:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
