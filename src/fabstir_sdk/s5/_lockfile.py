"""An exclusive lock across processes on a lock file, cheap enough to take per write."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["file_lock"]

_LOCK_TIMEOUT = 30.0


@contextlib.contextmanager
def file_lock(path: str | Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold ``path`` locked: flock where there is one (a few microseconds; filelock's
    bookkeeping costs a hundred times that), else filelock's portable lock. Yields True
    once held; with ``wait=False`` it yields False at once (not held) if another holder,
    in this process or another, has it."""
    try:
        import fcntl
    except ImportError:  # Windows
        lock = FileLock(str(path), timeout=_LOCK_TIMEOUT if wait else 0, poll_interval=0.001)
        try:
            lock.acquire()
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock
