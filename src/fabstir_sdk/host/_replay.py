"""Session inits the host has accepted, per job, kept on disk: each init is accepted once.

A session init is signed by the client and encrypted to the host, so anyone who saw one on
the wire can send it again, and the host would open it: it carries the session key, and the
captured prompts that follow it would decrypt. What the attacker cannot make is a new init:
its ephemeral key is bound by the signature. So the host remembers, for every job it serves,
the ephemeral key and the session key of each init it accepted, and refuses an init that
repeats either (a repeated session key would also restart message indexes under that key).

The record lives as long as the job, across host restarts. It is durable before the host
acknowledges the init: appended to a log file kept open and ``fdatasync``-ed (creating and
fsyncing a file per job cost about twice as long, on the init's critical path), by a writer
thread of its own (``asyncio.to_thread``'s executor hop cost ~130 us of CPU an init against
~70 us; a blocking fdatasync on the event loop, ~185 us, is longer than either). The log is
cut into segments of :data:`SEGMENT_RECORDS` records; a segment is deleted once every job
with a record in it is settled. Records of an older host (one ``<job>.inits`` file per job)
are read too.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import queue
import threading
from pathlib import Path

from ..errors import ReplayedInitError

__all__ = ["SEGMENT_RECORDS", "InitLog", "ReplayedInitError", "init_fingerprints"]

log = logging.getLogger("fabstir_sdk.host")

#: Records (accepted inits) per log segment before the next one is started.
SEGMENT_RECORDS = 4096


def init_fingerprints(ephemeral_key: bytes, session_key: bytes) -> tuple[str, str]:
    """What is remembered of an init: hashes (the session key itself never touches disk)."""
    return (
        "e" + hashlib.sha256(b"fabstir-init-eph\0" + ephemeral_key).hexdigest(),
        "k" + hashlib.sha256(b"fabstir-init-key\0" + session_key).hexdigest(),
    )


class InitLog:
    """Accepted inits per job; ``directory`` None keeps them in memory only (tests, tools)."""

    def __init__(self, directory: Path | None, *, segment_records: int = SEGMENT_RECORDS) -> None:
        self.directory = directory
        self._seen: dict[int, set[str]] = {}
        self._pending: dict[int, set[str]] = {}
        #: Which segments hold records of a job, and which jobs each segment holds.
        self._segments_of: dict[int, set[int]] = {}
        self._jobs_in: dict[int, set[int]] = {}
        self._legacy: set[int] = set()  # jobs with an older host's <job>.inits file
        self._segment_records = segment_records
        self._lock = threading.Lock()  # the writer thread's segment and record count
        #: Records for the writer thread, in order, each with the future it resolves.
        self._writes: queue.SimpleQueue[tuple[bytes, asyncio.Future[int]] | None] = (
            queue.SimpleQueue()
        )
        self._writer: threading.Thread | None = None
        self._starting = threading.Lock()  # a writer's start (or end) and the queue's puts
        self._fd = -1
        self._segment = -1
        self._records = 0
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._read(directory)
            self._roll()  # the first segment of this run, opened before any init
        self._first = self._segment

    def __repr__(self) -> str:
        return f"InitLog(directory={str(self.directory)!r}, jobs={len(self._seen)})"

    def _segment_path(self, segment: int) -> Path:
        assert self.directory is not None
        return self.directory / f"inits-{segment}.log"

    def _read(self, directory: Path) -> None:
        """What earlier runs recorded: every segment, and older hosts' per-job files."""
        for path in directory.glob("*.inits"):
            if path.stem.isdigit():
                job_id = int(path.stem)
                self._legacy.add(job_id)
                self._seen.setdefault(job_id, set()).update(path.read_text().split())
        for path in directory.glob("inits-*.log"):
            number = path.stem.removeprefix("inits-")
            if not number.isdigit():
                continue
            segment = int(number)
            self._segment = max(self._segment, segment)
            jobs = self._jobs_in.setdefault(segment, set())
            for line in path.read_text().splitlines():
                job, _, fp = line.partition(" ")
                if job.isdigit() and fp:  # a torn last line (a crash mid-write) was never acked
                    jobs.add(int(job))
                    self._segments_of.setdefault(int(job), set()).add(segment)
                    self._seen.setdefault(int(job), set()).add(fp)
            if not jobs:
                self._drop_segment(segment)

    def _roll(self) -> None:
        """Start the next segment (under the lock, or before any writer): created and its
        directory entry made durable, so that an fdatasync of an append is enough."""
        assert self.directory is not None
        segment = self._segment + 1
        fd = os.open(self._segment_path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        folder = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._segment, self._records = fd, segment, 0

    def _write_loop(self) -> None:
        """The writer thread: each record appended and durable before its future is done.

        Whatever a write raises fails that record only, as an :class:`OSError` (the host
        refuses the init with ``HOST_STATE_UNAVAILABLE``), and the thread goes on with the
        next. Should the loop itself fail (handing an outcome to its event loop), the thread
        ends, logged, after failing the record it held and those queued, and the next
        :meth:`record` starts a writer anew: no init waits for a write nobody will make.
        """
        item: tuple[bytes, asyncio.Future[int]] | None = None
        try:
            while (item := self._writes.get()) is not None:
                data, writing = item
                try:
                    outcome: tuple[int | None, OSError | None] = (self._append(data), None)
                except BaseException as exc:  # the record fails, not the thread
                    outcome = (None, _write_error(exc))
                _deliver(writing, *outcome)
        except BaseException as exc:
            log.error("the init log's writer stopped: %r", exc, exc_info=exc)
            error = OSError(errno.EIO, f"the init log's writer stopped ({type(exc).__name__})")
            error.__cause__ = exc
            with self._starting:
                if self._writer is threading.current_thread():
                    self._writer = None  # the next record starts another writer
                while item is not None:
                    with contextlib.suppress(Exception):  # each waiter is told, if it can be
                        _deliver(item[1], None, error)
                    try:
                        item = self._writes.get_nowait()
                    except queue.Empty:
                        item = None

    def _append(self, data: bytes) -> int:
        """Append one init's records and make them durable; the segment they went to. Only
        the writer thread writes and rolls (close() waits for it), so it holds the segment's
        descriptor as is: no copy (each syscall is one more wait for the GIL after it)."""
        with self._lock:
            if self._records >= self._segment_records:
                self._roll()
            self._records += 1
            written = os.write(self._fd, data)
            if written != len(data):  # a full disk: the torn line must not run into the next
                self._records = self._segment_records  # the next record starts a new segment
                raise OSError(errno.ENOSPC, f"init log: {written} of {len(data)} bytes written")
            os.fdatasync(self._fd)
            return self._segment

    def _sweep(self) -> None:
        """Delete the segments no unsettled job has a record in, except this run's last
        two: an accepted init's record may be in the one before the current (which rolled
        meanwhile) and not yet counted for its job."""
        for segment, jobs in list(self._jobs_in.items()):
            if not jobs and (segment < self._first or segment < self._segment - 1):
                self._drop_segment(segment)

    def _drop_segment(self, segment: int) -> None:
        self._jobs_in.pop(segment, None)
        with contextlib.suppress(FileNotFoundError):
            self._segment_path(segment).unlink()

    def _load(self, job_id: int) -> set[str]:
        return self._seen.setdefault(job_id, set())

    def claim(self, job_id: int, prints: tuple[str, ...]) -> None:
        """Refuse a replay, else hold ``prints`` while the init is checked (no await between
        a check and a claim, so two copies sent at once cannot both pass)."""
        seen = self._load(job_id)
        pending = self._pending.setdefault(job_id, set())
        for fp in prints:
            if fp in seen or fp in pending:
                what = "ephemeral key" if fp.startswith("e") else "session key"
                raise ReplayedInitError(
                    f"this session init's {what} was used before for job {job_id}: "
                    "a replayed init is refused (send a new init with fresh keys)"
                )
        pending.update(prints)

    def release(self, job_id: int, prints: tuple[str, ...]) -> None:
        """The init was refused for another reason: forget the hold (it was never accepted)."""
        pending = self._pending.get(job_id)
        if pending is not None:
            pending.difference_update(prints)
            if not pending:
                del self._pending[job_id]
        if not self._seen.get(job_id, True):  # nothing accepted: hold no entry for the id
            del self._seen[job_id]

    def record(self, job_id: int, prints: tuple[str, ...]) -> asyncio.Future[int]:
        """Start writing ``prints`` to disk (appended and fdatasynced off the event loop)
        while the init is still being checked; :meth:`commit` waits for it. An init refused
        after all leaves its record on disk, which only keeps that very init refused after
        a restart (it is not remembered in memory: see :meth:`release`)."""
        if self.directory is None:
            done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            done.set_result(-1)
            return done
        data = "".join(f"{job_id} {fp}\n" for fp in prints).encode()
        writing: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        writing.add_done_callback(self._written)
        with self._starting:  # uncontended unless a writer is ending (see _write_loop)
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._write_loop, name="fabstir-init-log", daemon=True
                )
                self._writer.start()
            self._writes.put((data, writing))
        return writing

    def _written(self, writing: asyncio.Future[int]) -> None:
        """A segment that got records is known, so that it is deleted in time even if
        they were only a refused init's (see :meth:`_sweep`)."""
        if not writing.cancelled() and writing.exception() is None:
            self._jobs_in.setdefault(writing.result(), set())

    async def commit(
        self, job_id: int, prints: tuple[str, ...], written: asyncio.Future[int] | None = None
    ) -> None:
        """The init is accepted: remember it for the job's lifetime, in memory at once and
        on disk (``written``: the :meth:`record` started for it) before the caller
        acknowledges.

        Raises :class:`OSError` if the state directory cannot be written; the init stays
        remembered in memory, and the caller refuses it (a host that cannot remember an
        init across a restart must not accept it).
        """
        self._load(job_id).update(prints)
        self.release(job_id, prints)
        if self.directory is None:
            return
        segment = await (written if written is not None else self.record(job_id, prints))
        if job_id in self._seen:  # not settled meanwhile
            self._segments_of.setdefault(job_id, set()).add(segment)
            self._jobs_in.setdefault(segment, set()).add(job_id)

    def job_ids(self) -> list[int]:
        """The jobs with a record on disk (a host restarted finds those of its last run)."""
        if self.directory is None:
            return sorted(self._seen)
        return sorted({*self._segments_of, *self._legacy})

    def forget(self, job_id: int) -> None:
        """The job is settled: no init for it can be accepted any more, by the chain. A
        segment left with no unsettled job is deleted."""
        self._seen.pop(job_id, None)
        self._pending.pop(job_id, None)
        for segment in self._segments_of.pop(job_id, ()):
            self._jobs_in.get(segment, set()).discard(job_id)
        self._sweep()
        if job_id in self._legacy and self.directory is not None:
            self._legacy.discard(job_id)
            try:
                (self.directory / f"{job_id}.inits").unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove the init record of job %s: %s", job_id, exc)

    def close(self) -> None:
        """Close the open segment (a host that stops), after the records queued before."""
        with self._starting:
            writer, self._writer = self._writer, None
            if writer is not None:
                self._writes.put(None)
        if writer is not None:
            writer.join()
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _write_error(exc: BaseException) -> OSError:
    """A failed write as the record's waiter gets it: an OSError as is, anything else (a
    bug, MemoryError, ...) logged and wrapped in one, so that the host refuses the init as
    for a full disk (an asyncio future takes neither StopIteration nor, sensibly, SystemExit)."""
    if isinstance(exc, OSError):
        return exc
    log.error("the init log could not write a record: %r", exc, exc_info=exc)
    error = OSError(errno.EIO, f"the init log could not write a record ({type(exc).__name__})")
    error.__cause__ = exc
    return error


def _deliver(writing: asyncio.Future[int], segment: int | None, error: OSError | None) -> None:
    """Hand a record's outcome to its future's event loop (from the writer thread)."""
    with contextlib.suppress(RuntimeError):  # its event loop is closed: nobody waits
        writing.get_loop().call_soon_threadsafe(_settle, writing, segment, error)


def _settle(writing: asyncio.Future[int], segment: int | None, error: OSError | None) -> None:
    """Resolve a record's future on its event loop (unless its waiter gave up on it)."""
    if writing.done():
        return
    if error is not None:
        writing.set_exception(error)
    else:
        assert segment is not None
        writing.set_result(segment)
