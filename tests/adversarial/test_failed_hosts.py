"""Discovery after a host failed in front of the SDK (docs/discovery.md, reliability.md).

The promise: a failure that any manager sees (a paid session that cannot connect, a
failover) marks the host down in discovery at once, so the next ``create_session`` is not
sent to it again while its cached health check still says "healthy"; a later check, once
the host is back, offers it again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fabstir_sdk import FabstirSDK, HostUnreachableError, NoHostAvailableError
from fabstir_sdk.devnet import Devnet

pytestmark = pytest.mark.integration

BUILTIN = "fabstir/builtin:toy-1.gguf"
USER, HOST = 1, 2
DEPOSIT = 1_000_000


@pytest.fixture(scope="module")
async def net() -> AsyncIterator[Devnet]:
    async with Devnet.start() as devnet:
        yield devnet


async def test_a_host_that_failed_is_not_offered_until_a_later_check(net):
    host = await net.start_host(account=HOST, chain_poll=0.1)
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(net.accounts[USER].private_key)
        dm = sdk.get_discovery_manager()
        assert [h.address for h in await dm.find_hosts(required_models=[BUILTIN])] == [
            host.address
        ]  # checked healthy: that result is cached for health_ttl (30 s)
        await host.stop()
        pm = sdk.get_payment_manager()
        before = await pm.get_token_balance(net.addresses.usdc_token)
        sm = await sdk.get_session_manager()
        with pytest.raises(HostUnreachableError):
            await sm.create_session(model=BUILTIN, deposit="1")  # discovery picks it
        assert await pm.get_token_balance(net.addresses.usdc_token) == before  # refunded

        # before: offered again for the rest of health_ttl, each attempt a paid job
        with pytest.raises(NoHostAvailableError):
            await dm.find_hosts(required_models=[BUILTIN])
        assert dm.last_dropped == {"unhealthy": 1}

        back = await net.start_host(account=HOST, chain_poll=0.1)  # re-registers its URL
        try:
            dm.health_ttl = dm.registry_ttl = dm.result_ttl = 0  # "later": checked again
            assert [h.address for h in await dm.find_hosts(required_models=[BUILTIN])] == [
                back.address
            ]
            session = await sm.create_session(model=BUILTIN, deposit="1")
            assert (await session.send_prompt("count to 3")).text == "1 2 3"
            settlement = await session.complete()
            assert settlement.refund == DEPOSIT - 2000
        finally:
            await back.stop()


async def test_a_host_that_dies_mid_answer_is_marked_down_at_once(net):
    """The same for a failure in the middle of an answer, without failover: the session's
    HostUnreachableError marks the host down in the SDK's discovery at once."""
    host = await net.start_host(account=HOST, chain_poll=0.1, token_delay=0.01)
    try:
        async with FabstirSDK(net.sdk_config()) as sdk:
            await sdk.authenticate(net.accounts[USER].private_key)
            dm = sdk.get_discovery_manager()
            assert [h.address for h in await dm.find_hosts(required_models=[BUILTIN])] == [
                host.address
            ]
            sm = await sdk.get_session_manager()
            session = await sm.create_session(model=BUILTIN, deposit="1")
            with pytest.raises(HostUnreachableError):
                async with session.stream("count to 1000") as stream:
                    async for _ in stream:
                        host.kill()  # at the first token
            with pytest.raises(NoHostAvailableError):
                await dm.find_hosts(required_models=[BUILTIN])
            assert dm.last_dropped == {"unhealthy": 1}
            settlement = await sm.complete_session(session.session_id)
            assert settlement.refund == DEPOSIT - settlement.tokens_used * 2
    finally:
        await host.stop()
