"""The trio thread behind asyncio: results, errors, cancellation and timeouts both ways."""

import asyncio
import threading

import pytest
import trio

from fabstir_sdk import P2PError, P2PNodeClosedError, P2PTimeoutError, PeerUnreachableError
from fabstir_sdk.p2p._bridge import TrioBridge


async def idle(task_status):
    task_status.started("ready")
    await trio.sleep_forever()


def bridge_threads():
    return [t for t in threading.enumerate() if t.name == "fabstir-p2p"]


@pytest.fixture
async def bridge():
    b = TrioBridge()
    assert await b.start(idle) == "ready"
    yield b
    await b.stop()
    assert bridge_threads() == []


async def test_call_returns_the_value_from_the_trio_thread(bridge):
    async def where():
        await trio.lowlevel.checkpoint()
        return threading.current_thread().name

    assert await bridge.call(where) == "fabstir-p2p"


async def test_errors_come_back_typed_and_unwrapped(bridge):
    async def fails():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_raise, ConnectionRefusedError("refused"))

    with pytest.raises(PeerUnreachableError, match="refused") as info:
        await bridge.call(fails)
    assert not isinstance(info.value, BaseExceptionGroup)


async def _raise(exc):
    raise exc


async def test_trio_side_timeout(bridge):
    cancelled = threading.Event()

    async def slow():
        try:
            await trio.sleep(30)
        finally:
            cancelled.set()

    with pytest.raises(P2PTimeoutError):
        await bridge.call(slow, timeout=0.05)
    assert cancelled.is_set()
    assert await bridge.call(_value, 7) == 7  # the bridge is still usable


async def _value(x):
    return x


async def test_asyncio_cancellation_reaches_trio_and_waits_for_it(bridge):
    loop = asyncio.get_running_loop()
    started, finished = asyncio.Event(), threading.Event()

    async def slow():
        loop.call_soon_threadsafe(started.set)
        try:
            await trio.sleep(30)
        finally:
            finished.set()

    task = asyncio.ensure_future(bridge.call(slow))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()  # the trio task ended before the caller got control back


async def test_asyncio_timeout_reaches_trio(bridge):
    finished = threading.Event()

    async def slow():
        try:
            await trio.sleep(30)
        finally:
            finished.set()

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(bridge.call(slow), 0.05)
    assert finished.is_set()


async def test_trio_calls_asyncio_and_gets_the_result(bridge):
    loop_thread = threading.current_thread().name

    async def on_asyncio(x):
        await asyncio.sleep(0)
        return (threading.current_thread().name, x * 2)

    async def from_trio():
        return await bridge.to_asyncio(on_asyncio, 21)

    assert await bridge.call(from_trio) == (loop_thread, 42)


async def test_trio_cancellation_reaches_asyncio(bridge):
    seen = asyncio.Event()

    async def on_asyncio():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.set()
            raise

    async def from_trio():
        with trio.move_on_after(0.05):
            await bridge.to_asyncio(on_asyncio)
        return "moved on"

    assert await bridge.call(from_trio) == "moved on"
    await seen.wait()  # another thread's cancellation: no deadline of ours (pytest's timeout)


async def test_asyncio_errors_reach_trio(bridge):
    async def on_asyncio():
        raise KeyError("from asyncio")

    async def from_trio():
        try:
            await bridge.to_asyncio(on_asyncio)
        except KeyError as exc:
            return f"caught {exc}"

    assert await bridge.call(from_trio) == "caught 'from asyncio'"


async def test_stop_fails_pending_calls_and_leaves_no_thread():
    b = TrioBridge()
    await b.start(idle)
    pending = asyncio.ensure_future(b.call(trio.sleep, 30))
    await asyncio.sleep(0.05)
    await b.stop()
    with pytest.raises(P2PNodeClosedError):
        await pending
    assert bridge_threads() == []
    with pytest.raises(P2PNodeClosedError):
        await b.call(_value, 1)
    await b.stop()  # idempotent


async def test_failed_start_raises_typed_and_leaves_no_thread():
    async def broken(task_status):
        raise ConnectionRefusedError("bootstrap is down")

    b = TrioBridge()
    with pytest.raises(PeerUnreachableError, match="bootstrap is down"):
        await b.start(broken)
    assert bridge_threads() == []
    assert not b.running


async def test_a_crash_after_start_closes_the_bridge():
    async def crashes(task_status):
        task_status.started(None)
        await trio.sleep(0.01)
        raise RuntimeError("the swarm died")

    b = TrioBridge()
    await b.start(crashes)
    while b.running:  # noqa: ASYNC110  (the trio thread's crash, however late it runs)
        await asyncio.sleep(0.01)
    with pytest.raises(P2PError):
        await b.call(_value, 1)
    await b.stop()
    assert bridge_threads() == []
