"""Settlement while the host's last proof is in flight: the races a crowd of sessions meets."""

from __future__ import annotations

import asyncio
import logging

from fabstir_sdk import FabstirSDK
from fabstir_sdk.models import Settlement

from .conftest import HOST, USDC_PRICE, USER
from .rpc_proxy import RpcProxy


async def test_completion_estimated_before_the_hosts_proof_landed_still_settles(
    devnet, host, caplog
):
    """The user estimates ``completeSessionJob`` while nothing is proven (no host payment to
    make), then the host's proof is mined before the user's transaction: settling now pays
    the host too, which costs more gas than estimated. Before: the transaction ran out of gas
    and was reported as a bare revert (1,000-session benchmark: 13 such errors)."""
    usdc = devnet.addresses.usdc_token
    proxy = await RpcProxy(devnet.rpc_url).start()
    try:
        async with FabstirSDK(devnet.sdk_config(rpc_url=proxy.url)) as user:
            await user.authenticate(devnet.accounts[USER].private_key)
            pm = user.get_payment_manager()
            await pm.approve_usdc(usdc, "1")
            await pm.deposit("1", usdc)
            created = await pm.create_session_job_from_deposit(
                devnet.accounts[HOST].address,
                "1",
                USDC_PRICE,
                3600,
                1000,
                model=devnet.models[0],
                token=usdc,
            )
            await devnet.advance_time(10)
            held = proxy.gate("eth_sendRawTransaction")  # the user's completion, once estimated
            completion = asyncio.ensure_future(pm.complete_session_job(created.job_id))
            await held.arrived.wait()
            hm = host.get_host_manager()
            await hm.submit_proof_of_work(created.job_id, 1500, b"\x42" * 32, "", "")
            held.opened.set()
            with caplog.at_level(logging.INFO, logger="fabstir_sdk.chain"):
                settlement = await completion
            assert settlement == Settlement(
                job_id=created.job_id,
                tokens_used=1500,
                host_payment=3000,
                treasury_fee=300,
                host_net=2700,
                refund=997_000,
                token=usdc,
                tx_hash=settlement.tx_hash,
            )
            # the first transaction ran out of gas, was diagnosed and sent again
            (retry,) = [r.getMessage() for r in caplog.records if "out of gas" in r.getMessage()]
            assert retry.startswith("completeSessionJob: transaction 0x")
            assert await pm.get_deposit_balance(usdc) == 997_000
            assert await hm.get_host_earnings(usdc) == 2700
    finally:
        await proxy.stop()
