"""Rollback protection: a portal may not serve a registry entry older than one already seen.

A registry entry is signed by its owner, so a portal cannot forge one; it can still hand out
an *older* validly signed entry (a directory as it was before the last writes), and a write
that builds on it would drop what came after. :class:`RevisionGuard` sits in front of a
store and remembers, per registry key, the highest revision this user has read or written.
An older one (or none at all, where one was seen) raises :class:`RegistryRollbackError`,
and a write never goes out with a revision at or below a seen one.

The high-water marks live in one small file per user and portal (``storage_dir/revisions``),
written atomically and merged with what other processes of the same user wrote there, so a
restarted process remembers them too. The file holds registry public keys and counters only
(the portal sees both anyway), under a name that is a hash under the user's secret.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from ..errors import RegistryRollbackError, RevisionConflictError
from ._blob import BlobId
from ._lockfile import file_lock
from ._registry import RegistryEntry
from ._store import BlobSource, Store

__all__ = ["RevisionGuard"]


class RevisionGuard(Store):
    """``inner`` refusing registry rollbacks, with the revisions seen kept in ``path``."""

    def __init__(self, inner: Store, path: str | Path) -> None:
        self.inner = inner
        self.path = Path(path)
        self._lock_path = str(self.path) + ".lock"
        self._tmp_path = str(self.path) + ".tmp"
        self._seen: dict[bytes, int] = self._read()
        self._dir_made = False
        self._written: tuple[int, int, int] | None = None  # the file as this process wrote it
        self._writing = asyncio.Lock()
        self._changes = self._written_changes = 0  # marks raised, and written to the file

    def __repr__(self) -> str:
        return f"RevisionGuard({self.inner!r}, keys={len(self._seen)})"

    def highest_seen(self, pk: bytes) -> int | None:
        """The highest revision of ``pk`` this user has read or written, if any."""
        return self._seen.get(pk)

    # ------------------------------------------------------------------ the file

    def _read(self) -> dict[bytes, int]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # unreadable: start over rather than refuse all storage
        if not isinstance(raw, dict):
            return {}
        seen: dict[bytes, int] = {}
        for key, value in raw.items():
            try:
                pk = bytes.fromhex(key)
            except ValueError:
                continue
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                seen[pk] = value
        return seen

    def _persist(
        self, seen: dict[bytes, int], *, wait: bool = True
    ) -> tuple[bool, dict[bytes, int] | None]:
        """Write ``seen`` (a copy: this may run in a worker thread, while the loop adds
        marks) to the file, merged with the file's if another process replaced it since
        this one wrote it; returns whether it wrote (False only without ``wait``, when
        another writer holds the file's lock) and the merged marks when it read them."""
        # Runs after every registry write (once per stored answer of a session): the file
        # is read again only if another process replaced it since this one wrote it; the
        # lock is a bare flock and the file is written with plain os calls (the lock
        # library and pathlib were most of this write's CPU).
        if not self._dir_made:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._dir_made = True
        with file_lock(self._lock_path, wait=wait) as held:
            if not held:
                return False, None
            merged, read = seen, None
            if self._stamp() != self._written:  # another process of this user may have seen more
                merged = read = self._read()
                for pk, revision in seen.items():
                    if merged.get(pk, -1) < revision:
                        merged[pk] = revision
            data = json.dumps({pk.hex(): r for pk, r in merged.items()}).encode()
            fd = os.open(self._tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(self._tmp_path, self.path)
            self._written = self._stamp()
        return True, read

    def _stamp(self) -> tuple[int, int, int] | None:
        """Which version of the file is there (inode, mtime, size); None if none is."""
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    async def _saw(self, entry: RegistryEntry) -> None:
        if self._seen.get(entry.pk, -1) >= entry.revision:
            return
        self._seen[entry.pk] = entry.revision
        self._changes += 1
        mine = self._changes
        # One write at a time, each of every mark seen so far (a later copy written before
        # an earlier one would lose marks); one that waited may find its mark written. The
        # marks are read and changed on the loop's thread only: the worker gets a copy (a
        # thread iterating them while the loop added one failed, "dictionary changed size").
        async with self._writing:
            if self._written_changes >= mine:
                return
            changes = self._changes
            seen = dict(self._seen)
            # In the loop when the file's lock is free (a hand-off to a thread cost more
            # CPU than this small write), in a thread while another writer holds it.
            written, merged = self._persist(seen, wait=False)
            if not written:
                written, merged = await asyncio.to_thread(self._persist, seen)
            self._written_changes = changes
        for pk, revision in (merged or {}).items():
            if self._seen.get(pk, -1) < revision:
                self._seen[pk] = revision

    # ------------------------------------------------------------------ Store

    async def put_blob(self, source: BlobSource) -> BlobId:
        return await self.inner.put_blob(source)

    def read_blob(self, blob: BlobId) -> AsyncIterator[bytes]:
        return self.inner.read_blob(blob)

    async def get_blob(self, blob: BlobId) -> bytes:
        return await self.inner.get_blob(blob)

    async def registry_get(self, pk: bytes) -> RegistryEntry | None:
        # judged against what was seen when the read was sent: a write of this process that
        # lands while the read is on its way is not a rollback (500 sessions of one user,
        # reading and writing one directory, met that)
        known = self._seen.get(pk)
        entry = await self.inner.registry_get(pk)
        if known is not None and (entry is None or entry.revision < known):
            served = "no entry" if entry is None else f"revision {entry.revision}"
            raise RegistryRollbackError(
                f"the S5 portal served {served} for a registry entry this user has seen at "
                f"revision {known}: refused (a stale or rolled-back portal)"
            )
        if entry is not None:
            await self._saw(entry)
        return entry

    def _check_write(self, entry: RegistryEntry) -> None:
        known = self._seen.get(entry.pk)
        if known is not None and entry.revision <= known:
            raise RevisionConflictError(
                f"registry write: revision {entry.revision} is not above the seen {known}"
            )

    async def registry_set(self, entry: RegistryEntry) -> None:
        self._check_write(entry)
        await self.inner.registry_set(entry)
        await self._saw(entry)

    async def publish(
        self, record: bytes, entry: RegistryEntry, blobs: Sequence[bytes] = ()
    ) -> None:
        self._check_write(entry)
        await self.inner.publish(record, entry, blobs)
        await self._saw(entry)

    async def flush(self) -> int:
        """Send what the inner store queued (0 if it has no queue)."""
        flush = getattr(self.inner, "flush", None)
        return int(await flush()) if flush is not None else 0

    async def aclose(self) -> None:
        await self.inner.aclose()
