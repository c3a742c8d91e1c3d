"""The embedded store on a real disk: verified reads, the revision rule, atomic writes,
concurrent writers in one process and across processes, writers killed mid-write."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fabstir_sdk.errors import IntegrityError, NotFoundError, RevisionConflictError
from fabstir_sdk.s5 import RegistryEntry, blob_id
from fabstir_sdk.s5._local import LocalStore

SEED = bytes(range(32))
REPO = Path(__file__).resolve().parents[2]


async def test_blob_round_trip_and_layout(tmp_path):
    store = LocalStore(tmp_path)
    data = b"Hello, world!"
    bid = await store.put_blob(data)
    assert bid == blob_id(data)
    digest = bid.hash.hex()
    assert (tmp_path / "blobs" / digest[:2] / digest[2:]).read_bytes() == data
    assert await store.get_blob(bid) == data
    assert os.listdir(tmp_path / "tmp") == []


async def test_streamed_blob_from_pieces(tmp_path):
    store = LocalStore(tmp_path)
    pieces = [bytes([i]) * 700_000 for i in range(4)]
    bid = await store.put_blob(lambda: iter(pieces))
    assert bid == blob_id(b"".join(pieces))
    got = [piece async for piece in store.read_blob(bid)]
    assert b"".join(got) == b"".join(pieces) and len(got) == 3  # 1 MiB reads


async def test_missing_blob_is_not_found(tmp_path):
    with pytest.raises(NotFoundError):
        await LocalStore(tmp_path).get_blob(blob_id(b"never stored"))


@pytest.mark.parametrize("size", [100, 3_000_000])
async def test_damaged_blob_on_disk_is_never_returned(tmp_path, size):
    store = LocalStore(tmp_path)
    data = os.urandom(size)
    bid = await store.put_blob(data)
    path = store.blob_path(bid)
    damaged = bytearray(data)
    damaged[size // 2] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError):
        await store.get_blob(bid)
    received = []
    with pytest.raises(IntegrityError):
        async for piece in store.read_blob(bid):
            received.append(piece)
    assert len(b"".join(received)) < size  # the last piece was held back
    path.write_bytes(data + b"extra")
    with pytest.raises(IntegrityError):
        await store.get_blob(bid)
    await store.put_blob(data)  # storing the bytes again heals the copy
    assert await store.get_blob(bid) == data


async def test_registry_revision_rule(tmp_path):
    store = LocalStore(tmp_path)
    first = RegistryEntry.sign(SEED, 5, b"five")
    assert await store.registry_get(first.pk) is None
    await store.registry_set(first)
    assert await store.registry_get(first.pk) == first
    for revision in (5, 4):
        with pytest.raises(RevisionConflictError):
            await store.registry_set(RegistryEntry.sign(SEED, revision, b"other"))
    newer = RegistryEntry.sign(SEED, 6, b"six")
    await store.registry_set(newer)
    assert await store.registry_get(first.pk) == newer
    assert (tmp_path / "registry" / first.pk.hex()).read_bytes() == newer.to_bytes()


async def test_registry_refuses_bad_signatures_and_damaged_files(tmp_path):
    store = LocalStore(tmp_path)
    good = RegistryEntry.sign(SEED, 1, b"data")
    forged = RegistryEntry(good.pk, 2, b"evil", good.signature)
    with pytest.raises(IntegrityError):
        await store.registry_set(forged)
    assert await store.registry_get(good.pk) is None  # nothing was written
    await store.registry_set(good)
    path = tmp_path / "registry" / good.pk.hex()
    path.write_bytes(forged.to_bytes())
    with pytest.raises(IntegrityError):
        await store.registry_get(good.pk)
    path.write_bytes(b"\x07garbage")
    with pytest.raises(IntegrityError):
        await store.registry_get(good.pk)
    # an entry stored under another key's name is refused too
    other = RegistryEntry.sign(bytes(32), 9, b"x")
    path.write_bytes(other.to_bytes())
    with pytest.raises(IntegrityError):
        await store.registry_get(good.pk)


async def _increment(store: LocalStore, times: int) -> None:
    for _ in range(times):
        while True:
            current = await store.registry_get(RegistryEntry.sign(SEED, 0, b"").pk)
            revision = 0 if current is None else current.revision + 1
            try:
                await store.registry_set(RegistryEntry.sign(SEED, revision, b"%d" % revision))
                break
            except RevisionConflictError:
                await asyncio.sleep(0)


async def test_concurrent_writers_in_one_process_keep_every_revision(tmp_path):
    stores = [LocalStore(tmp_path) for _ in range(4)]  # separate objects, one directory
    await asyncio.gather(*(_increment(s, 10) for s in stores))
    entry = await stores[0].registry_get(RegistryEntry.sign(SEED, 0, b"").pk)
    assert (entry.revision, entry.data) == (39, b"39")


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from fabstir_sdk.s5._local import LocalStore
    from tests.integration.test_s5_local_store import _increment
    asyncio.run(_increment(LocalStore(sys.argv[1]), int(sys.argv[2])))
    """
)


async def test_concurrent_writers_across_processes_keep_every_revision(tmp_path):
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, str(tmp_path), "15", cwd=REPO
        )
        for _ in range(3)
    ]
    assert [await p.wait() for p in procs] == [0, 0, 0]
    entry = await LocalStore(tmp_path).registry_get(RegistryEntry.sign(SEED, 0, b"").pk)
    assert (entry.revision, entry.data) == (44, b"44")


SLOW_BLOB = textwrap.dedent(
    """
    import sys, time
    from fabstir_sdk.s5._local import LocalStore
    def pieces():
        yield b"x" * 1_000_000
        print("writing", flush=True)
        time.sleep(60)
        yield b"never"
    LocalStore(sys.argv[1]).put_blob_sync(pieces())
    """
)

FAST_ENTRIES = textwrap.dedent(
    """
    import sys
    from fabstir_sdk.s5 import RegistryEntry
    from fabstir_sdk.s5._local import LocalStore
    store, seed = LocalStore(sys.argv[1]), bytes(range(32))
    for revision in range(1, 10**9):
        store._set_entry(RegistryEntry.sign(seed, revision, b"%d" % revision * 8))
        if revision == 20:
            print("writing", flush=True)
    """
)


def _start_and_kill(script: str, root) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(root)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_blob_writer_killed_mid_write_leaves_no_blob(tmp_path):
    _start_and_kill(SLOW_BLOB, tmp_path)
    assert list((tmp_path / "blobs").iterdir()) == []
    assert len(list((tmp_path / "tmp").iterdir())) == 1  # only the invisible temp file


async def test_registry_writer_killed_mid_write_leaves_old_or_new(tmp_path):
    _start_and_kill(FAST_ENTRIES, tmp_path)
    entry = await LocalStore(tmp_path).registry_get(RegistryEntry.sign(SEED, 0, b"").pk)
    assert entry.revision >= 20 and entry.data == b"%d" % entry.revision * 8
    assert sorted(p.suffix for p in (tmp_path / "registry").iterdir()) in ([""], ["", ".lock"])
