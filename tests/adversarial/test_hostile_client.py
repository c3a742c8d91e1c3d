"""A hostile client against the reference host (hostile_client.py), beside an honest user.

host.md and security.md promise that the host refuses a session the chain does not back
(someone else's job, a settled job, another chain) with a typed error frame, answers
malformed frames with error frames, closes a connection that sends an oversized frame,
drops a reader that never reads, and keeps serving everyone else meanwhile. Checked here
together with the money: nobody's job is billed for anything but what its own depositor
was streamed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import websockets

from fabstir_sdk import FabstirSDK, SessionState
from fabstir_sdk.devnet import Devnet, RunningHost
from tests.integration.host_helpers import (
    BUILTIN,
    DROPPED,
    USER,
    host_logged,
    open_job,
    read_job,
)

from . import hostile_client as hostile

pytestmark = pytest.mark.integration

HOST = 2
DEPOSIT = 1_000_000


@pytest.fixture(scope="module")
async def net() -> AsyncIterator[Devnet]:
    async with Devnet.start() as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def host(net) -> AsyncIterator[RunningHost]:
    running = await net.start_host(
        account=HOST,
        chain_poll=0.1,
        idle_timeout=2.0,
        max_connections_per_ip=48,
        context_window=250_000,  # room for an answer far larger than the socket buffers
        debug=True,  # its DEBUG log says when it drops a client: tests wait on that
    )
    yield running
    await running.stop()


async def test_refused_sessions_cost_nobody_anything(net, host):
    """host.md: the host checks on chain that "the job exists, is active, names it and this
    model, and that you are its depositor" before it answers: a stranger, a settled job and
    another chain are refused, and the victim's job is billed only for its own answers."""
    victim = await open_job(net, host.address)
    settled = await open_job(net, host.address)
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(net.accounts[USER].private_key)
        await sdk.get_payment_manager().complete_session_job(settled)
    codes = await asyncio.gather(
        hostile.stranger_init(net, host, victim),
        hostile.refused_init(net, host, settled),
        hostile.refused_init(net, host, victim, chain_id=1),
    )
    assert codes == ["NOT_DEPOSITOR", "JOB_NOT_ACTIVE", "WRONG_CHAIN"]
    job = await read_job(net, victim)
    assert (job.tokens_used, job.deposit) == (0, DEPOSIT)  # untouched by the attempts
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(net.accounts[USER].private_key)
        settlement = await sdk.get_payment_manager().complete_session_job(victim)
    assert (settlement.tokens_used, settlement.refund) == (0, DEPOSIT)


async def test_garbage_and_floods_beside_an_honest_user(net, host):
    """security.md / reliability.md: malformed frames are answered with error frames, an
    oversized one closes its own connection (1009), 30 silent connections take nothing from
    anyone else; meanwhile an honest user's paid session is answered and settled exactly."""
    accepted = await hostile.connection_flood(host, 30)
    try:
        codes, close_code = await asyncio.gather(
            hostile.malformed_frames(net, host), hostile.huge_frame(host)
        )
        assert len(codes) == 25 * len(hostile.MALFORMED)
        assert all(isinstance(code, str) and code for code in codes)
        assert close_code == 1009
        assert accepted == 30
        await honest_user_is_served(net, host)
    finally:
        await hostile.close_all()


async def honest_user_is_served(net: Devnet, host: RunningHost) -> None:
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(net.accounts[USER].private_key)
        pm = sdk.get_payment_manager()
        before = await pm.get_token_balance(net.addresses.usdc_token)
        sm = await sdk.get_session_manager()
        session = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
        assert (await session.send_prompt("count to 3")).text == "1 2 3"
        settlement = await session.complete()
        assert (settlement.tokens_used, settlement.refund) == (1000, DEPOSIT - 2000)
        assert await pm.get_token_balance(net.addresses.usdc_token) == before - 2000


async def test_a_reader_that_never_reads_is_dropped_and_billed_within_its_deposit(net, host):
    """host.md: a client that stops reading is dropped at the idle deadline (the host's sends
    block once the buffers fill); an honest user is served meanwhile, and the stuck job is
    billed for what the host proved of it, within the deposit."""
    stuck_job = await open_job(net, host.address)
    stuck = await hostile.never_read(net, host, stuck_job, words=200_000)
    try:
        await honest_user_is_served(net, host)
        # the event: the host says it dropped the reader (the bound only turns a hang into a
        # failure); then what the buffers held is read, and the answer never completed
        await asyncio.wait_for(host_logged(host, DROPPED), 120)
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                assert '"stream_end"' not in await stuck.ws.recv()
    finally:
        await stuck.close()
    # the host may already have settled it on the disconnect: either way, the same split
    job = await read_job(net, stuck_job)
    if job.status is SessionState.ACTIVE:
        async with FabstirSDK(net.sdk_config()) as sdk:
            await sdk.authenticate(net.accounts[USER].private_key)
            await sdk.get_payment_manager().complete_session_job(stuck_job)
        job = await read_job(net, stuck_job)
    assert job.status is SessionState.COMPLETED
    assert 0 < job.tokens_used <= 200_000  # it was streamed to, and billed within the cap
