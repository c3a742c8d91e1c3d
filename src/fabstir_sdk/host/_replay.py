"""Session inits the host has accepted, per job, kept on disk: each init is accepted once.

A session init is signed by the client and encrypted to the host, so anyone who saw one on
the wire can send it again, and the host would open it: it carries the session key, and the
captured prompts that follow it would decrypt. What the attacker cannot make is a new init:
its ephemeral key is bound by the signature. So the host remembers, for every job it serves,
the ephemeral key and the session key of each init it accepted, and refuses an init that
repeats either (a repeated session key would also restart message indexes under that key).
The record lives as long as the job, across host restarts: one small file per job in the
host's state directory, dropped once the job is settled.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from pathlib import Path

from ..errors import ReplayedInitError

__all__ = ["InitLog", "ReplayedInitError", "init_fingerprints"]

log = logging.getLogger("fabstir_sdk.host")


def _append(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def init_fingerprints(ephemeral_key: bytes, session_key: bytes) -> tuple[str, str]:
    """What is remembered of an init: hashes (the session key itself never touches disk)."""
    return (
        "e" + hashlib.sha256(b"fabstir-init-eph\0" + ephemeral_key).hexdigest(),
        "k" + hashlib.sha256(b"fabstir-init-key\0" + session_key).hexdigest(),
    )


class InitLog:
    """Accepted inits per job; ``directory`` None keeps them in memory only (tests, tools)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._seen: dict[int, set[str]] = {}
        self._pending: dict[int, set[str]] = {}

    def __repr__(self) -> str:
        return f"InitLog(directory={str(self.directory)!r}, jobs={len(self._seen)})"

    def _path(self, job_id: int) -> Path | None:
        return None if self.directory is None else self.directory / f"{job_id}.inits"

    def _load(self, job_id: int) -> set[str]:
        seen = self._seen.get(job_id)
        if seen is None:
            seen = set()
            path = self._path(job_id)
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    seen.update(line for line in path.read_text().split() if line)
            self._seen[job_id] = seen
        return seen

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

    async def commit(self, job_id: int, prints: tuple[str, ...]) -> None:
        """The init is accepted: remember it for the job's lifetime, in memory at once and
        on disk (appended and fsynced off the event loop) before the caller acknowledges.

        Raises :class:`OSError` if the state directory cannot be written; the init stays
        remembered in memory, and the caller refuses it (a host that cannot remember an
        init across a restart must not accept it).
        """
        self._load(job_id).update(prints)
        self.release(job_id, prints)
        path = self._path(job_id)
        if path is not None:
            await asyncio.to_thread(_append, path, "".join(fp + "\n" for fp in prints))

    def job_ids(self) -> list[int]:
        """The jobs with a record on disk (a host restarted finds those of its last run)."""
        if self.directory is None:
            return sorted(self._seen)
        return sorted(
            int(path.stem) for path in self.directory.glob("*.inits") if path.stem.isdigit()
        )

    def forget(self, job_id: int) -> None:
        """The job is settled: no init for it can be accepted any more, by the chain."""
        self._seen.pop(job_id, None)
        self._pending.pop(job_id, None)
        path = self._path(job_id)
        if path is not None:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove %s: %s", path, exc)
