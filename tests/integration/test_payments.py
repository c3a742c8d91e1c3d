"""Session jobs on the devnet: creation, proofs, settlement, exact to the base unit."""

from __future__ import annotations

import asyncio
import os

from web3 import AsyncHTTPProvider, AsyncWeb3

from fabstir_sdk import SessionState, Settlement

from .conftest import ETH_PRICE, HOST, USDC_PRICE, USER

ZERO = "0x" + "00" * 20


def proof_hash() -> bytes:
    return os.urandom(32)


async def gas_paid(devnet, *tx_hashes: str) -> int:
    w3 = AsyncWeb3(AsyncHTTPProvider(devnet.rpc_url))
    try:
        total = 0
        for h in tx_hashes:
            r = await w3.eth.get_transaction_receipt(h)
            total += r["gasUsed"] * r["effectiveGasPrice"]
        return total
    finally:
        await w3.provider.disconnect()


async def test_worked_example_usdc(devnet, user, host):
    """1 USDC at 2000, 150,000 tokens proven: host 270,000, treasury 30,000, refund 700,000."""
    usdc = devnet.addresses.usdc_token
    pm, hm = user.get_payment_manager(), host.get_host_manager()
    before = await pm.get_token_balance(usdc)

    await pm.approve_usdc(usdc, "1")
    created = await pm.create_usdc_session_job(
        devnet.accounts[HOST].address, usdc, "1", USDC_PRICE, 3600, 1000, model=devnet.models[0]
    )
    assert await pm.get_token_balance(usdc) == before - 1_000_000

    await devnet.advance_time(100)
    await hm.submit_proof_of_work(created.job_id, 150_000, proof_hash(), "proofcid", "deltacid")
    settlement = await pm.complete_session_job(created.job_id, "conversation-cid")

    assert settlement == Settlement(
        job_id=created.job_id,
        tokens_used=150_000,
        host_payment=300_000,
        treasury_fee=30_000,
        host_net=270_000,
        refund=700_000,
        token=usdc,
        tx_hash=settlement.tx_hash,
    )
    assert await pm.get_token_balance(usdc) == before - 300_000
    assert await hm.get_host_earnings(usdc) == 270_000
    assert await user.get_treasury_manager().get_accumulated_fees(usdc) == 30_000

    job = await pm.get_session_job(created.job_id)
    assert job.status is SessionState.COMPLETED
    assert job.conversation_cid == "conversation-cid"
    assert job.tokens_used == 150_000

    host_usdc = await pm.get_token_balance(usdc, devnet.accounts[HOST].address)
    await hm.withdraw_earnings(usdc)
    assert await pm.get_token_balance(usdc, devnet.accounts[HOST].address) == host_usdc + 270_000
    assert await hm.get_host_earnings(usdc) == 0


async def test_treasury_withdraws_fees(devnet, sdk_for, user, host):
    usdc = devnet.addresses.usdc_token
    pm = user.get_payment_manager()
    await pm.approve_usdc(usdc, "1")
    job = await pm.create_usdc_session_job(
        devnet.accounts[HOST].address, usdc, "1", USDC_PRICE, 3600, 1000, model=devnet.models[0]
    )
    await devnet.advance_time(100)
    await host.get_host_manager().submit_proof_of_work(job.job_id, 150_000, proof_hash(), "", "")
    await pm.complete_session_job(job.job_id)

    treasury = await sdk_for(0)  # the deployer is the treasury
    before = await treasury.get_payment_manager().get_token_balance(usdc)
    await treasury.get_treasury_manager().withdraw_fees(usdc)
    assert await treasury.get_payment_manager().get_token_balance(usdc) == before + 30_000
    assert await treasury.get_treasury_manager().get_accumulated_fees(usdc) == 0


async def test_eth_session_odd_numbers_round_down(devnet, user, host):
    pm = user.get_payment_manager()
    price, tokens, deposit = ETH_PRICE + 333_333_333, 12_345, 10**16  # 0.01 ETH
    before = await pm.get_eth_balance()
    created = await pm.create_eth_session_job(
        devnet.accounts[HOST].address, "0.01", price, 600, 100, model=devnet.models[1]
    )
    await devnet.advance_time(60)
    await host.get_host_manager().submit_proof_of_work(created.job_id, tokens, proof_hash(), "", "")
    settlement = await pm.complete_session_job(created.job_id)

    gross = tokens * price // 1000  # 12_349_114_999_995.885 wei: the fraction is dropped
    assert gross == 12_349_114_999_995
    fee = gross * 1000 // 10_000
    assert (settlement.host_payment, settlement.treasury_fee) == (gross, fee)
    assert settlement.host_net == gross - fee
    assert settlement.refund == deposit - gross
    assert settlement.token == ZERO
    spent_gas = await gas_paid(devnet, created.tx_hash, settlement.tx_hash)
    assert await pm.get_eth_balance() == before - gross - spent_gas
    assert await host.get_host_manager().get_host_earnings() == gross - fee


