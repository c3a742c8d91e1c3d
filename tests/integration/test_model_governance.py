"""The model marketplace on the devnet: a proposed model wins its vote through ModelManager
and is then served by a host and paid for by a user; FAB balances exact throughout."""

from __future__ import annotations

import pytest

from fabstir_sdk import InsufficientBalanceError, NotFoundError, ValidationError

from .conftest import ETH_PRICE, USDC_PRICE, USER, nonce

PROPOSER, VOTER, HOST = 4, 5, 6
FAB = 10**18
REPO, FILE = "community/New-Model-GGUF", "new-model.q4.gguf"
MODEL = f"{REPO}:{FILE}"
SHA = "0x" + "42" * 32


async def test_a_model_voted_in_is_served_and_paid_for(devnet, sdk_for):
    proposer, voter, host, user = [await sdk_for(i) for i in (PROPOSER, VOTER, HOST, USER)]
    fab = devnet.addresses.fab_token
    balance = {
        i: await user.get_payment_manager().get_token_balance(fab, devnet.accounts[i].address)
        for i in (PROPOSER, VOTER)
    }
    mm = proposer.get_model_manager()
    with pytest.raises(NotFoundError):
        await mm.get_proposal(MODEL)

    await mm.propose_model(REPO, FILE, SHA)
    proposal = await mm.get_proposal(MODEL)
    assert (proposal.repo, proposal.file, proposal.sha256) == (REPO, FILE, SHA)
    assert proposal.proposer == devnet.accounts[PROPOSER].address
    assert proposal.end_time == proposal.proposal_time + 3 * 24 * 3600
    assert await mm.is_model_approved(MODEL) is False

    await mm.vote_on_proposal(MODEL, "50000", True)
    await voter.get_model_manager().vote_on_proposal(MODEL, "50000", True)
    assert (await mm.get_proposal(MODEL)).votes_for == 100_000 * FAB
    assert await mm.get_votes(MODEL, devnet.accounts[VOTER].address) == 50_000 * FAB

    await devnet.advance_time(3 * 24 * 3600)
    await voter.get_model_manager().execute_proposal(MODEL)
    assert await mm.is_model_approved(MODEL) is True
    assert (await mm.get_proposal(MODEL)).executed is True
    await mm.withdraw_votes(MODEL)
    await voter.get_model_manager().withdraw_votes(MODEL)
    pm = user.get_payment_manager()
    for i in (PROPOSER, VOTER):  # the fee came back to the winner's proposer; votes unlocked
        assert await pm.get_token_balance(fab, devnet.accounts[i].address) == balance[i]

    # now usable: a host serves it and a user pays for a session on it
    await host.get_host_manager().register_host(
        "http://127.0.0.1:1",
        [MODEL],
        min_price_per_token_native=ETH_PRICE,
        min_price_per_token_stable=USDC_PRICE,
        metadata={"publicKey": "02" + "11" * 32},
    )
    usdc = devnet.addresses.usdc_token
    await pm.approve_usdc(usdc, "1")
    created = await pm.create_usdc_session_job(
        devnet.accounts[HOST].address, usdc, "1", USDC_PRICE, 3600, 1000, model=MODEL
    )
    assert created.job.deposit == 1_000_000


async def test_bad_proposals_are_refused_before_any_transaction(devnet, sdk_for):
    mm = (await sdk_for(PROPOSER)).get_model_manager()
    before = await nonce(devnet, PROPOSER)
    for call in (
        lambda: mm.propose_model("", FILE, SHA),
        lambda: mm.propose_model(REPO, FILE, "0x" + "00" * 32),
        lambda: mm.propose_model(REPO, FILE, "0x1234"),
        lambda: mm.vote_on_proposal(MODEL, "1", "yes"),
        lambda: mm.withdraw_rejected_fees(0),
    ):
        with pytest.raises(ValidationError):
            await call()
    with pytest.raises(InsufficientBalanceError):
        await mm.vote_on_proposal(MODEL, "100001", True)
    assert await nonce(devnet, PROPOSER) == before
