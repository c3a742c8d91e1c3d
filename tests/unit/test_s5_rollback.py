"""RevisionGuard on its own, over embedded stores standing in for portals: what it keeps,
what it refuses, and its file (merged across processes, tolerant of damage)."""

from __future__ import annotations

import asyncio
import json
import threading

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


class _SlowReads(LocalStore):
    """A portal whose answer to a registry read is on its way until ``answer`` is set."""

    def __init__(self, directory) -> None:
        super().__init__(directory)
        self.asked, self.answer = asyncio.Event(), asyncio.Event()

    async def registry_get(self, pk: bytes) -> RegistryEntry | None:
        entry = await super().registry_get(pk)  # the state when the read arrived
        self.asked.set()
        await self.answer.wait()
        return entry


async def test_a_write_landing_while_a_read_is_on_its_way_is_not_a_rollback(tmp_path):
    """One process reads a directory's entry and, meanwhile, writes it (another session of
    the same user): the read's answer predates the write. Before: RegistryRollbackError
    (the 500-session benchmark met it)."""
    store = _SlowReads(tmp_path / "s")
    guard = RevisionGuard(store, tmp_path / "seen.json")
    await guard.registry_set(entry(2))
    reading = asyncio.ensure_future(guard.registry_get(entry(2).pk))
    await store.asked.wait()
    await guard.registry_set(entry(3))
    store.answer.set()
    assert await reading == entry(2)
    assert guard.highest_seen(entry(2).pk) == 3
    stale = LocalStore(tmp_path / "stale")
    await stale.registry_set(entry(2))
    guard.inner = stale  # revision 2 served to a read sent after the write: a rollback
    with pytest.raises(RegistryRollbackError, match=r"revision 2 .* seen at revision 3"):
        await guard.registry_get(entry(2).pk)


class _Marks(dict):
    """The guard's marks, noting every thread that reads them."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.threads: set[int] = set()

    def items(self):
        self.threads.add(threading.get_ident())
        return super().items()

    def get(self, *args):
        self.threads.add(threading.get_ident())
        return super().get(*args)

    def __iter__(self):
        self.threads.add(threading.get_ident())
        return super().__iter__()


async def test_the_marks_are_only_touched_on_the_event_loops_thread(tmp_path):
    """The file is written in a worker thread, from a copy. Before: the thread iterated the
    live marks while the loop added one ("dictionary changed size during iteration" in the
    500-session benchmark) and replaced them, losing marks added meanwhile."""
    guard = RevisionGuard(LocalStore(tmp_path / "s"), tmp_path / "seen.json")
    marks = guard._seen = _Marks()
    others = [RegistryEntry.sign(bytes([k]) * 32, 1, b"x") for k in range(1, 9)]
    await asyncio.gather(*(guard.registry_set(e) for e in [entry(1), *others]))
    assert marks.threads == {threading.get_ident()}
    assert guard._seen is marks
    assert [guard.highest_seen(e.pk) for e in [entry(1), *others]] == [1] * 9
    assert len(json.loads((tmp_path / "seen.json").read_text())) == 9


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


async def test_a_held_lock_moves_the_write_to_a_thread_that_waits_for_it(tmp_path):
    """The file is written in the loop when its lock is free; while another writer holds
    it, the write waits in a thread and is on disk before registry_set returns."""
    import asyncio
    import threading

    from fabstir_sdk.s5._lockfile import file_lock

    store, path = LocalStore(tmp_path / "s"), tmp_path / "seen.json"
    guard = RevisionGuard(store, path)
    await guard.registry_set(entry(1))  # free: written in the loop
    assert json.loads(path.read_text()) == {entry(1).pk.hex(): 1}
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with file_lock(str(path) + ".lock") as got:
            assert got
            held.set()
            release.wait()

    thread = threading.Thread(target=holder)
    thread.start()
    await asyncio.to_thread(held.wait)
    with file_lock(str(path) + ".lock", wait=False) as got:
        assert got is False  # a second holder is refused at once
    write = asyncio.ensure_future(guard.registry_set(entry(2)))
    await asyncio.sleep(0)  # the write cannot finish while the lock is held
    assert not write.done()
    release.set()
    await write
    thread.join()
    assert json.loads(path.read_text()) == {entry(1).pk.hex(): 2}
