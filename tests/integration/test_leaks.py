"""No leaked asyncio tasks, threads, file descriptors or sockets after ``sdk.aclose()``.

A whole lifecycle — authenticate, storage over the local S5 portal, discovery (registry,
/health checks), a paid session with a host process picked by discovery, a streamed answer,
settlement, ``aclose()`` — runs once to warm up (lazy imports, the loop's own executor),
then ROUNDS more times; afterwards the process must hold nothing it did not hold before.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections import Counter

import pytest

from fabstir_sdk import FabstirSDK
from fabstir_sdk.devnet import Devnet

from .host_helpers import BUILTIN

pytestmark = pytest.mark.integration

USER, HOST = 1, 2
ROUNDS = 3


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start(with_s5=True) as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def host(net, tmp_path_factory):
    # The host keeps its checkpoints in its own directory: its keep-alive connections to
    # the (in-process) portal would otherwise count as this process's sockets.
    store = tmp_path_factory.mktemp("host-store")
    running = await net.start_host(
        account=HOST, models=[BUILTIN], chain_poll=0.1, storage_dir=store
    )
    yield running
    await running.stop()


def fds() -> dict[str, int]:
    """Open descriptors by kind: sockets, pipes, files, other (from /proc/self/fd)."""
    kinds = {"socket": 0, "pipe": 0, "file": 0, "other": 0}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the listing's own descriptor, already closed
            continue
        kind = target.split(":", 1)[0] if ":" in target else "file"
        kinds[kind if kind in kinds else "other"] += 1
    return kinds


def census() -> dict[str, object]:
    """What this process holds; the loop's default executor threads are a pool, not a leak."""
    current = asyncio.current_task()
    return {
        "tasks": sorted(
            repr(t.get_coro()) for t in asyncio.all_tasks() if t is not current and not t.done()
        ),
        "threads": sorted(
            t.name for t in threading.enumerate() if not t.name.startswith("asyncio_")
        ),
        "fds": fds(),
    }


def new_since(baseline: dict[str, object], now: dict[str, object]) -> dict[str, object]:
    """What ``now`` holds beyond ``baseline``: tasks and threads not there before, more
    descriptors of a kind. What was there and ended meanwhile (something an earlier test
    left, ending late on a loaded machine) is not a difference."""
    extra: dict[str, object] = {}
    for key in ("tasks", "threads"):
        more = Counter(now[key]) - Counter(baseline[key])
        if more:
            extra[key] = sorted(more.elements())
    fds_now, fds_before = now["fds"], baseline["fds"]
    assert isinstance(fds_now, dict) and isinstance(fds_before, dict)
    more_fds = {k: n - fds_before.get(k, 0) for k, n in fds_now.items() if n > fds_before.get(k, 0)}
    if more_fds:
        extra["fds"] = more_fds
    return extra


async def leaked(baseline: dict[str, object], within: float = 60.0) -> dict[str, object]:
    """What the process holds beyond ``baseline`` once that is nothing (peers close their
    ends asynchronously), or what it still is after ``within`` seconds (only against a hang:
    a loaded machine closes late)."""
    deadline = time.monotonic() + within
    while True:
        extra = new_since(baseline, census())
        if not extra or time.monotonic() > deadline:
            return extra
        await asyncio.sleep(0.05)


async def lifecycle(net, host) -> None:
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(net.accounts[USER].private_key)
        storage = await sdk.get_storage_manager()
        await storage.save_user_settings({"theme": "dark"})
        found = await sdk.get_discovery_manager().find_host(required_models=[BUILTIN])
        assert found.address == host.address
        sm = await sdk.get_session_manager()
        session = await sm.create_session(model=BUILTIN, deposit="0.5")  # discovery picks
        assert session.host.address == host.address
        async with session.stream("count to 20") as stream:
            async for _ in stream:
                pass
        assert stream.text == " ".join(str(i) for i in range(1, 21))
        settlement = await session.complete()
        assert settlement.tokens_used == 1000
        conversation = await storage.load_conversation(session.conversation_id)
        assert len(conversation.messages) == 2


async def quiet() -> dict[str, object]:
    """The census once three samples in a row agree (at most a few seconds), after a garbage
    collection: what earlier tests dropped (say a ThreadPoolExecutor in a reference cycle,
    whose idle threads end only when it is collected) must not end during the lifecycle and
    count as a difference. Not collected afterwards: what the SDK drops must be closed.
    At most 30 s: on a loaded machine what earlier tests left may take that long to end."""
    gc.collect()
    seen = [census()]
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline and not (len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]):
        await asyncio.sleep(0.05)
        seen.append(census())
    return seen[-1]


async def test_a_full_lifecycle_leaks_no_tasks_threads_or_descriptors(net, host):
    before = await quiet()
    await lifecycle(net, host)
    assert await leaked(before) == {}
    for _ in range(ROUNDS - 1):
        await lifecycle(net, host)
    assert await leaked(before) == {}
