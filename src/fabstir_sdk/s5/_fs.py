"""A path file system over a :class:`Store`, like s5.js' ``fs`` but with every directory
encrypted.

Each directory is a DirV1 blob sealed with mutable encryption, pointed to by a registry
entry signed with the directory's own ed25519 key. Keys come from the path: the root's write
key is ``D(file-system sub-seed, 1)``; a child's is ``Ds(parent write key, name)``; a
directory's signing key is its write key used as an ed25519 seed, and its encryption key is
``D(write key, 1)``. Files are sealed in 256 KiB chunks with a fresh random key per version;
the key lives in the file's entry of the (encrypted) directory, as s5.js stores it.

So the store sees only registry keys, random-looking blobs and padded directory sizes: no
names, no layout, no content. Updates to one directory are serialized in-process and
retried on registry revision conflicts across processes.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import blake3
import cbor2
from nacl.signing import SigningKey

from ..errors import (
    IntegrityError,
    InvalidStorageKeyError,
    NotFoundError,
    PayloadTooLargeError,
    RevisionConflictError,
    S5FormatError,
    ValidationError,
)
from ._blob import BlobId, blob_id
from ._crypto import (
    MAX_MUTABLE_SIZE,
    ChunkDecryptor,
    decrypt_mutable,
    encrypt_blob,
    encrypt_mutable,
    encrypted_size,
    iter_encrypt,
    pad_size,
)
from ._dirv1 import DirRef, DirV1, FileRef
from ._keys import MKEY_ED25519, S5Identity, derive_hash_int, derive_hash_string
from ._registry import RegistryEntry
from ._store import Store

__all__ = ["DirEntry", "FileSystem", "split_path"]

MEDIA_CBOR = "application/cbor"
MEDIA_BYTES = "application/octet-stream"
MEDIA_TEXT = "text/plain"
ALGORITHM = "xchacha20-poly1305"
MAX_NAME_BYTES = 255
DEFAULT_MAX_FILE_SIZE = 1 << 30
MAX_METADATA_SIZE = 16 * 1024
_MAX_DIR_RECORD = pad_size(MAX_MUTABLE_SIZE + 46)
_RETRIES = 60
#: Files up to this size are sealed in memory and stored with their directory, in one go.
_INLINE = 1 << 20
_Change = Callable[[DirV1 | None, list[bytes]], Awaitable[DirV1 | None]]
#: A change waiting for its directory's publish: the change, its caller's future, "alone".
_Queued = tuple[_Change, "asyncio.Future[None]", bool]


def split_path(path: str) -> tuple[str, ...]:
    """``"home//a/b/"`` -> ``("home", "a", "b")``; refuses ``.``, ``..``, NUL and long names."""
    if not isinstance(path, str):
        raise InvalidStorageKeyError(f"a path is a str, not {type(path).__name__}")
    parts = tuple(p for p in path.split("/") if p)
    for part in parts:
        if part in (".", "..") or "\0" in part:
            raise InvalidStorageKeyError(f"path segment {part!r} is not allowed")
        if len(part.encode()) > MAX_NAME_BYTES:
            raise InvalidStorageKeyError(f"path segment longer than {MAX_NAME_BYTES} bytes")
    return parts


@dataclass(frozen=True, slots=True)
class DirEntry:
    name: str
    type: Literal["file", "directory"]
    size: int | None = None
    media_type: str | None = None
    #: Seconds since the epoch (float), when the entry was written.
    timestamp: float | None = None


@dataclass(frozen=True, slots=True)
class _DirKeys:
    write_key: bytes
    signing: SigningKey
    pk: bytes
    encryption: bytes

    @classmethod
    def of(cls, write_key: bytes) -> _DirKeys:
        signing = SigningKey(write_key)
        return cls(
            write_key,
            signing,
            bytes([MKEY_ED25519]) + bytes(signing.verify_key),
            derive_hash_int(write_key, 1),
        )


def _now() -> tuple[int, int]:
    ns = time.time_ns()
    return ns // 1_000_000_000, ns % 1_000_000_000


def _encode(data: Any, media_type: str | None) -> tuple[bytes, str]:
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data), media_type or MEDIA_BYTES
    if isinstance(data, str):
        return data.encode(), media_type or MEDIA_TEXT
    try:
        return cbor2.dumps(data), media_type or MEDIA_CBOR
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise ValidationError(f"data cannot be stored as CBOR: {exc}") from None


def _decode(payload: bytes, media_type: str | None) -> Any:
    if media_type == MEDIA_CBOR:
        try:
            return cbor2.loads(payload)
        except Exception as exc:  # cbor2 raises several types for malformed input
            raise S5FormatError(f"stored CBOR does not decode: {type(exc).__name__}") from None
    if media_type is not None and media_type.startswith("text/"):
        try:
            return payload.decode()
        except UnicodeDecodeError:
            raise S5FormatError("stored text is not UTF-8") from None
    return payload


def _copy(d: DirV1) -> DirV1:
    return DirV1(header=dict(d.header), dirs=dict(d.dirs), files=dict(d.files))


class FileSystem:
    """``put``/``get``/``list``/``delete``/``metadata``/``update`` on paths like ``home/a/b``.

    Objects are stored as CBOR, ``str`` as UTF-8 text, ``bytes`` raw; ``get`` returns what
    was put. Missing paths raise NotFoundError.
    """

    def __init__(
        self,
        store: Store,
        identity: S5Identity,
        *,
        max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    ) -> None:
        self.store = store
        self.max_file_size = max_file_size
        self._root = derive_hash_int(identity.file_system_seed, 1)
        self._keys_cache: dict[tuple[str, ...], _DirKeys] = {}
        self._dirs: dict[bytes, tuple[RegistryEntry, DirV1]] = {}
        self._locks: dict[bytes, asyncio.Lock] = {}
        #: Changes waiting for the directory's next publish (see :meth:`_update`).
        self._queued: dict[bytes, list[_Queued]] = {}
        self._linked: set[tuple[str, ...]] = set()
        #: Directories this process just linked into a parent that did not list them: they
        #: start empty, so their first write needs no registry read (none when offline).
        self._fresh: set[bytes] = set()

    def __repr__(self) -> str:
        return f"FileSystem(store={self.store!r})"

    # ------------------------------------------------------------------ keys and directories

    def _keys(self, path: tuple[str, ...]) -> _DirKeys:
        keys = self._keys_cache.get(path)
        if keys is None:
            parent = self._keys(path[:-1]).write_key if path else None
            write_key = (
                self._root if parent is None else derive_hash_string(parent, path[-1].encode())
            )
            keys = self._keys_cache[path] = _DirKeys.of(write_key)
        return keys

    async def _load(self, keys: _DirKeys) -> tuple[RegistryEntry | None, DirV1 | None]:
        entry = await self.store.registry_get(keys.pk)
        if entry is None:
            self._dirs.pop(keys.pk, None)
            return None, None
        cached = self._dirs.get(keys.pk)
        if cached is not None and cached[0].data == entry.data:
            return entry, _copy(cached[1])
        try:
            blob = BlobId.from_bytes(entry.data)
        except S5FormatError:
            raise S5FormatError("directory registry entry does not hold a blob id") from None
        if blob.size > _MAX_DIR_RECORD:
            raise S5FormatError(f"directory record of {blob.size} bytes is over the limit")
        record = await self.store.get_blob(blob)
        directory = DirV1.from_bytes(decrypt_mutable(keys.encryption, record))
        self._dirs[keys.pk] = (entry, directory)
        return entry, _copy(directory)

    async def _update(self, keys: _DirKeys, change: _Change, *, alone: bool = False) -> None:
        """Apply ``change`` to the directory and publish it; re-run it on a revision conflict.

        ``change(directory, pending)`` returns the new directory (or None to leave it as it
        is) and may add blobs to ``pending``: they are stored before the registry entry.
        The first attempt trusts this process's copy of the directory; the registry's
        revision check catches a stale copy, and the retry reads the directory afresh.

        Changes that queue while the directory is being published go out together in the
        next publish (a group commit), each raising its own error to its own caller: a
        thousand sessions adding their directories to one parent cost a few publishes, not a
        thousand one after another. A change that reads the directory's files (``alone``)
        is published by itself: the files a batch writes are stored with its publish.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queued.setdefault(keys.pk, [])
        queue.append((change, done, alone))
        try:
            async with self._locks.setdefault(keys.pk, asyncio.Lock()):
                if not done.done():  # not published by an earlier holder: publish what queued
                    queue = self._queued.setdefault(keys.pk, [])
                    batch = [c for c in queue if c[1] is done or not (alone or c[2])]
                    taken = {id(c[1]) for c in batch}
                    queue[:] = [c for c in queue if id(c[1]) not in taken]
                    await self._publish(keys, batch)
        except BaseException:
            if not done.done():
                done.cancel()  # an earlier holder's batch skips it (it may still be queued)
            raise
        await done

    async def _publish(self, keys: _DirKeys, batch: list[_Queued]) -> None:
        """One publish of every change in ``batch`` (under the directory's lock); settles
        each change's future. Changes not settled when this is interrupted queue again."""
        try:
            errors = await self._publish_batch(keys, [c for c, f, _ in batch if not f.done()])
        except Exception as exc:  # the directory could not be published: nothing was
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled: the next holder publishes the others
            self._queued.setdefault(keys.pk, [])[:0] = [c for c in batch if not c[1].done()]
            raise
        for change, future, _ in batch:
            if future.done():
                continue
            error = errors.get(id(change))
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    async def _publish_batch(self, keys: _DirKeys, batch: list[_Change]) -> dict[int, Exception]:
        """Publish the changes of ``batch`` in one registry revision; the errors of changes
        that refused (by ``id`` of the change), which are left out."""
        optimistic = True
        for attempt in range(_RETRIES):
            cached = self._dirs.get(keys.pk) if optimistic else None
            entry: RegistryEntry | None
            current: DirV1 | None
            if cached is not None:
                entry, current = cached[0], _copy(cached[1])
            elif optimistic and keys.pk in self._fresh:
                entry, current = None, None
            else:
                entry, current = await self._load(keys)
            optimistic = False
            pending: list[bytes] = []
            errors: dict[int, Exception] = {}
            new: DirV1 | None = None
            for change in batch:
                base = new if new is not None else current
                try:  # on a copy: a change that fails halfway leaves nothing behind
                    changed = await change(None if base is None else _copy(base), pending)
                except Exception as exc:
                    errors[id(change)] = exc
                    continue
                if changed is not None:
                    new = changed
            if new is None:
                if cached is not None:
                    continue  # "no change" may rest on a stale copy: check afresh
                return errors
            plain = new.to_bytes()
            if len(plain) > MAX_MUTABLE_SIZE:
                raise PayloadTooLargeError(len(plain), MAX_MUTABLE_SIZE, "directory")
            record = encrypt_mutable(keys.encryption, plain)
            revision = 0 if entry is None else entry.revision + 1
            signed = RegistryEntry.sign(keys.signing, revision, blob_id(record).to_bytes())
            try:
                await self.store.publish(record, signed, pending)
            except RevisionConflictError:
                # Another writer got there first: re-read and re-apply, with jitter.
                await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))  # noqa: S311
                continue
            self._dirs[keys.pk] = (signed, new)
            self._fresh.discard(keys.pk)
            return errors
        raise RevisionConflictError(f"directory still contended after {_RETRIES} attempts")

    async def _ensure_dir(self, path: tuple[str, ...]) -> None:
        """Make sure every directory on ``path`` is listed in its parent."""
        if not path or path in self._linked:
            return
        await self._ensure_dir(path[:-1])
        link = self._keys(path).pk
        seconds, nanos = _now()

        async def add(parent: DirV1 | None, pending: list[bytes]) -> DirV1 | None:
            parent = parent or DirV1()
            existing = parent.dirs.get(path[-1])
            if existing is not None and existing.link == link:
                return None
            if path[-1] in parent.files:
                raise InvalidStorageKeyError(f"{'/'.join(path)} is a file, not a directory")
            parent.dirs[path[-1]] = DirRef(link, seconds, nanos)
            new_link[:] = [existing is None]
            return parent

        new_link: list[bool] = [False]
        await self._update(self._keys(path[:-1]), add)
        if new_link[0]:
            self._fresh.add(link)
        self._linked.add(path)

    # ------------------------------------------------------------------ file contents

    async def _write_file(
        self, payload: bytes, media_type: str, metadata: dict[str, Any] | None
    ) -> tuple[FileRef, bytes | None]:
        """Encrypt a new file version under a fresh key. A small one comes back sealed, to
        be stored together with its directory; a large one is streamed to the store now."""
        key = os.urandom(32)
        sealed: bytes | None = None
        if len(payload) <= _INLINE:
            plain_hash = blake3.blake3(payload).digest()
            sealed = encrypt_blob(key, payload)
            blob = blob_id(sealed)
        else:
            plain_hash = await asyncio.to_thread(
                lambda: blake3.blake3(payload, max_threads=blake3.blake3.AUTO).digest()
            )
            blob = await self.store.put_blob(lambda: iter_encrypt(key, payload))
            if blob.size != encrypted_size(len(payload)):
                raise IntegrityError("the store reported a size that does not match the upload")
        extra: dict[str, Any] = {
            "encryption": {"algorithm": ALGORITHM, "key": key, "plaintextHash": plain_hash}
        }
        if metadata:
            extra["metadata"] = metadata
        seconds, nanos = _now()
        ref = FileRef(
            hash=blob.hash,
            size=len(payload),
            media_type=media_type,
            timestamp=seconds,
            timestamp_subsec_nanos=nanos,
            extra=extra,
        )
        return ref, sealed

    async def _read_file(self, ref: FileRef) -> bytes:
        encryption = (ref.extra or {}).get("encryption")
        if encryption is None:  # a plaintext file, as s5.js writes without encryption
            return await self.store.get_blob(BlobId(ref.hash, ref.size))
        if not isinstance(encryption, dict) or encryption.get("algorithm") != ALGORITHM:
            raise S5FormatError("file uses an unknown encryption scheme")
        try:
            key = bytes(encryption["key"])
        except (KeyError, TypeError, ValueError):
            raise S5FormatError("file encryption key is missing or malformed") from None
        decryptor = ChunkDecryptor(key, ref.size)
        async for piece in self.store.read_blob(BlobId(ref.hash, encrypted_size(ref.size))):
            decryptor.feed(piece)
        plain = decryptor.finish()
        expected = encryption.get("plaintextHash")
        if expected is not None and blake3.blake3(plain).digest() != bytes(expected):
            raise IntegrityError("file plaintext does not match its recorded hash")
        return plain

    def _prepare(
        self, data: Any, media_type: str | None, metadata: dict[str, Any] | None
    ) -> tuple[bytes, str]:
        payload, media = _encode(data, media_type)
        if len(payload) > self.max_file_size:
            raise PayloadTooLargeError(len(payload), self.max_file_size, "file")
        if metadata is not None:
            if not isinstance(metadata, dict):
                raise ValidationError("metadata is a dict")
            size = len(_encode(metadata, None)[0])
            if size > MAX_METADATA_SIZE:
                raise PayloadTooLargeError(size, MAX_METADATA_SIZE, "metadata")
        return payload, media

    @staticmethod
    def _file_path(path: str) -> tuple[tuple[str, ...], str]:
        parts = split_path(path)
        if not parts:
            raise InvalidStorageKeyError("a file path needs at least a name")
        return parts[:-1], parts[-1]

    # ------------------------------------------------------------------ public API

    async def put(
        self,
        path: str,
        data: Any,
        *,
        media_type: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> FileRef:
        """Store ``data`` at ``path`` (a new version replaces the old); returns its FileRef."""
        directory, name = self._file_path(path)
        payload, media = self._prepare(data, media_type, metadata)
        ref, sealed = await self._write_file(payload, media, metadata)
        await self._ensure_dir(directory)

        async def put_ref(d: DirV1 | None, pending: list[bytes]) -> DirV1:
            d = d or DirV1()
            if name in d.dirs:
                raise InvalidStorageKeyError(f"{path} is a directory")
            d.files[name] = ref
            if sealed is not None:
                pending.append(sealed)
            return d

        await self._update(self._keys(directory), put_ref)
        return ref

    async def update(
        self,
        path: str,
        change: Callable[[Any], Any],
        *,
        media_type: str | None = None,
    ) -> Any:
        """Read-modify-write ``path`` atomically: ``change(old)`` (None if absent) returns the
        new value, which is stored and returned. Concurrent updates never lose a write:
        within a process they queue; across processes a lost race re-runs ``change``."""
        directory, name = self._file_path(path)
        await self._ensure_dir(directory)
        result: list[Any] = []

        async def apply(d: DirV1 | None, pending: list[bytes]) -> DirV1:
            d = d or DirV1()
            old_ref = d.files.get(name)
            old = None
            if old_ref is not None:
                old = _decode(await self._read_file(old_ref), old_ref.media_type)
            new = change(old)
            metadata = (old_ref.extra or {}).get("metadata") if old_ref else None
            payload, media = self._prepare(new, media_type, metadata)
            d.files[name], sealed = await self._write_file(payload, media, metadata)
            if sealed is not None:
                pending.append(sealed)
            result[:] = [new]
            return d

        await self._update(self._keys(directory), apply, alone=True)
        return result[0]

    async def file_ref(self, path: str) -> FileRef:
        directory, name = self._file_path(path)
        _, d = await self._load(self._keys(directory))
        ref = None if d is None else d.files.get(name)
        if ref is None:
            raise NotFoundError(f"no file at {path}")
        return ref

    async def get_bytes(self, path: str) -> bytes:
        return await self._read_file(await self.file_ref(path))

    async def get(self, path: str) -> Any:
        """What was put at ``path``; NotFoundError if nothing is there."""
        ref = await self.file_ref(path)
        return _decode(await self._read_file(ref), ref.media_type)

    async def reach(self, path: str = "") -> None:
        """Read the directory's registry entry, not its contents: proves the store answers
        (or, offline, knows the entry) at a cost that does not grow with the directory."""
        await self.store.registry_get(self._keys(split_path(path)).pk)

    async def list(self, path: str = "") -> list[DirEntry]:
        """The directory's entries, sorted by name; empty if the directory does not exist."""
        _, d = await self._load(self._keys(split_path(path)))
        if d is None:
            return []
        entries = [
            DirEntry(name, "directory", timestamp=_seconds(ref.ts_seconds, ref.ts_nanos))
            for name, ref in d.dirs.items()
        ] + [
            DirEntry(
                name,
                "file",
                ref.size,
                ref.media_type,
                _seconds(ref.timestamp, ref.timestamp_subsec_nanos),
            )
            for name, ref in d.files.items()
        ]
        return sorted(entries, key=lambda e: e.name)

    async def delete(self, path: str) -> bool:
        """Remove a file or an empty directory; False if nothing was there."""
        directory, name = self._file_path(path)
        child = (*directory, name)
        _, sub = await self._load(self._keys(child))
        if sub is not None and (sub.files or sub.dirs):
            raise ValidationError(f"directory {path} is not empty")
        deleted: list[bool] = [False]

        async def remove(d: DirV1 | None, pending: list[bytes]) -> DirV1 | None:
            if d is None or (name not in d.files and name not in d.dirs):
                return None
            d.files.pop(name, None)
            d.dirs.pop(name, None)
            deleted[0] = True
            return d

        await self._update(self._keys(directory), remove)
        self._linked.discard(child)
        return deleted[0]

    async def metadata(self, path: str) -> dict[str, Any]:
        """What is known about a file or directory without reading a file's content."""
        directory, name = self._file_path(path)
        _, d = await self._load(self._keys(directory))
        if d is not None and name in d.files:
            ref = d.files[name]
            return {
                "type": "file",
                "name": name,
                "size": ref.size,
                "media_type": ref.media_type,
                "timestamp": _seconds(ref.timestamp, ref.timestamp_subsec_nanos),
                "cid": str(self.blob_id(ref)),
                "metadata": dict((ref.extra or {}).get("metadata") or {}),
            }
        if d is not None and name in d.dirs:
            _, sub = await self._load(self._keys((*directory, name)))
            sub = sub or DirV1()
            return {
                "type": "directory",
                "name": name,
                "file_count": len(sub.files),
                "directory_count": len(sub.dirs),
            }
        raise NotFoundError(f"nothing at {path}")

    @staticmethod
    def blob_id(ref: FileRef) -> BlobId:
        """The id of the stored (encrypted) blob behind a FileRef."""
        if (ref.extra or {}).get("encryption") is None:
            return BlobId(ref.hash, ref.size)
        return BlobId(ref.hash, encrypted_size(ref.size))

    async def aclose(self) -> None:
        await self.store.aclose()


def _seconds(seconds: int | None, nanos: int | None) -> float | None:
    return None if seconds is None else seconds + (nanos or 0) / 1e9
