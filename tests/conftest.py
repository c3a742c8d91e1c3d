"""Fixtures shared by every test: one devnet per test run, a clean chain per test.

Starting anvil and deploying costs ~0.1 s plus a one-time ~0.7 s eth-account import, so the
whole run shares one devnet and each test is isolated with ``evm_snapshot``/``evm_revert``:
it starts from the freshly deployed state and its transactions are undone afterwards.
Nothing is skipped: without anvil the devnet tests fail with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

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
