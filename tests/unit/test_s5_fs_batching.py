"""Directory updates queued together go out in one publish (group commit), each change's own
error to its own caller."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence

from fabstir_sdk.errors import InvalidStorageKeyError
from fabstir_sdk.s5 import RegistryEntry
from fabstir_sdk.s5._fs import FileSystem
from fabstir_sdk.s5._keys import S5Identity
from fabstir_sdk.s5._local import LocalStore


class CountingStore(LocalStore):
    """The embedded store, counting the registry entries published per key."""

    def __init__(self, directory) -> None:
        super().__init__(directory)
        self.publishes: Counter[bytes] = Counter()

    async def publish(
        self, record: bytes, entry: RegistryEntry, blobs: Sequence[bytes] = ()
    ) -> None:
        self.publishes[entry.pk] += 1
        await super().publish(record, entry, blobs)


class HoldingStore(CountingStore):
    """Holds the first publish of one key until a condition on the file system holds."""

    def __init__(self, directory) -> None:
        super().__init__(directory)
        self._held: tuple[bytes, Callable[[], bool]] | None = None

    def hold(self, pk: bytes, until: Callable[[], bool]) -> None:
        self._held = (pk, until)

    async def publish(
        self, record: bytes, entry: RegistryEntry, blobs: Sequence[bytes] = ()
    ) -> None:
        if self._held is not None and entry.pk == self._held[0]:
            until, self._held = self._held[1], None
            while not until():  # noqa: ASYNC110 (no event: the writers are the code under test)
                await asyncio.sleep(0)
        await super().publish(record, entry, blobs)


async def test_many_sessions_adding_to_one_directory_share_publishes(tmp_path):
    """40 sessions of one user write their first file at once: each adds its directory to
    ``home/sessions/u``. The first change goes out alone, the 39 queued behind it in one
    more publish. Before: 40 publishes one after another (1,000 sessions spent most of
    their answer time queued on that directory)."""
    store = HoldingStore(tmp_path)
    fs = FileSystem(store, S5Identity(b"one-user-of-forty-sessions"))
    parent = fs._keys(("home", "sessions", "u")).pk
    # The first publish of the parent is held until the other 39 changes queued behind it,
    # however the machine schedules the 40 writes (without the hold, a loaded machine let
    # them arrive in three waves).
    store.hold(parent, until=lambda: len(fs._queued.get(parent, [])) == 39)
    await asyncio.gather(*(fs.put(f"home/sessions/u/{i}/data/m.json", {"i": i}) for i in range(40)))
    assert store.publishes[parent] == 2
    assert [e.name for e in await fs.list("home/sessions/u")] == sorted(map(str, range(40)))
    fresh = FileSystem(store, S5Identity(b"one-user-of-forty-sessions"))  # nothing cached
    assert [await fresh.get(f"home/sessions/u/{i}/data/m.json") for i in range(40)] == [
        {"i": i} for i in range(40)
    ]


async def test_a_change_that_fails_in_a_batch_fails_alone(tmp_path):
    store = HoldingStore(tmp_path)
    fs = FileSystem(store, S5Identity(b"one-user-with-a-bad-write"))
    await fs.put("home/x/a/f", 1)  # "a" is a directory of x
    x = fs._keys(("home", "x")).pk
    store.hold(x, until=lambda: len(fs._queued.get(x, [])) == 3)  # the others queue behind
    first = asyncio.ensure_future(fs.put("home/x/first", 0))  # publishing while the rest queue
    results = await asyncio.gather(
        fs.put("home/x/a", 2), fs.put("home/x/b", 3), fs.put("home/x/c", 4), return_exceptions=True
    )
    await first
    assert isinstance(results[0], InvalidStorageKeyError)
    assert [await fs.get(p) for p in ("home/x/first", "home/x/b", "home/x/c")] == [0, 3, 4]
    assert store.publishes[fs._keys(("home", "x")).pk] == 3  # a/, then first, then b and c
    listed = {e.name: e.type for e in await fs.list("home/x")}
    assert listed == {"a": "directory", "b": "file", "c": "file", "first": "file"}


class HeldStore(CountingStore):
    """Publishes wait for ``go`` once ``hold`` is set; ``held`` says one is waiting."""

    def __init__(self, directory) -> None:
        super().__init__(directory)
        self.hold, self.held, self.go = False, asyncio.Event(), asyncio.Event()

    async def publish(
        self, record: bytes, entry: RegistryEntry, blobs: Sequence[bytes] = ()
    ) -> None:
        if self.hold:
            self.held.set()
            await self.go.wait()
        await super().publish(record, entry, blobs)


async def test_a_publisher_cancelled_mid_batch_leaves_the_others_to_the_next(tmp_path):
    """B publishes B's and C's change; B's caller is cancelled meanwhile: C's change is
    published by C, not lost and not waited on forever."""
    store = HeldStore(tmp_path)
    fs = FileSystem(store, S5Identity(b"one-user-cancelled-midway"))
    await fs.put("home/x/first", 0)
    store.hold = True
    first = asyncio.ensure_future(fs.put("home/x/a", 1))
    await store.held.wait()  # a publishes alone; b and c queue behind it
    b = asyncio.ensure_future(fs.put("home/x/b", 2))
    c = asyncio.ensure_future(fs.put("home/x/c", 3))
    await asyncio.sleep(0)  # both queued (nothing to wait for: they queue at once)
    store.held.clear()
    store.go.set()
    await first
    store.go.clear()
    await store.held.wait()  # b's batch (b and c) is being published
    b.cancel()
    store.go.set()
    await c
    assert b.cancelled()
    assert await fs.get("home/x/c") == 3
