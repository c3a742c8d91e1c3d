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
import contextlib
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
        loop = runner.get_loop()
        handled = False
        # Only where the Runner handles SIGINT itself: not where SIGINT is ignored (a
        # background job of a shell), which would leave SIGTERM doing nothing at all.
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                # Re-raised as SIGINT, the Runner's own handler cancels the main task (and a
                # second signal interrupts at once), exactly as for Ctrl-C.
                loop.add_signal_handler(signal.SIGTERM, signal.raise_signal, signal.SIGINT)
                handled = True
        try:
            return runner.run(main)
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGTERM)
