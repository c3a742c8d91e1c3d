"""Fixtures shared by every test: one devnet per test run, a clean chain per test.

Starting anvil and deploying costs ~0.1 s plus a one-time ~0.7 s eth-account import, so the
whole run shares one devnet and each test is isolated with ``evm_snapshot``/``evm_revert``:
it starts from the freshly deployed state and its transactions are undone afterwards.
Nothing is skipped: without anvil the devnet tests fail with the reason.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from fabstir_sdk.devnet import Devnet


@pytest.fixture(scope="session")
async def devnet_session() -> AsyncIterator[Devnet]:
    """The run's devnet, stopped at the end. Tests should use ``devnet``, which isolates."""
    async with Devnet.start() as net:
        yield net


@pytest.fixture
async def devnet(devnet_session: Devnet) -> AsyncIterator[Devnet]:
    """The shared devnet, reverted after the test to the state it had before it."""
    snapshot = await devnet_session.snapshot()
    try:
        yield devnet_session
    finally:
        await devnet_session.revert(snapshot)


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie counts as dead (a container's init may never reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no procfs (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.fixture
def process_gone() -> Callable[..., Awaitable[bool]]:
    """``await process_gone(pid, within=5.0)``: True once the process is dead."""

    async def wait(pid: int, within: float = 5.0) -> bool:
        deadline = time.monotonic() + within
        while process_alive(pid):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    return wait
