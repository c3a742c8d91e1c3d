"""A malicious S5 portal against the SDK's storage (see malicious_portal.py).

Each test quotes the promise it checks; each ends with an honest portal serving the same
user normally again.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from fabstir_sdk import (
    FabstirSDK,
    IntegrityError,
    RegistryRollbackError,
    StorageUnavailableError,
)

from .malicious_portal import MaliciousPortal

pytestmark = pytest.mark.integration

USER = 4


@pytest.fixture
async def portal(tmp_path) -> AsyncIterator[MaliciousPortal]:
    bad = MaliciousPortal(tmp_path / "portal")
    await bad.start()
    yield bad
    await bad.stop()


def user_sdk(devnet, portal: MaliciousPortal, tmp_path, **config) -> FabstirSDK:
    """An SDK of the test user over the malicious portal; its local state in tmp_path/user."""
    return FabstirSDK(
        devnet.sdk_config(s5_portal_url=portal.url, storage_dir=tmp_path / "user", **config)
    )


async def test_an_older_registry_revision_is_refused(devnet, portal, tmp_path):
    """security.md: "a portal that serves an older registry revision than this user has seen
    (a rollback) is refused with RegistryRollbackError, and no write builds on it" — also
    in a new process of the same user (the revisions seen are kept with the store)."""
    async with user_sdk(devnet, portal, tmp_path) as sdk:
        await sdk.authenticate(devnet.accounts[USER].private_key)
        st = await sdk.get_storage_manager()
        await st.store_data("balance-note", "v1")
        assert await st.retrieve_data("balance-note") == "v1"  # the portal served revision r
        await st.store_data("balance-note", "v2")
        assert await st.retrieve_data("balance-note") == "v2"  # and r + 1
        served = [portal.revisions_served(pk) for pk in portal.registry_answers]
        assert any(len(revisions) > 1 for revisions in served)  # a newer one exists

        portal.rollback = True  # from now on: the oldest signed entry of each key
        with pytest.raises(RegistryRollbackError, match="seen at revision"):
            await st.retrieve_data("balance-note")  # before: "v1", silently

    async with user_sdk(devnet, portal, tmp_path) as again:  # a new process, same user
        await again.authenticate(devnet.accounts[USER].private_key)
        st = await again.get_storage_manager()
        with pytest.raises(RegistryRollbackError):
            await st.retrieve_data("balance-note")
        with pytest.raises(RegistryRollbackError):
            await st.store_data("balance-note", "v3")  # would build on the stale "v1"
        portal.rollback = False
        assert await st.retrieve_data("balance-note") == "v2"  # nothing lost
        await st.store_data("balance-note", "v3")
        assert await st.retrieve_data("balance-note") == "v3"


async def test_flipped_blob_bytes_are_refused(devnet, portal, tmp_path):
    """security.md: "Nothing a portal returns is trusted: blobs are hashed" — one flipped
    byte is IntegrityError, never a wrong value."""
    async with user_sdk(devnet, portal, tmp_path) as sdk:
        await sdk.authenticate(devnet.accounts[USER].private_key)
        st = await sdk.get_storage_manager()
        await st.store_data("doc", {"text": "exact bytes"})
    portal.flip_blobs = True
    async with user_sdk(devnet, portal, tmp_path) as fresh:  # nothing cached in memory
        await fresh.authenticate(devnet.accounts[USER].private_key)
        st = await fresh.get_storage_manager()
        with pytest.raises(IntegrityError):
            await st.retrieve_data("doc")
        portal.flip_blobs = False
        assert await st.retrieve_data("doc") == {"text": "exact bytes"}


async def test_a_portal_that_never_answers_is_a_typed_error(devnet, portal, tmp_path):
    """reliability.md: a portal that is down gives "StorageUnavailableError (typed, after
    retries)"; one that holds every request forever costs at most 4 x ``s5_timeout``, and
    writes made meanwhile wait in the on-disk queue until it answers again."""
    async with user_sdk(devnet, portal, tmp_path) as sdk:
        await sdk.authenticate(devnet.accounts[USER].private_key)
        st = await sdk.get_storage_manager()
        await st.store_data("kept", "before")
        await st.store_data("other", "never read by the next process")
    async with user_sdk(devnet, portal, tmp_path, s5_timeout=0.5) as fresh:
        await fresh.authenticate(devnet.accounts[USER].private_key)
        st = await fresh.get_storage_manager()
        assert await st.retrieve_data("kept") == "before"
        await st.store_data("kept", "again")  # its directories are known to this process now
        portal.slow = True
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError):
            await st.retrieve_data("other")
        # bounded by the client's own deadlines (4 x 0.5 s + back-off), not by the portal;
        # the bound asserted is loose on purpose (a loaded machine), far below 4 x 30 s
        assert time.monotonic() - started < 60
        assert portal.held >= 4  # it really was held, every attempt
        await st.store_data("kept", "after")  # the portal is known down: to the queue
        assert st.queued > 0
        portal.answer_again()
        st.fs.store.retry_after = 0  # type: ignore[attr-defined]  # no back-off wait
        assert await st.flush() > 0
        assert st.queued == 0
        assert await st.retrieve_data("other") == "never read by the next process"
        assert await st.retrieve_data("kept") == "after"


async def test_a_portal_that_loses_writes_is_caught_at_the_next_read(devnet, portal, tmp_path):
    """security.md: a portal that accepts writes and loses them cannot make the SDK read the
    older data as if it were current: the next read is RegistryRollbackError."""
    async with user_sdk(devnet, portal, tmp_path) as sdk:
        await sdk.authenticate(devnet.accounts[USER].private_key)
        st = await sdk.get_storage_manager()
        await st.store_data("note", "kept")
        assert await st.retrieve_data("note") == "kept"
        portal.lose_writes = True
        await st.store_data("note", "lost")  # answered like a success
        assert "registry" in portal.lost and "upload" in portal.lost
        portal.lose_writes = False
        with pytest.raises(RegistryRollbackError):
            await st.retrieve_data("note")  # before: "kept", as if nothing had been written
