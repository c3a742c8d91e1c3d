"""ModelRegistry community governance: propose with the FAB fee, vote, extend, execute,
withdraw votes and rejected fees; every balance exact, every refusal by its reason."""

from __future__ import annotations

from contract_helpers import DEPLOYER, FAB, HOST, OTHER, USER, Chain

REPO, FILE = "community/Model-GGUF", "model.q4.gguf"
SHA = b"\x42" * 32
FEE = 100 * FAB
THRESHOLD = 100_000 * FAB
DAYS = 24 * 3600
VOTER2 = 6


def _approve(chain: Chain, who: int, amount: int) -> None:
    chain.send(chain.c["FABToken"].functions.approve(chain.c["ModelRegistry"].address, amount), who)


def _propose(chain: Chain, who: int = USER) -> bytes:
    _approve(chain, who, FEE)
    receipt = chain.send(chain.models.proposeModel(REPO, FILE, SHA), who)
    event = chain.event(receipt, "ModelRegistry", "ModelProposed")
    assert event["proposer"] == chain.accounts[who]
    return bytes(event["modelId"])


def _vote(
    chain: Chain, who: int, model_id: bytes, amount: int, support: bool, *, at: int | None = None
) -> object:
    """Approve, then vote; ``at``: the vote's block timestamp (set after the approval, whose
    block would otherwise take it and leave the vote a wall-clock second or more later)."""
    _approve(chain, who, amount)
    if at is not None:
        chain.set_next_timestamp(at)
    return chain.send(chain.models.voteOnProposal(model_id, amount, support), who)


def _proposal(chain: Chain, model_id: bytes) -> dict[str, object]:
    names = ["modelId", "proposer", "votesFor", "votesAgainst", "proposalTime", "executed"]
    raw = chain.models.proposals(model_id).call()
    out = dict(zip(names, raw[:6], strict=True))
    out["endTime"], out["extensionCount"] = raw[7], raw[8]
    return out


def test_a_model_that_wins_its_vote_is_added_and_the_fee_returned(chain: Chain) -> None:
    registry = chain.c["ModelRegistry"].address
    before = {who: chain.fab(who) for who in (USER, HOST)}
    model_id = _propose(chain)
    assert model_id == bytes(chain.models.getModelId(REPO, FILE).call())
    assert chain.fab(USER) == before[USER] - FEE
    assert chain.models.getActiveProposals().call() == [model_id]
    assert chain.models.isModelApproved(model_id).call() is False
    start = chain.now()
    assert _proposal(chain, model_id)["endTime"] == start + 3 * DAYS

    _vote(chain, HOST, model_id, THRESHOLD - FAB, True)
    _vote(chain, USER, model_id, FAB, True)
    assert chain.fab(registry) == FEE + THRESHOLD
    assert chain.models.votes(model_id, chain.accounts[HOST]).call() == THRESHOLD - FAB
    chain.reverts(chain.models.executeProposal(model_id), OTHER, "Voting still active")

    chain.set_next_timestamp(start + 3 * DAYS)
    receipt = chain.send(chain.models.executeProposal(model_id), OTHER)
    assert chain.event(receipt, "ModelRegistry", "ProposalExecuted")["approved"] is True
    assert chain.models.isModelApproved(model_id).call() is True
    assert chain.models.isTrustedModel(model_id).call() is False
    assert chain.models.getModel(model_id).call()[3] == 2  # community tier
    assert chain.models.getActiveProposals().call() == []
    assert chain.fab(USER) == before[USER] - FAB  # fee back, vote still locked
    chain.reverts(chain.models.executeProposal(model_id), OTHER, "Proposal already executed")
    chain.reverts(
        chain.models.voteOnProposal(model_id, FAB, True), OTHER, "Proposal already executed"
    )

    chain.send(chain.models.withdrawVotes(model_id), HOST)
    chain.send(chain.models.withdrawVotes(model_id), USER)
    assert {who: chain.fab(who) for who in (USER, HOST)} == before
    assert chain.fab(registry) == 0
    chain.reverts(chain.models.withdrawVotes(model_id), HOST, "No votes to withdraw")
    chain.reverts(chain.models.proposeModel(REPO, FILE, SHA), USER, "Model already exists")