async def test_get_session_job_decodes_every_field(devnet, user, host):
    pm = user.get_payment_manager()
    created = await pm.create_eth_session_job(
        devnet.accounts[HOST].address,
        "0.005",
        ETH_PRICE,
        900,
        250,
        model=devnet.models[0],
        proof_timeout_window=120,
    )
    job = await pm.get_session_job(created.job_id)
    assert job.id == created.job_id
    assert job.depositor == devnet.accounts[USER].address
    assert job.host == devnet.accounts[HOST].address
    assert job.payment_token == ZERO
    assert job.deposit == 5 * 10**15
    assert job.price_per_token == ETH_PRICE
    assert job.tokens_used == 0
    assert job.max_duration == 900
    assert job.start_time > 0 and job.last_proof_time == job.start_time
    assert job.proof_interval == 250
    assert job.proof_timeout_window == 120
    assert job.status is SessionState.ACTIVE
    assert (job.withdrawn_by_host, job.refunded_to_user) == (0, 0)
    assert job.conversation_cid == ""
    assert job.last_proof_hash == "0x" + "00" * 32
    assert job.last_proof_cid == ""
    assert job.max_tokens == 5 * 10**15 * 1000 // ETH_PRICE

    digest = proof_hash()
    await devnet.advance_time(10)
    await user_host_proof(host, created.job_id, 300, digest)
    job = await pm.get_session_job(created.job_id)
    assert job.tokens_used == 300
    assert job.last_proof_hash == "0x" + digest.hex()
    assert job.last_proof_cid == "cid-300"


async def user_host_proof(host, job_id: int, tokens: int, digest: bytes) -> None:
    await host.get_host_manager().submit_proof_of_work(job_id, tokens, digest, f"cid-{tokens}", "")


async def test_timeout_settles_after_proof_window(devnet, user, host, sdk_for):
    pm = user.get_payment_manager()
    created = await pm.create_eth_session_job(
        devnet.accounts[HOST].address,
        "0.005",
        ETH_PRICE,
        3600,
        100,
        model=devnet.models[0],
        proof_timeout_window=60,
    )
    await devnet.advance_time(30)
    await user_host_proof(host, created.job_id, 1000, proof_hash())
    await devnet.advance_time(61)
    stranger = await sdk_for(3)
    settlement = await stranger.get_payment_manager().trigger_session_timeout(created.job_id)
    gross = 1000 * ETH_PRICE // 1000
    assert settlement.tokens_used == 1000
    assert settlement.host_payment == gross
    assert settlement.treasury_fee == gross // 10
    assert settlement.host_net == gross - gross // 10
    assert settlement.refund == 5 * 10**15 - gross
    job = await pm.get_session_job(created.job_id)
    assert job.status is SessionState.TIMED_OUT


async def test_host_completes_only_after_dispute_window(devnet, user, host):
    from fabstir_sdk import ContractRevertError

    pm = user.get_payment_manager()
    created = await pm.create_eth_session_job(
        devnet.accounts[HOST].address, "0.005", ETH_PRICE, 3600, 100, model=devnet.models[0]
    )
    try:
        await host.get_payment_manager().complete_session_job(created.job_id)
    except ContractRevertError as exc:
        assert "dispute window" in exc.reason
    else:
        raise AssertionError("host completed inside the dispute window")
    await devnet.advance_time(31)
    settlement = await host.get_payment_manager().complete_session_job(created.job_id)
    assert settlement.refund == 5 * 10**15 and settlement.host_payment == 0


async def test_deposit_funded_session_refunds_to_deposit(devnet, user, host):
    pm = user.get_payment_manager()
    await pm.deposit("0.02")
    assert await pm.get_deposit_balance() == 2 * 10**16
    created = await pm.create_session_job_from_deposit(
        devnet.accounts[HOST].address, "0.01", ETH_PRICE, 600, 100, model=devnet.models[0]
    )
    assert await pm.get_deposit_balance() == 10**16
    await devnet.advance_time(10)
    await user_host_proof(host, created.job_id, 2000, proof_hash())
    settlement = await pm.complete_session_job(created.job_id)
    gross = 2000 * ETH_PRICE // 1000
    assert settlement.refund == 10**16 - gross
    assert await pm.get_deposit_balance() == 2 * 10**16 - gross
    eth_before = await pm.get_eth_balance()
    tx = await pm.withdraw("0.001")
    assert await pm.get_deposit_balance() == 2 * 10**16 - gross - 10**15
    assert await pm.get_eth_balance() == eth_before + 10**15 - await gas_paid(devnet, tx)


async def test_usdc_deposit_and_withdraw(devnet, user):
    usdc = devnet.addresses.usdc_token
    pm = user.get_payment_manager()
    before = await pm.get_token_balance(usdc)
    await pm.approve_usdc(usdc, "5")
    await pm.deposit("5", usdc)
    assert await pm.get_deposit_balance(usdc) == 5_000_000
    await pm.withdraw("1.25", usdc)
    assert await pm.get_deposit_balance(usdc) == 3_750_000
    assert await pm.get_token_balance(usdc) == before - 3_750_000


async def test_twenty_concurrent_jobs_from_one_account(devnet, user, host):
    pm = user.get_payment_manager()
    host_address = devnet.accounts[HOST].address
    created = await asyncio.gather(
        *(
            pm.create_eth_session_job(
                host_address, "0.001", ETH_PRICE, 600, 100, model=devnet.models[0]
            )
            for _ in range(20)
        )
    )
    ids = sorted(c.job_id for c in created)
    assert len(set(ids)) == 20
    assert ids == list(range(ids[0], ids[0] + 20))
    jobs = await asyncio.gather(*(pm.get_session_job(i) for i in ids))
    assert all(j.status is SessionState.ACTIVE and j.deposit == 10**15 for j in jobs)
