"""Settlement while the host's last proof is in flight: the races a crowd of sessions meets."""

from __future__ import annotations

import asyncio
import logging

from fabstir_sdk import FabstirSDK
from fabstir_sdk.chain.model_id import model_id
from fabstir_sdk.chain.rpc import JsonRpcClient
from fabstir_sdk.devnet import Devnet
from fabstir_sdk.host._billing import JobBilling, TxPipeline
from fabstir_sdk.host._chain import HostChain
from fabstir_sdk.host._checkpoints import UnstoredCheckpoints
from fabstir_sdk.host._clock import ChainClock
from fabstir_sdk.models import Settlement

from .conftest import HOST, USDC_PRICE, USER
from .host_helpers import BUILTIN
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


async def _pending_nonce(rpc: JsonRpcClient, address: str) -> int:
    return int(await rpc.call("eth_getTransactionCount", address, "pending"), 16)


async def test_a_host_has_its_final_proofs_in_flight_together():
    """Four sessions ask for their final proofs at once while blocks are mined by hand: all
    four proofs wait in the mempool together and are mined in one block (before: the host
    sent one transaction and waited for its receipt before the next, so 250 sessions on one
    host could not all be proven within complete()'s 60 s)."""
    sessions = 4
    async with Devnet.start() as net:
        host = await net.start_host(account=HOST, models=[BUILTIN], chain_poll=0.1)
        rpc = JsonRpcClient(net.rpc_url)
        try:
            async with FabstirSDK(net.sdk_config()) as sdk:
                await sdk.authenticate(net.accounts[USER].private_key)
                pm = sdk.get_payment_manager()
                usdc = net.addresses.usdc_token
                await pm.approve_usdc(usdc, str(sessions))
                await pm.deposit(str(sessions), usdc)
                sm = await sdk.get_session_manager()
                opened = [
                    await sm.create_session(
                        model=BUILTIN, host=host.address, payment="deposit", deposit="1"
                    )
                    for _ in range(sessions)
                ]
                for session in opened:
                    assert (await session.send_prompt("count to 3")).text == "1 2 3"
                await net.advance_time(10)  # the contract's rate limit allows each claim
                before = await _pending_nonce(rpc, host.address)
                await rpc.call("evm_setAutomine", False)
                completing = asyncio.gather(*(s.complete() for s in opened))
                try:
                    for _ in range(600):  # until every proof is in the mempool (60 s at most)
                        if await _pending_nonce(rpc, host.address) == before + sessions:
                            break
                        await asyncio.sleep(0.1)
                    assert await _pending_nonce(rpc, host.address) == before + sessions
                    await rpc.call("evm_mine")
                    mined = await rpc.call("eth_getBlockByNumber", "latest", True)
                except BaseException:
                    completing.cancel()
                    await asyncio.gather(completing, return_exceptions=True)
                    raise
                finally:
                    await rpc.call("evm_setAutomine", True)
                await rpc.call("evm_mine")  # a completion sent before automine was back
                settlements = await completing
                assert [(s.tokens_used, s.host_payment, s.refund) for s in settlements] == [
                    (1000, 2000, 998_000)
                ] * sessions
                proofs = [t for t in mined["transactions"] if t["from"] == host.address.lower()]
                assert len(proofs) == sessions  # mined together, in one block
                assert await pm.get_deposit_balance(usdc) == sessions * 1_000_000 - sessions * 2000
                earnings = await sdk.get_host_manager().get_host_earnings(usdc, host.address)
                assert earnings == sessions * 1800
        finally:
            await rpc.aclose()
            await host.stop()


async def test_the_host_leaves_a_job_the_user_completed_at_once(devnet, user, host):
    """The user completed the job before disconnecting (``Session.complete()``): the host's
    settlement sees it in one read. Before: it polled the chain's clock every second until
    the dispute window (30 s on the devnet) had passed, for every such job."""
    usdc = devnet.addresses.usdc_token
    pm = user.get_payment_manager()
    await pm.approve_usdc(usdc, "1")
    created = await pm.create_usdc_session_job(
        devnet.accounts[HOST].address, usdc, "1", USDC_PRICE, 3600, 1000, model=devnet.models[0]
    )
    await pm.complete_session_job(created.job_id)
    chain = HostChain(devnet.sdk_config())
    try:
        await chain.open(devnet.accounts[HOST].private_key, [devnet.models[0]])
        clock_reads = 0
        read_clock = chain.now

        async def now() -> int:
            nonlocal clock_reads
            clock_reads += 1
            return await read_clock()

        chain.now = now  # type: ignore[method-assign]
        billing = JobBilling(
            chain=chain,
            txq=TxPipeline(),
            writer=UnstoredCheckpoints(),
            job=created.job,
            model_id=model_id(devnet.models[0]),
            checkpoint_tokens=1000,
            recovery_public_key=None,
            notify=lambda proof: None,
        )
        await billing.settle()
        await billing.aclose()
        assert (clock_reads, billing.settlement_tx, billing.closed) == (0, None, True)
    finally:
        await chain.aclose()


async def test_jobs_waiting_for_the_dispute_window_share_one_clock(devnet, user, host):
    """Ten jobs the users left without completing wait for the dispute window before the
    host completes them: one read of the chain's clock serves all ten. Before: each job read
    it once a second until its window passed (a host with 1,000 such jobs: 1,000 reads a
    second). The host then completes each one exactly (nothing proven: full refunds)."""
    usdc = devnet.addresses.usdc_token
    pm = user.get_payment_manager()
    await pm.approve_usdc(usdc, "10")
    jobs = [
        (
            await pm.create_usdc_session_job(
                devnet.accounts[HOST].address, usdc, "1", USDC_PRICE, 3600, 1000,
                model=devnet.models[0],
            )
        ).job
        for _ in range(10)
    ]  # fmt: skip
    before = await pm.get_token_balance(usdc)
    chain = HostChain(devnet.sdk_config())
    try:
        await chain.open(devnet.accounts[HOST].private_key, [devnet.models[0]])
        checked, reads, ticking = 0, 0, asyncio.Event()
        all_checked, read_job, read_clock = asyncio.Event(), chain.job, chain.now

        async def job(job_id: int):
            nonlocal checked
            found = await read_job(job_id)
            checked += 1
            if checked == len(jobs):  # each biller goes on to wait for the clock at once
                all_checked.set()
            return found

        async def now() -> int:
            nonlocal reads
            reads += 1
            await ticking.wait()
            return await read_clock()

        chain.job, chain.now = job, now  # type: ignore[method-assign]
        clock = ChainClock(chain.now, 1.0)
        billers = [
            JobBilling(
                chain=chain,
                txq=TxPipeline(),
                writer=UnstoredCheckpoints(),
                job=j,
                model_id=model_id(devnet.models[0]),
                checkpoint_tokens=1000,
                recovery_public_key=None,
                notify=lambda proof: None,
                clock=clock,
            )
            for j in jobs
        ]
        settling = asyncio.gather(*(b.settle() for b in billers))
        await all_checked.wait()
        await asyncio.sleep(0)  # the clock's reader starts
        assert reads == 1
        await devnet.advance_time(chain.dispute_window)
        ticking.set()
        await settling
        for b in billers:
            await b.aclose()
        await clock.aclose()
        assert all(b.settlement_tx for b in billers)
        assert await pm.get_token_balance(usdc) == before + 10 * 1_000_000
    finally:
        await chain.aclose()