def test_a_rejected_proposal_keeps_the_fee_for_the_owner(chain: Chain) -> None:
    model_id = _propose(chain)
    _vote(chain, HOST, model_id, THRESHOLD - 1, True)  # one base unit short
    chain.advance(3 * DAYS)
    receipt = chain.send(chain.models.executeProposal(model_id), OTHER)
    assert chain.event(receipt, "ModelRegistry", "ProposalExecuted")["approved"] is False
    assert chain.models.isModelApproved(model_id).call() is False
    assert chain.models.accumulatedRejectedFees().call() == FEE

    owner_before = chain.fab(DEPLOYER)
    chain.reverts(
        chain.models.withdrawRejectedFees(FEE), USER, "OwnableUnauthorizedAccount(address)"
    )
    chain.reverts(chain.models.withdrawRejectedFees(FEE + 1), DEPLOYER, "Exceeds rejected fees")
    chain.send(chain.models.withdrawRejectedFees(FEE), DEPLOYER)
    assert chain.fab(DEPLOYER) == owner_before + FEE
    assert chain.models.accumulatedRejectedFees().call() == 0

    # the same model again only after the cooldown
    _approve(chain, USER, FEE)
    chain.reverts(chain.models.proposeModel(REPO, FILE, SHA), USER, "Reproposal cooldown active")
    chain.advance(30 * DAYS)
    assert _propose(chain) == model_id


def test_more_against_than_for_rejects_even_above_the_threshold(chain: Chain) -> None:
    model_id = _propose(chain)
    _vote(chain, HOST, model_id, THRESHOLD, True)
    _vote(chain, OTHER, model_id, THRESHOLD, False)
    chain.advance(3 * DAYS)
    receipt = chain.send(chain.models.executeProposal(model_id), USER)
    assert chain.event(receipt, "ModelRegistry", "ProposalExecuted")["approved"] is False
    assert _proposal(chain, model_id)["votesAgainst"] == THRESHOLD


def test_late_votes_extend_the_vote_at_most_three_times(chain: Chain) -> None:
    model_id = _propose(chain)
    end = int(_proposal(chain, model_id)["endTime"])
    # just before the last 4 hours: not late
    _vote(chain, HOST, model_id, 10_000 * FAB, True, at=end - 4 * 3600 - 1)
    assert chain.models.lateVotes(model_id).call() == 0
    for extension in (1, 2, 3):
        # late, below the threshold
        _vote(chain, OTHER, model_id, 10_000 * FAB - 1, False, at=end - 4 * 3600)
        assert _proposal(chain, model_id)["extensionCount"] == extension - 1
        receipt = _vote(chain, VOTER2, model_id, 1, False)  # reaches it
        event = chain.event(receipt, "ModelRegistry", "VotingExtended")
        end += DAYS
        assert (event["newEndTime"], event["extensionCount"]) == (end, extension)
        assert chain.models.lateVotes(model_id).call() == 0
    _vote(chain, OTHER, model_id, 10_000 * FAB, False, at=end - 1)  # no fourth extension
    assert _proposal(chain, model_id)["endTime"] == end
    assert chain.models.lateVotes(model_id).call() == 10_000 * FAB
    _approve(chain, USER, 1)
    chain.set_next_timestamp(end)
    chain.w3.provider.make_request("evm_mine", [])
    chain.reverts(chain.models.voteOnProposal(model_id, 1, True), USER, "Voting ended")


def test_refusals(chain: Chain) -> None:
    unknown = b"\x01" * 32
    chain.reverts(chain.models.voteOnProposal(unknown, FAB, True), USER, "Proposal not found")
    chain.reverts(chain.models.executeProposal(unknown), USER, "Proposal not found")
    chain.reverts(chain.models.withdrawVotes(unknown), USER, "Proposal not executed")
    chain.reverts(chain.models.proposeModel("", FILE, SHA), USER, "Empty repository")
    chain.reverts(chain.models.proposeModel(REPO, FILE, b"\0" * 32), USER, "Empty model hash")
    chain.reverts(chain.models.withdrawRejectedFees(1), DEPLOYER, "Exceeds rejected fees")
    # without approving the fee
    chain.reverts(
        chain.models.proposeModel(REPO, FILE, SHA),
        USER,
        "ERC20InsufficientAllowance(address,uint256,uint256)",
    )
    model_id = _propose(chain)
    _approve(chain, HOST, FEE)
    chain.reverts(chain.models.proposeModel(REPO, FILE, SHA), HOST, "Proposal already active")
    chain.reverts(chain.models.voteOnProposal(model_id, 0, True), USER, "Amount must be positive")
    chain.reverts(chain.models.withdrawVotes(model_id), USER, "Proposal not executed")
