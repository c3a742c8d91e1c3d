"""An exclusive lock across processes on a lock file, cheap enough to take per write."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

__all__ = ["file_lock"]

_LOCK_TIMEOUT = 30.0


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold ``path`` locked: flock where there is one (a few microseconds; filelock's
    bookkeeping costs a hundred times that), else filelock's portable lock."""
    try:
        import fcntl
    except ImportError:  # Windows
        with FileLock(str(path), timeout=_LOCK_TIMEOUT, poll_interval=0.001):
            yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
