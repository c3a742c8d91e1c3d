"""Run until SIGINT or SIGTERM: the one copy of the loop every serving command needs."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator

__all__ = ["stop_signals"]


@contextlib.contextmanager
def stop_signals() -> Iterator[asyncio.Event]:
    """An event that SIGINT (Ctrl-C) or SIGTERM sets while the block runs, so a server's
    ``await stop.wait()`` returns and its clean-up (settling, stopping) runs in order.

    The handlers are removed when the block ends. Where the loop cannot take signal
    handlers (Windows), Ctrl-C interrupts instead.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    try:
        yield stop
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
