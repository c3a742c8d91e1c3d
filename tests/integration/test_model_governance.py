"""The model marketplace on the devnet: a proposed model wins its vote through ModelManager
and is then served by a host and paid for by a user; FAB balances exact throughout."""

from __future__ import annotations

import pytest

from fabstir_sdk import (
    InsufficientBalanceError,
    NotFoundError,
    ProposalStateError,
    ValidationError,
)
from fabstir_sdk.chain.client import ChainClient

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
    with pytest.raises(NotFoundError, match="no proposal"):
        await mm.vote_on_proposal(MODEL, "1", True)  # before any approval of FAB
    assert await nonce(devnet, PROPOSER) == before
    await mm.propose_model(REPO, FILE, SHA)
    before = await nonce(devnet, PROPOSER)
    with pytest.raises(InsufficientBalanceError):
        await mm.vote_on_proposal(MODEL, "100001", True)
    assert await nonce(devnet, PROPOSER) == before


async def fab_allowance(devnet, index: int) -> int:
    client = ChainClient(devnet.rpc_url)
    try:
        fab = client.contract("FABToken", devnet.addresses.fab_token)
        owner = devnet.accounts[index].address
        return int(await client.read(fab.call("allowance", owner, devnet.addresses.model_registry)))
    finally:
        await client.aclose()


async def test_every_stage_of_a_vote_is_refused_out_of_turn_before_any_transaction(devnet, sdk_for):
    """Each write at the wrong stage of a proposal: a typed error, no transaction (the FAB
    approval included), the contract's own refusal never reached; then a rejected proposal,
    its fee kept for the owner, the re-proposal cooldown, and the fee withdrawn exactly."""
    proposer, voter, owner = [await sdk_for(i) for i in (PROPOSER, VOTER, 0)]
    mm, vm, om = (s.get_model_manager() for s in (proposer, voter, owner))
    pm = owner.get_payment_manager()
    fab = devnet.addresses.fab_token
    day = 24 * 3600

    async def refused(error, match, *calls, who=(PROPOSER, VOTER)):
        nonces = [await nonce(devnet, i) for i in who]
        allowances = [await fab_allowance(devnet, i) for i in who]
        for call in calls:
            with pytest.raises(error, match=match):
                await call()
        assert [await nonce(devnet, i) for i in who] == nonces
        assert [await fab_allowance(devnet, i) for i in who] == allowances

    await refused(
        NotFoundError,
        "no proposal was made",
        lambda: vm.vote_on_proposal(MODEL, "10", True),
        lambda: vm.execute_proposal(MODEL),
        lambda: vm.withdraw_votes(MODEL),
    )
    await refused(
        ProposalStateError,
        "is in the registry already",
        lambda: mm.propose_model("fabstir/builtin", "toy-1.gguf", SHA),
    )
    await mm.propose_model(REPO, FILE, SHA)
    proposal = await mm.get_proposal(MODEL)
    assert [p.model_id for p in await vm.list_proposals()] == [proposal.model_id]
    await refused(
        ProposalStateError, "has an open proposal", lambda: vm.propose_model(REPO, FILE, SHA)
    )
    await refused(
        ProposalStateError,
        "runs until",
        lambda: vm.execute_proposal(MODEL),
    )
    await refused(
        ProposalStateError,
        "not executed yet",
        lambda: mm.withdraw_votes(MODEL),
    )
    await refused(ValidationError, "must be positive", lambda: vm.vote_on_proposal(MODEL, "0"))

    # 9,999 FAB against, early; then 10,000 FAB for in the last 4 hours: the vote is
    # extended by one day (the late votes reach EXTENSION_THRESHOLD)
    await vm.vote_on_proposal(MODEL, "9999", False)
    await devnet.advance_time(proposal.end_time - proposal.proposal_time - 3 * 3600)
    await mm.vote_on_proposal(MODEL, "10000", True)
    extended = await mm.get_proposal(MODEL)
    assert (extended.end_time, extended.extension_count) == (proposal.end_time + day, 1)
    assert (extended.votes_for, extended.votes_against) == (10_000 * FAB, 9_999 * FAB)
    await devnet.advance_time(day + 3 * 3600)
    await refused(ProposalStateError, "ended at", lambda: vm.vote_on_proposal(MODEL, "1", True))

    # executed below APPROVAL_THRESHOLD: rejected, the fee kept for the registry's owner
    fees_before = await om.get_rejected_fees()
    await vm.execute_proposal(MODEL)
    assert await mm.is_model_approved(MODEL) is False
    assert (await mm.get_proposal(MODEL)).executed is True
    assert await vm.list_proposals() == []
    assert await om.get_rejected_fees() == fees_before + 100 * FAB
    await refused(
        ProposalStateError,
        "was executed already",
        lambda: vm.execute_proposal(MODEL),
        lambda: vm.vote_on_proposal(MODEL, "1", True),
    )
    await vm.withdraw_votes(MODEL)
    await refused(ProposalStateError, "no votes left", lambda: vm.withdraw_votes(MODEL))
    await refused(
        ProposalStateError,
        "may be proposed again from",
        lambda: mm.propose_model(REPO, FILE, SHA),
    )
    # the owner alone withdraws the kept fees, never more than are kept
    await refused(
        ValidationError, "only the registry's owner", lambda: vm.withdraw_rejected_fees(FAB)
    )
    await refused(
        InsufficientBalanceError,
        "the registry",
        lambda: om.withdraw_rejected_fees(fees_before + 100 * FAB + 1),
        who=(0,),
    )
    owner_fab = await pm.get_token_balance(fab)
    await om.withdraw_rejected_fees(100 * FAB)
    assert await pm.get_token_balance(fab) == owner_fab + 100 * FAB
    assert await om.get_rejected_fees() == fees_before

    # after the cooldown, the same model may be proposed again
    await devnet.advance_time(30 * day)
    await mm.propose_model(REPO, FILE, SHA)
    assert (await mm.get_proposal(MODEL)).executed is False
