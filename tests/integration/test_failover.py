"""Failover: a host SIGKILLed mid-stream is replaced and the money comes out exact.

A private devnet with long-lived host processes, like the other host tests (no snapshot
reverts: a live host must never see a job id reused).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from fabstir_sdk import FabstirSDK, NoHostAvailableError, SessionState
from fabstir_sdk.devnet import Devnet

from .host_helpers import BUILTIN, PRICE, read_job

pytestmark = pytest.mark.integration

USER, FIRST, SECOND, LONE = 1, 2, 3, 4


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start() as devnet:
        yield devnet


@pytest.fixture
async def sdk(net):
    async with FabstirSDK(net.sdk_config()) as client:
        await client.authenticate(net.accounts[USER].private_key)
        yield client


async def proven(net, job_id: int, at_least: int, within: float = 60.0) -> int:
    """Wait until the job has at least ``at_least`` tokens proven on chain (``within`` only
    turns a hang into a failure: the host proves in its own process)."""
    deadline = time.monotonic() + within
    while True:
        job = await read_job(net, job_id)
        if job.tokens_used >= at_least or time.monotonic() > deadline:
            return job.tokens_used
        await asyncio.sleep(0.05)


async def test_host_killed_mid_stream_is_replaced(net, sdk):
    first = await net.start_host(
        account=FIRST, models=[BUILTIN], token_delay=0.004, checkpoint_tokens=200, chain_poll=0.05
    )
    second = await net.start_host(account=SECOND, models=[BUILTIN], chain_poll=0.05)
    try:
        usdc = net.addresses.usdc_token
        pm = sdk.get_payment_manager()
        before = await pm.get_token_balance(usdc)
        sm = await sdk.get_session_manager()
        session = await sm.create_session(
            model=BUILTIN, host=first.address, deposit="1", proof_interval=200, failover=True
        )
        first_job = session.job_id
        await session.send_prompt("My name is Eve.")

        seen: list[str] = []
        # 3000 tokens at 4 ms: the host is still streaming (12 s at least) however long the
        # proof below takes to land on a loaded machine (with 600, 1 s was left: a late proof
        # let the first host finish the answer, and nothing failed over)
        async with session.stream("count to 3000") as stream:
            async for chunk in stream:
                seen.append(chunk.text)
                if len(seen) == 350:
                    # a proof of the first 200 tokens is on chain before the host dies
                    assert await proven(net, first_job, 200) >= 200
                    first.kill()
        assert stream.text == " ".join(str(n) for n in range(1, 3001))  # answered afresh
        assert session.host.address == second.address and session.job_id != first_job
        (moved,) = session.failovers
        assert (moved.old_host, moved.old_job_id) == (first.address, first_job)
        assert (moved.new_host, moved.new_job_id) == (second.address, session.job_id)
        assert moved.settlement is not None and moved.settlement.refund > 0

        reply = await session.send_prompt("What is my name?")
        assert "Eve" in reply.text  # the history moved with the session
        settlement = await session.complete()

        old = await read_job(net, first_job)
        assert old.status is SessionState.COMPLETED
        paid_first = old.tokens_used * PRICE // 1000
        paid_second = settlement.tokens_used * PRICE // 1000
        assert moved.settlement.host_payment == paid_first
        assert settlement.host_payment == paid_second
        assert await pm.get_token_balance(usdc) == before - paid_first - paid_second

        storage = await sdk.get_storage_manager()
        conversation = await storage.load_conversation(session.conversation_id)
        contents = [m.content for m in conversation.messages]
        assert contents[0] == "My name is Eve." and "What is my name?" in contents
    finally:
        await first.stop()
        await second.stop()


async def test_no_other_host_raises_and_the_money_settles(net, sdk):
    lone_model = net.models[0]  # served by this host only
    lone = await net.start_host(
        account=LONE, models=[lone_model], token_delay=0.004, checkpoint_tokens=200, chain_poll=0.05
    )
    try:
        usdc = net.addresses.usdc_token
        pm = sdk.get_payment_manager()
        before = await pm.get_token_balance(usdc)
        sm = await sdk.get_session_manager()
        session = await sm.create_session(
            model=lone_model, host=lone.address, deposit="1", proof_interval=200, failover=True
        )
        job_id = session.job_id
        with pytest.raises(NoHostAvailableError):  # still streaming when killed (see above)
            async with session.stream("count to 3000") as stream:
                async for chunk in stream:
                    if chunk.index == 349:
                        assert await proven(net, job_id, 200) >= 200
                        lone.kill()
        job = await read_job(net, job_id)
        assert job.status is SessionState.COMPLETED  # settled as soon as the host was lost
        assert await pm.get_token_balance(usdc) == before - job.tokens_used * PRICE // 1000
    finally:
        await lone.stop()
