"""Many sessions at once from one account in one process: every one opens, streams and
settles to the base unit (one nonce allocator, one allowance, one storage tree shared).

Its own devnet (no snapshot reverts) with real host processes and the local S5 portal.
"""

from __future__ import annotations

import asyncio

import pytest

from fabstir_sdk import FabstirSDK, SessionState

from .host_helpers import BUILTIN, PRICE

pytestmark = pytest.mark.integration

USER = 1
HOSTS = (2, 4)
SESSIONS = 50
DEPOSIT = "0.5"  # 500_000 micro-USDC each (the minimum)


@pytest.fixture(scope="module")
async def net():
    from fabstir_sdk.devnet import Devnet

    async with Devnet.start(with_s5=True) as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def hosts(net):
    running = await asyncio.gather(
        *(net.start_host(account=a, models=[BUILTIN], chain_poll=0.1) for a in HOSTS)
    )
    yield running
    await asyncio.gather(*(h.stop() for h in running))


async def test_fifty_sessions_at_once_from_one_account(net, hosts):
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(net.accounts[USER].private_key)
        sm = await sdk.get_session_manager()
        pm = sdk.get_payment_manager()
        usdc = net.addresses.usdc_token
        before = await pm.get_token_balance(usdc)

        async def one(i: int) -> tuple[str, int, object]:
            host = hosts[i % len(hosts)].address
            session = await sm.create_session(model=BUILTIN, host=host, deposit=DEPOSIT)
            reply = await session.send_prompt(f"count to {i % 7 + 3}")
            assert reply.text == " ".join(str(n) for n in range(1, i % 7 + 4))
            return reply.text, session.job_id, await session.complete()

        results = await asyncio.gather(*(one(i) for i in range(SESSIONS)))
        job_ids = [job_id for _, job_id, _ in results]
        assert len(set(job_ids)) == SESSIONS
        for _, job_id, settlement in results:
            # Each bill is padded to the 1000-token proof interval: 2000 micro-USDC.
            assert settlement.tokens_used == 1000
            assert settlement.host_payment == 1000 * PRICE // 1000 == 2000
            assert (settlement.treasury_fee, settlement.host_net) == (200, 1800)
            assert settlement.refund == 500_000 - 2000
            job = await pm.get_session_job(job_id)
            assert job.status is SessionState.COMPLETED
        assert await pm.get_token_balance(usdc) == before - SESSIONS * 2000
        storage = await sdk.get_storage_manager()
        stored = {c.id for c in await storage.list_conversations()}
        assert {str(j) for j in job_ids} <= stored
