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

#: Test files whose every test starts processes of its own (a doc example, a user's pytest
#: run, a CLI, a fork) and which share nothing module-wide. They run first, and under
#: pytest-xdist (``make test``: ``-n 2 --dist loadfile``) each of their tests is a work unit
#: of its own, so that both workers take them on at once instead of one worker being left
#: with a file of them at the end; every other file stays whole in one worker (its
#: module-scoped devnet and hosts are started once).
SPREAD = frozenset(
    {
        "tests/integration/test_cli_devnet.py",
        "tests/integration/test_cli_host.py",
        "tests/integration/test_contract_generation.py",
        "tests/integration/test_doc_examples.py",
        "tests/integration/test_examples.py",
        "tests/integration/test_fork.py",
        "tests/integration/test_host_process.py",
        "tests/integration/test_notebook.py",
        "tests/integration/test_plugin.py",
        "tests/unit/test_docs.py",
    }
)


def _file(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The SPREAD files first (a stable sort: the rest keep their order)."""
    items.sort(key=lambda item: _file(item.nodeid) not in SPREAD)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """With ``--dist loadfile``: whole files, except each test of a SPREAD file on its own,
    handed out in collection order (SPREAD first, the long ones while both workers are
    free)."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SpreadFirst(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return nodeid if _file(nodeid) in SPREAD else _file(nodeid)

    config.option.loadscopereorder = False  # collection order, not the biggest file first
    return SpreadFirst(config, log)


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
    """``await process_gone(pid, within=30.0)``: True once the process is dead (the default
    bound only turns a hang into a failure: a loaded machine reaps late)."""

    async def wait(pid: int, within: float = 30.0) -> bool:
        deadline = time.monotonic() + within
        while process_alive(pid):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    return wait
