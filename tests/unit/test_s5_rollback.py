"""RevisionGuard on its own, over embedded stores standing in for portals: what it keeps,
what it refuses, and its file (merged across processes, tolerant of damage)."""

from __future__ import annotations

import json

import pytest

from fabstir_sdk import RegistryRollbackError, RevisionConflictError
from fabstir_sdk.s5 import LocalStore, RegistryEntry
from fabstir_sdk.s5._rollback import RevisionGuard

SEED = bytes(range(32))


def entry(revision: int) -> RegistryEntry:
    return RegistryEntry.sign(SEED, revision, b"data-%d" % revision)


async def test_an_older_revision_or_none_is_a_rollback(tmp_path):
    new, old = LocalStore(tmp_path / "new"), LocalStore(tmp_path / "old")
    await old.registry_set(entry(1))
    for revision in (1, 2, 3):
        await new.registry_set(entry(revision))
    guard = RevisionGuard(new, tmp_path / "seen.json")
    pk = entry(3).pk
    assert await guard.registry_get(pk) == entry(3)
    assert guard.highest_seen(pk) == 3
    guard.inner = old  # the same portal, rolled back
    with pytest.raises(RegistryRollbackError, match=r"revision 1 .* seen at revision 3"):
        await guard.registry_get(pk)
    guard.inner = LocalStore(tmp_path / "empty")
    with pytest.raises(RegistryRollbackError, match="no entry"):
        await guard.registry_get(pk)
    with pytest.raises(RevisionConflictError):
        await guard.registry_set(entry(3))  # never at or below what was seen
    await guard.registry_set(entry(4))
    assert guard.highest_seen(pk) == 4


async def test_the_file_is_kept_and_merged_across_processes(tmp_path):
    store, path = LocalStore(tmp_path / "s"), tmp_path / "seen.json"
    first, second = RevisionGuard(store, path), RevisionGuard(store, path)
    await first.registry_set(entry(5))
    other = RegistryEntry.sign(bytes(32), 9, b"x")
    await second.registry_set(other)  # second never saw entry 5 itself
    on_disk = json.loads(path.read_text())
    assert on_disk == {entry(5).pk.hex(): 5, other.pk.hex(): 9}
    assert RevisionGuard(store, path).highest_seen(entry(5).pk) == 5  # a new process


async def test_a_damaged_file_starts_over(tmp_path):
    path = tmp_path / "seen.json"
    path.write_text("{not json")
    assert RevisionGuard(LocalStore(tmp_path / "s"), path).highest_seen(b"\xed" + bytes(32)) is None
    pk = b"\xed" + bytes(32)
    path.write_text(json.dumps({"zz": 3, pk.hex(): -1, (b"\xed" * 33).hex(): True}))
    guard = RevisionGuard(LocalStore(tmp_path / "s"), path)
    assert guard.highest_seen(pk) is None and guard.highest_seen(b"\xed" * 33) is None


async def test_the_file_is_read_again_only_after_another_process_wrote_it(tmp_path):
    store, path = LocalStore(tmp_path / "s"), tmp_path / "seen.json"
    first, second = RevisionGuard(store, path), RevisionGuard(store, path)
    reads = []
    read = first._read
    first._read = lambda: reads.append(1) or read()  # type: ignore[method-assign]
    await first.registry_set(entry(5))
    await first.registry_set(entry(6))
    await first.registry_set(entry(7))
    assert reads == []  # no file yet, then only this process's own writes
    other = RegistryEntry.sign(bytes(32), 9, b"x")
    await second.registry_set(other)
    await first.registry_set(entry(8))
    assert len(reads) == 1  # replaced by the other process: merged, not overwritten
    assert json.loads(path.read_text()) == {entry(8).pk.hex(): 8, other.pk.hex(): 9}
