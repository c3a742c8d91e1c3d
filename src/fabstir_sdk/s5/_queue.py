"""A write queue in front of a portal: what cannot reach the portal waits on disk, sealed.

:class:`QueuedStore` wraps a :class:`Store` (the portal client). When a write fails with
StorageUnavailableError, the blob or registry entry goes to a queue directory instead, one
file per item, each sealed with XChaCha20-Poly1305 under a key derived from the user's S5
identity and the file's random name. Reads look in the queue first, so a queued directory
or file reads back at once. While the portal is down the store stops asking it for
``retry_after`` seconds (writes queue at disk speed, not at retry speed); the next call
after that flushes the queue first (blobs before the registry entries that point to them),
and ``flush()`` does it on demand. A new process with the same key and directory finds the
queue and flushes it. A file lock keeps two processes from flushing at once.

Recently written or read small blobs and registry entries are also kept in memory (bounded),
so a conversation open while the portal goes away can still be read and appended to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path

import cbor2
import filelock

from ..errors import (
    DecryptionError,
    IntegrityError,
    RevisionConflictError,
    S5FormatError,
    StorageError,
    StorageUnavailableError,
)
from ._blob import BlobId, blob_id
from ._crypto import CHUNK_SIZE, TAG_SIZE, decrypt_blob, encrypt_blob
from ._keys import derive_hash_string
from ._registry import RegistryEntry
from ._store import BlobSource, BlobVerifier, Store, pieces_of

__all__ = ["QueuedStore"]

log = logging.getLogger(__name__)

_BLOB, _ENTRY = 0, 1
_SUFFIX = ".q"
#: Blobs up to this size are remembered in memory after a write or read.
_CACHE_ITEM = 1 << 20


def _plain_size(sealed: int) -> int:
    return sealed - TAG_SIZE * max(1, -(-sealed // (CHUNK_SIZE + TAG_SIZE)))


class QueuedStore(Store):
    """``inner`` with a sealed on-disk queue for writes it cannot take (see the module docs)."""

    def __init__(
        self,
        inner: Store,
        directory: str | Path,
        key: bytes,
        *,
        retry_after: float = 2.0,
        cache_bytes: int = 32 << 20,
        cache_entries: int = 4096,
    ) -> None:
        self.inner = inner
        self.directory = Path(directory)
        self.retry_after = retry_after
        self._key = key
        self._down_until = 0.0
        self._blobs: dict[bytes, Path] = {}
        self._entries: dict[bytes, tuple[RegistryEntry, Path]] = {}
        self._recent: OrderedDict[bytes, bytes] = OrderedDict()
        self._recent_size = 0
        self._cache_bytes = cache_bytes
        self._seen: OrderedDict[bytes, RegistryEntry] = OrderedDict()
        self._cache_entries = cache_entries
        self._flush_lock = asyncio.Lock()
        self._file_lock = filelock.FileLock(str(self.directory / ".lock"))
        self._scan()

    def __repr__(self) -> str:
        return f"QueuedStore({self.inner!r}, queued={self.queued})"

    @property
    def queued(self) -> int:
        """Items (blobs and registry entries) waiting for the portal."""
        return len(self._blobs) + len(self._entries)

    # ------------------------------------------------------------------ the files

    def _seal_key(self, name: str) -> bytes:
        return derive_hash_string(self._key, name.encode())

    def _read_item(self, path: Path) -> tuple[int, bytes]:
        sealed = path.read_bytes()
        try:
            plain = decrypt_blob(self._seal_key(path.name), sealed, _plain_size(len(sealed)))
            kind, payload = cbor2.loads(plain)
        except (DecryptionError, IntegrityError, S5FormatError, ValueError, TypeError) as exc:
            raise S5FormatError(f"queued item {path.name} does not open: {exc}") from None
        if kind not in (_BLOB, _ENTRY) or not isinstance(payload, bytes):
            raise S5FormatError(f"queued item {path.name} is malformed")
        return kind, payload

    def _write_item(self, kind: int, payload: bytes) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = secrets.token_hex(16) + _SUFFIX
        sealed = encrypt_blob(self._seal_key(name), cbor2.dumps([kind, payload]))
        tmp = self.directory / f".{name}.tmp"
        with open(tmp, "wb") as f:
            f.write(sealed)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.directory / name)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return self.directory / name

    def _scan(self) -> None:
        """Index the queue directory (other processes may have added or flushed items)."""
        self._blobs.clear()
        self._entries.clear()
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob("*" + _SUFFIX)):
            try:
                kind, payload = self._read_item(path)
                if kind == _BLOB:
                    self._blobs[blob_id(payload).hash] = path
                    continue
                entry = RegistryEntry.from_bytes(payload)
            except FileNotFoundError:  # flushed by another process meanwhile
                continue
            except S5FormatError as exc:
                log.warning("skipping an unreadable S5 queue item: %s", exc)
                continue
            held = self._entries.get(entry.pk)
            if held is not None and held[0].revision >= entry.revision:
                path.unlink(missing_ok=True)  # superseded; a crash left it behind
                continue
            if held is not None:
                held[1].unlink(missing_ok=True)
            self._entries[entry.pk] = (entry, path)

    # ------------------------------------------------------------------ memory caches

    def _remember_blob(self, blob_hash: bytes, data: bytes) -> None:
        if len(data) > _CACHE_ITEM or blob_hash in self._recent:
            return
        self._recent[blob_hash] = data
        self._recent_size += len(data)
        while self._recent_size > self._cache_bytes:
            _, old = self._recent.popitem(last=False)
            self._recent_size -= len(old)

    def _remember_entry(self, entry: RegistryEntry) -> None:
        self._seen[entry.pk] = entry
        self._seen.move_to_end(entry.pk)
        while len(self._seen) > self._cache_entries:
            self._seen.popitem(last=False)

    # ------------------------------------------------------------------ portal state

    def _mark_down(self) -> None:
        self._down_until = time.monotonic() + self.retry_after

    def _reachable(self) -> bool:
        return time.monotonic() >= self._down_until

    async def _direct(self) -> bool:
        """True when calls may go straight to the portal: it is not known to be down and
        nothing is queued (a pending queue is flushed first, to keep writes in order)."""
        if not self._reachable():
            return False
        if self._blobs or self._entries:
            try:
                await self.flush()
            except StorageUnavailableError:
                return False
        return not (self._blobs or self._entries)

    async def flush(self) -> int:
        """Send every queued item to the portal; returns how many were sent.

        StorageUnavailableError if the portal is still unreachable (what was sent stays
        sent; the rest stays queued). Returns 0 at once if another process is flushing.
        """
        async with self._flush_lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            try:
                self._file_lock.acquire(timeout=0)
            except filelock.Timeout:
                return 0
            try:
                return await self._flush_locked()
            except StorageUnavailableError:
                self._mark_down()
                raise
            finally:
                self._file_lock.release()

    async def _flush_locked(self) -> int:
        self._scan()
        sent = 0
        for blob_hash, path in list(self._blobs.items()):
            try:
                _, data = self._read_item(path)
            except FileNotFoundError:
                data = None
            if data is not None:
                await self.inner.put_blob(data)
                self._remember_blob(blob_hash, data)
                sent += 1
            path.unlink(missing_ok=True)
            del self._blobs[blob_hash]
        for pk, (entry, path) in list(self._entries.items()):
            try:
                await self.inner.registry_set(entry)
            except RevisionConflictError:
                current = await self.inner.registry_get(pk)
                if current is None or current.revision < entry.revision:
                    raise
                log.warning(
                    "a queued S5 registry write (revision %d) was superseded by revision %d "
                    "written elsewhere while the portal was unreachable",
                    entry.revision,
                    current.revision,
                )
                entry = current
            self._remember_entry(entry)
            path.unlink(missing_ok=True)
            del self._entries[pk]
            sent += 1
        self._down_until = 0.0
        if sent:
            log.info("flushed %d queued S5 items to %r", sent, self.inner)
        return sent

    # ------------------------------------------------------------------ Store

    async def put_blob(self, source: BlobSource) -> BlobId:
        if await self._direct():
            try:
                blob = await self.inner.put_blob(source)
            except StorageUnavailableError:
                self._mark_down()
            else:
                if isinstance(source, bytes):
                    self._remember_blob(blob.hash, source)
                return blob
        data = source if isinstance(source, bytes) else b"".join(pieces_of(source))
        blob = blob_id(data)
        if blob.hash not in self._blobs:
            self._blobs[blob.hash] = self._write_item(_BLOB, data)
        self._remember_blob(blob.hash, data)
        return blob

    async def read_blob(self, blob: BlobId) -> AsyncIterator[bytes]:
        data = self._recent.get(blob.hash)
        path = self._blobs.get(blob.hash)
        if data is None and path is not None:
            _, data = self._read_item(path)
        if data is not None:
            verifier = BlobVerifier(blob)
            verifier.update(data)
            verifier.finish()
            yield data
            return
        # Reads need no flush first (what is queued was answered above), but they trigger
        # it; the portal is asked even while another process holds the queue's lock.
        await self._direct()
        if not self._reachable():
            raise StorageUnavailableError(f"blob {blob}: the S5 portal is unreachable")
        try:
            if blob.size > _CACHE_ITEM:
                async for piece in self.inner.read_blob(blob):
                    yield piece
                return
            data = await self.inner.get_blob(blob)
        except StorageUnavailableError:
            self._mark_down()
            raise
        self._remember_blob(blob.hash, data)
        yield data

    async def registry_get(self, pk: bytes) -> RegistryEntry | None:
        await self._direct()
        held = self._entries.get(pk)
        if held is not None:  # still queued: ours is the newest this process knows
            return held[0]
        if self._reachable():
            try:
                entry = await self.inner.registry_get(pk)
            except StorageUnavailableError:
                self._mark_down()
            else:
                if entry is not None:
                    self._remember_entry(entry)
                return entry
        if pk in self._seen:
            return self._seen[pk]
        raise StorageUnavailableError("registry read: the S5 portal is unreachable")

    async def registry_set(self, entry: RegistryEntry) -> None:
        if await self._direct():
            try:
                await self.inner.registry_set(entry)
            except StorageUnavailableError:
                self._mark_down()
            else:
                self._remember_entry(entry)
                return
        held = self._entries.get(entry.pk)
        known = held[0] if held is not None else self._seen.get(entry.pk)
        if known is not None and known.revision >= entry.revision:
            if known == entry:
                return
            raise RevisionConflictError(
                f"registry write: revision {entry.revision} is not above {known.revision}"
            )
        path = self._write_item(_ENTRY, entry.to_bytes())
        if held is not None:
            held[1].unlink(missing_ok=True)
        self._entries[entry.pk] = (entry, path)
        self._remember_entry(entry)

    async def aclose(self) -> None:
        """Close the portal client; anything still queued stays on disk for next time."""
        with contextlib.suppress(StorageError):
            await self.inner.aclose()
