"""The embedded store: S5 blobs and registry entries as files under one directory.

Layout (all names are hex)::

    blobs/<hash[:2]>/<hash[2:]>   the blob's bytes, named by their BLAKE3 hash
    registry/<pk>                 the newest registry entry for pk, in its 0x07 wire form
    registry/<pk>.lock            cross-process lock for that key
    tmp/                          files being written

Every write goes to a temporary file, is fsynced and renamed into place (then the directory
is fsynced), so a writer killed at any moment leaves the old version or the new one. Registry
updates take a per-key file lock, so writers in several processes keep the revision rule.
Reads hash every blob and check every entry's signature before returning anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path

import blake3

from ..errors import (
    IntegrityError,
    NotFoundError,
    PayloadTooLargeError,
    RevisionConflictError,
    S5FormatError,
    StorageError,
)
from ._blob import BlobId
from ._lockfile import file_lock
from ._registry import RegistryEntry
from ._store import BlobSource, BlobVerifier, Store, check_entry, pieces_of

__all__ = ["BlobWriter", "LocalStore"]

_READ_PIECE = 1 << 20
_STALE_TMP_SECONDS = 24 * 3600


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomic(path: Path, data: bytes, tmp_dir: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=tmp_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class BlobWriter:
    """Writes one blob in pieces to a temporary file; :meth:`commit` moves it into place."""

    def __init__(self, store: LocalStore, max_size: int | None = None) -> None:
        store.prepare()
        self._store = store
        self._max = max_size
        fd, self._tmp = tempfile.mkstemp(dir=store.root / "tmp")
        self._file = os.fdopen(fd, "wb")
        self._hasher = blake3.blake3()
        self.size = 0

    def write(self, piece: bytes) -> None:
        self.size += len(piece)
        if self._max is not None and self.size > self._max:
            raise PayloadTooLargeError(self.size, self._max, "blob")
        self._hasher.update(piece)
        self._file.write(piece)

    def commit(self) -> BlobId:
        """fsync, rename into place, and return the id computed from the bytes written."""
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            blob = BlobId(self._hasher.digest(), self.size)
            path = self._store.blob_path(blob)
            # Replace even when present: the same bytes, and a damaged copy heals.
            path.parent.mkdir(exist_ok=True)
            os.replace(self._tmp, path)
            _fsync_dir(path.parent)
            return blob
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        self._file.close()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


class LocalStore(Store):
    """The embedded default store (no network): S5 blobs and registry entries on disk."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._prepared = False
        self._key_locks: dict[bytes, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def prepare(self) -> None:
        """Create the store's folders (once) and remove temporary files left long ago."""
        if self._prepared:
            return
        try:
            for sub in ("blobs", "registry", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StorageError(f"cannot create the store at {self.root}: {exc}") from exc
        cutoff = time.time() - _STALE_TMP_SECONDS
        for leftover in (self.root / "tmp").iterdir():  # from writers killed long ago
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < cutoff:
                    leftover.unlink()
        self._prepared = True

    def blob_path(self, blob: BlobId) -> Path:
        digest = blob.hash.hex()
        return self.root / "blobs" / digest[:2] / digest[2:]

    def _entry_path(self, pk: bytes) -> Path:
        return self.root / "registry" / pk.hex()

    # ------------------------------------------------------------------ blobs

    def put_blob_sync(self, pieces: Iterable[bytes], max_size: int | None = None) -> BlobId:
        writer = BlobWriter(self, max_size)
        try:
            for piece in pieces:
                writer.write(piece)
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    async def put_blob(self, source: BlobSource) -> BlobId:
        return await asyncio.to_thread(self.put_blob_sync, pieces_of(source))

    def _read_whole(self, blob: BlobId) -> bytes:
        path = self.blob_path(blob)
        try:
            with open(path, "rb") as f:
                data = f.read(blob.size + 1)
        except FileNotFoundError:
            raise NotFoundError(f"no blob {blob} in the local store") from None
        verifier = BlobVerifier(blob)
        verifier.update(data)
        verifier.finish()
        return data

    async def get_blob(self, blob: BlobId) -> bytes:
        return await asyncio.to_thread(self._read_whole, blob)

    async def read_blob(self, blob: BlobId) -> AsyncIterator[bytes]:
        if blob.size <= _READ_PIECE:
            yield await self.get_blob(blob)
            return
        try:
            f = await asyncio.to_thread(open, self.blob_path(blob), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"no blob {blob} in the local store") from None
        try:
            verifier = BlobVerifier(blob)
            held: bytes | None = None
            while piece := await asyncio.to_thread(f.read, _READ_PIECE):
                verifier.update(piece)
                if held is not None:
                    yield held
                held = piece
            verifier.finish()
            if held is not None:
                yield held
        finally:
            f.close()

    # ------------------------------------------------------------------ registry

    def _load_entry(self, pk: bytes, *, verify: bool = True) -> RegistryEntry | None:
        try:
            raw = self._entry_path(pk).read_bytes()
        except FileNotFoundError:
            return None
        try:
            entry = RegistryEntry.from_bytes(raw)
        except S5FormatError:
            raise IntegrityError(f"registry entry file for {pk.hex()} is damaged") from None
        return check_entry(entry, pk) if verify else entry

    async def registry_get(self, pk: bytes) -> RegistryEntry | None:
        # An entry is ~150 bytes on a local disk: reading it costs less than a thread hop.
        return self._load_entry(pk)

    def _set_entry(self, entry: RegistryEntry) -> None:
        self.prepare()
        path = self._entry_path(entry.pk)
        with file_lock(path.with_name(path.name + ".lock")):
            current = self._load_entry(entry.pk, verify=False)
            if current is not None and entry.revision <= current.revision:
                raise RevisionConflictError(
                    f"revision {entry.revision} is not above the stored {current.revision}"
                )
            _write_atomic(self._entry_path(entry.pk), entry.to_bytes(), self.root / "tmp")

    async def registry_set(self, entry: RegistryEntry) -> None:
        check_entry(entry, entry.pk)
        async with self._key_locks.setdefault(entry.pk, asyncio.Lock()):
            await asyncio.to_thread(self._set_entry, entry)

    async def publish(
        self, record: bytes, entry: RegistryEntry, blobs: Sequence[bytes] = ()
    ) -> None:
        check_entry(entry, entry.pk)

        def both() -> None:  # one thread hop for the whole update
            for blob in (*blobs, record):
                self.put_blob_sync((blob,))
            self._set_entry(entry)

        async with self._key_locks.setdefault(entry.pk, asyncio.Lock()):
            await asyncio.to_thread(both)
