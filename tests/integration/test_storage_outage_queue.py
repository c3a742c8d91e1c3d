"""QueuedStore on its own, over a real embedded store behind a switch that plays "portal
down" (the only stand-in: it raises what the portal client raises when unreachable)."""

from __future__ import annotations

import logging

import pytest
from nacl.signing import SigningKey

from fabstir_sdk.errors import RevisionConflictError, StorageUnavailableError
from fabstir_sdk.s5 import LocalStore, RegistryEntry, blob_id
from fabstir_sdk.s5._queue import QueuedStore

KEY = bytes(range(32))


class Switch(LocalStore):
    """An embedded store that can be made unreachable, and logs the writes it takes."""

    down = False

    def __init__(self, root) -> None:
        super().__init__(root)
        self.writes: list[str] = []

    def _check(self) -> None:
        if self.down:
            raise StorageUnavailableError("down")

    async def put_blob(self, source):
        self._check()
        self.writes.append("blob")
        return await super().put_blob(source)

    async def registry_set(self, entry):
        self._check()
        self.writes.append("entry")
        await super().registry_set(entry)

    async def registry_get(self, pk):
        self._check()
        return await super().registry_get(pk)

    def read_blob(self, blob):
        self._check()
        return super().read_blob(blob)


def entry(revision: int, data: bytes) -> RegistryEntry:
    return RegistryEntry.sign(SigningKey(b"k" * 32), revision, blob_id(data).to_bytes())


@pytest.fixture
def inner(tmp_path):
    return Switch(tmp_path / "portal")


def queued(tmp_path, inner, key: bytes = KEY) -> QueuedStore:
    return QueuedStore(inner, tmp_path / "queue", key, retry_after=0)


async def test_blobs_flush_before_the_entries_that_point_to_them(tmp_path, inner):
    store = queued(tmp_path, inner)
    inner.down = True
    await store.registry_set(entry(0, b"v0"))  # an entry queued before its blob
    await store.put_blob(b"v0")
    await store.registry_set(entry(1, b"v1"))  # replaces the queued revision 0
    await store.put_blob(b"v1")
    assert store.queued == 3 and len(list((tmp_path / "queue").glob("*.q"))) == 3
    with pytest.raises(RevisionConflictError):
        await store.registry_set(entry(1, b"other"))
    await store.registry_set(entry(1, b"v1"))  # the same entry again: done
    assert await store.registry_get(entry(0, b"").pk) == entry(1, b"v1")
    assert await store.get_blob(blob_id(b"v1")) == b"v1"

    inner.down = False
    assert await store.flush() == 3
    assert inner.writes == ["blob", "blob", "entry"]
    assert await inner.registry_get(entry(0, b"").pk) == entry(1, b"v1")
    assert list((tmp_path / "queue").glob("*.q")) == []


async def test_a_tampered_or_foreign_queue_file_is_skipped(tmp_path, inner, caplog):
    store = queued(tmp_path, inner)
    inner.down = True
    await store.put_blob(b"one")
    await store.put_blob(b"two")
    first, _ = sorted((tmp_path / "queue").glob("*.q"))
    raw = bytearray(first.read_bytes())
    raw[5] ^= 1
    first.write_bytes(bytes(raw))
    caplog.set_level(logging.WARNING)
    assert queued(tmp_path, inner).queued == 1  # the intact one
    assert "unreadable S5 queue item" in caplog.text
    assert queued(tmp_path, inner, key=b"\x01" * 32).queued == 0  # another user's key


async def test_only_one_process_flushes_at_a_time(tmp_path, inner):
    store = queued(tmp_path, inner)
    inner.down = True
    await store.put_blob(b"x")
    inner.down = False
    other = queued(tmp_path, inner)
    other._file_lock.acquire()  # another process is flushing
    try:
        assert await store.flush() == 0 and store.queued == 1
        # Reads still reach the portal meanwhile (only writes wait behind the queue).
        assert await store.registry_get(entry(0, b"").pk) is None
        assert await store.get_blob(blob_id(b"x")) == b"x"  # from the queue
    finally:
        other._file_lock.release()
    assert await store.flush() == 1 and inner.writes == ["blob"]
