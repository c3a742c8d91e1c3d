"""``fabstir chat`` with its S5 portal unreachable from the start.

Before: the chat escrowed the deposit, streamed one answer, failed at the first write of the
conversation and exited with the job still open (the deposit back only after a
``complete_session`` by hand). The promise now (sessions.md, "From the command line"): the
store is reached before anything is paid; if it cannot be, the command exits non-zero with
a storage error and no transaction was sent.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest

from fabstir_sdk import FabstirSDK, StorageUnavailableError
from fabstir_sdk.devnet import Devnet, RunningHost
from tests.integration.cli_process import Chat
from tests.integration.conftest import nonce
from tests.integration.host_helpers import BUILTIN

pytestmark = pytest.mark.integration

USER, HOST = 1, 2


@pytest.fixture(scope="module")
async def net() -> AsyncIterator[Devnet]:
    async with Devnet.start(with_s5=True) as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def host(net) -> AsyncIterator[RunningHost]:
    running = await net.start_host(account=HOST, models=[BUILTIN], chain_poll=0.1)
    yield running
    await running.stop()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_chat_with_no_storage_pays_nothing(net, host, tmp_path):
    user = net.accounts[USER]
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(user.private_key)
        pm = sdk.get_payment_manager()
        before = await pm.get_token_balance(net.addresses.usdc_token)
    sent = await nonce(net, USER)
    chat = await Chat.start(
        net,
        "--model",
        BUILTIN,
        "--host-address",
        host.address,
        "--s5-portal-url",
        f"http://127.0.0.1:{closed_port()}",
        "--storage-dir",
        str(tmp_path / "state"),
        key=user.private_key,
    )
    code, out, err = await chat.finish("hello")
    assert code != 0 and out == ""
    assert "S5 storage is unreachable: nothing was paid" in err
    assert "fabstir: error: registry read: the S5 portal is unreachable" in err
    assert await nonce(net, USER) == sent  # no approve, no job
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(user.private_key)
        pm = sdk.get_payment_manager()
        assert await pm.get_token_balance(net.addresses.usdc_token) == before
        assert await (await sdk.get_session_manager()).list_sessions() == []


async def test_a_session_with_no_storage_from_the_start(net, host, tmp_path):
    """The SDK itself: with the portal unreachable before the first call, ``create_session``
    raises StorageUnavailableError before any transaction (it cannot keep the conversation
    it would pay for); nothing was paid."""
    user = net.accounts[USER]
    config = net.sdk_config(
        s5_portal_url=f"http://127.0.0.1:{closed_port()}", storage_dir=tmp_path / "state"
    )
    sent = await nonce(net, USER)
    async with FabstirSDK(config) as sdk:
        await sdk.authenticate(user.private_key)
        sm = await sdk.get_session_manager()
        with pytest.raises(StorageUnavailableError):
            await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
    assert await nonce(net, USER) == sent
