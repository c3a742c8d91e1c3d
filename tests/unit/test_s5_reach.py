"""FileSystem.reach, the storage check create_session makes before paying: one registry read,
never the directory's contents (a user's sessions directory grows with every session)."""

from __future__ import annotations

from typing import Any

import pytest

from fabstir_sdk.errors import StorageUnavailableError
from fabstir_sdk.s5 import S5Identity
from fabstir_sdk.s5._fs import FileSystem
from fabstir_sdk.s5._local import LocalStore


class Counting(LocalStore):
    """A local store that counts the reads it serves, and can be made unreachable."""

    def __init__(self, root: Any) -> None:
        super().__init__(root)
        self.registry_reads = self.blob_reads = 0
        self.down = False

    async def registry_get(self, pk: bytes) -> Any:
        if self.down:
            raise StorageUnavailableError("down")
        self.registry_reads += 1
        return await super().registry_get(pk)

    async def get_blob(self, blob: Any) -> bytes:
        self.blob_reads += 1
        return await super().get_blob(blob)


async def test_reach_reads_one_registry_entry_and_no_directory(tmp_path):
    store = Counting(tmp_path)
    fs = FileSystem(store, S5Identity(b"reach-user-seed-0123456789abcdef"))
    for i in range(30):
        await fs.put(f"home/sessions/u/{i}/data/metadata.json", {"job": i})
    fresh = FileSystem(store, S5Identity(b"reach-user-seed-0123456789abcdef"))  # no cache
    store.registry_reads = store.blob_reads = 0
    await fresh.reach("home/sessions/u")
    assert (store.registry_reads, store.blob_reads) == (1, 0)
    assert len(await fresh.list("home/sessions/u")) == 30  # what the check used to read
    assert store.blob_reads == 1


async def test_reach_raises_when_the_store_does_not_answer(tmp_path):
    store = Counting(tmp_path)
    fs = FileSystem(store, S5Identity(b"reach-user-seed-0123456789abcdef"))
    store.down = True
    with pytest.raises(StorageUnavailableError):
        await fs.reach("home/sessions/u")
