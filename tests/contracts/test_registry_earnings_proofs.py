"""Test tokens, ModelRegistry, ProofSystem and HostEarnings against anvil."""

from __future__ import annotations

from typing import Any

import pytest
from contract_helpers import (
    DEPLOYER,
    ETHER,
    HOST,
    MODEL_SHA,
    MODELS,
    OTHER,
    USDC,
    USER,
    ZERO,
    Chain,
)

# ======================================================================== tokens


@pytest.mark.parametrize(
    ("name", "full_name", "symbol", "decimals"),
    [("TestUSDC", "USD Coin (test)", "USDC", 6), ("FABToken", "Fabstir Token (test)", "FAB", 18)],
)
def test_test_tokens(chain: Chain, name: str, full_name: str, symbol: str, decimals: int) -> None:
    token = chain.c[name].functions
    assert (token.name().call(), token.symbol().call(), token.decimals().call()) == (
        full_name,
        symbol,
        decimals,
    )
    supply = token.totalSupply().call()
    chain.reverts(
        token.mint(chain.accounts[OTHER], 1), OTHER, "OwnableUnauthorizedAccount(address)"
    )
    before = token.balanceOf(chain.accounts[OTHER]).call()
    chain.send(token.mint(chain.accounts[OTHER], 12345), DEPLOYER)
    assert token.balanceOf(chain.accounts[OTHER]).call() == before + 12345
    assert token.totalSupply().call() == supply + 12345


# ================================================================ model registry


def test_seeded_models(chain: Chain) -> None:
    ids = [chain.model_id(i) for i in range(len(MODELS))]
    assert chain.models.getAllModels().call() == ids
    assert [chain.models.modelList(i).call() for i in range(len(MODELS))] == ids
    repo, file = MODELS[0]
    assert chain.models.getModelId(repo, file).call() == ids[0]
    model = chain.models.getModel(ids[0]).call()
    assert model[:5] == (repo, file, MODEL_SHA, 1, True)
    assert model[5] > 0
    assert list(chain.models.models(ids[0]).call()) == list(model)
    assert chain.models.getModelHash(ids[0]).call() == MODEL_SHA
    assert chain.models.isModelApproved(ids[0]).call() is True
    assert chain.models.isTrustedModel(ids[0]).call() is True
    unknown = b"\x01" * 32
    assert chain.models.isModelApproved(unknown).call() is False
    assert chain.models.getModel(unknown).call() == ("", "", b"\0" * 32, 0, False, 0)
    assert chain.models.governanceToken().call() == chain.c["FABToken"].address


def test_model_id_is_keccak_of_repo_slash_file(chain: Chain) -> None:
    got = chain.models.getModelId("org/repo", "w.gguf").call()
    assert got == bytes(chain.w3.keccak(b"org/repo/w.gguf"))


def test_add_and_toggle_models(chain: Chain) -> None:
    m = chain.models
    sha = b"\x07" * 32
    chain.reverts(
        m.addTrustedModel("a/b", "c.gguf", sha), OTHER, "OwnableUnauthorizedAccount(address)"
    )
    chain.reverts(m.addTrustedModel("", "c.gguf", sha), DEPLOYER, "Empty repository")
    chain.reverts(m.addTrustedModel("a/b", "", sha), DEPLOYER, "Empty file name")
    chain.reverts(m.addTrustedModel("a/b", "c.gguf", b"\0" * 32), DEPLOYER, "Empty model hash")
    chain.reverts(m.addTrustedModel(*MODELS[0], sha), DEPLOYER, "Model already exists")
    receipt = chain.send(m.addTrustedModel("a/b", "c.gguf", sha), DEPLOYER)
    model_id = bytes(chain.w3.keccak(b"a/b/c.gguf"))
    assert dict(chain.event(receipt, "ModelRegistry", "ModelAdded")) == {
        "modelId": model_id,
        "huggingfaceRepo": "a/b",
        "fileName": "c.gguf",
        "tier": 1,
    }
    receipt = chain.send(m.deactivateModel(model_id), DEPLOYER)
    assert chain.event(receipt, "ModelRegistry", "ModelDeactivated")["modelId"] == model_id
    assert m.isModelApproved(model_id).call() is False
    assert m.isTrustedModel(model_id).call() is False
    chain.reverts(m.deactivateModel(model_id), DEPLOYER, "Model already inactive")
    receipt = chain.send(m.reactivateModel(model_id), DEPLOYER)
    assert chain.event(receipt, "ModelRegistry", "ModelReactivated")["modelId"] == model_id
    chain.reverts(m.reactivateModel(model_id), DEPLOYER, "Model already active")
    chain.reverts(m.deactivateModel(b"\x09" * 32), DEPLOYER, "Model not found")
    chain.reverts(m.reactivateModel(b"\x09" * 32), DEPLOYER, "Model not found")
    chain.reverts(m.deactivateModel(model_id), OTHER, "OwnableUnauthorizedAccount(address)")


def test_batch_add(chain: Chain) -> None:
    m = chain.models
    repos, files, hashes = ["x/1", "x/2"], ["a.gguf", "b.gguf"], [b"\x01" * 32, b"\x02" * 32]
    chain.reverts(m.batchAddTrustedModels([], [], []), DEPLOYER, "No models given")
    chain.reverts(
        m.batchAddTrustedModels(repos, files[:1], hashes), DEPLOYER, "Array lengths differ"
    )
    chain.reverts(
        m.batchAddTrustedModels(repos, files, hashes), OTHER, "OwnableUnauthorizedAccount(address)"
    )
    receipt = chain.send(m.batchAddTrustedModels(repos, files, hashes), DEPLOYER)
    assert len(chain.events(receipt, "ModelRegistry", "ModelAdded")) == 2
    assert len(m.getAllModels().call()) == len(MODELS) + 2
    chain.reverts(
        m.batchAddTrustedModels(["y/1", "x/1"], ["a.gguf", "a.gguf"], hashes),
        DEPLOYER,
        "Model already exists",
    )


def test_rate_limits(chain: Chain) -> None:
    m = chain.models
    model_id = chain.model_id(0)
    assert (
        m.DEFAULT_RATE_LIMIT().call(),
        m.MIN_RATE_LIMIT().call(),
        m.MAX_RATE_LIMIT().call(),
    ) == (
        1000,
        10,
        100_000,
    )
    assert m.getModelRateLimit(model_id).call() == 1000
    assert m.modelMaxTokensPerSecond(model_id).call() == 0
    chain.reverts(m.setModelRateLimit(model_id, 9), DEPLOYER, "Rate limit out of range")
    chain.reverts(m.setModelRateLimit(model_id, 100_001), DEPLOYER, "Rate limit out of range")
    chain.reverts(m.setModelRateLimit(b"\x05" * 32, 100), DEPLOYER, "Model not found")
    chain.reverts(m.setModelRateLimit(model_id, 100), OTHER, "OwnableUnauthorizedAccount(address)")
    receipt = chain.send(m.setModelRateLimit(model_id, 250), DEPLOYER)
    assert dict(chain.event(receipt, "ModelRegistry", "ModelRateLimitUpdated")) == {
        "modelId": model_id,
        "maxTokensPerSecond": 250,
    }
    assert m.getModelRateLimit(model_id).call() == 250
    assert m.getModelRateLimit(chain.model_id(1)).call() == 1000


def test_governance_constants_have_upstream_values(chain: Chain) -> None:
    # Upstream's ModelManager reads APPROVAL_THRESHOLD() when it initialises; the values are
    # those of upstream's ModelRegistryUpgradeable.
    m = chain.models
    day = 24 * 3600
    assert {
        "APPROVAL_THRESHOLD": m.APPROVAL_THRESHOLD().call(),
        "PROPOSAL_FEE": m.PROPOSAL_FEE().call(),
        "PROPOSAL_DURATION": m.PROPOSAL_DURATION().call(),
        "EXTENSION_THRESHOLD": m.EXTENSION_THRESHOLD().call(),
        "EXTENSION_WINDOW": m.EXTENSION_WINDOW().call(),
        "EXTENSION_DURATION": m.EXTENSION_DURATION().call(),
        "MAX_EXTENSIONS": m.MAX_EXTENSIONS().call(),
        "REPROPOSAL_COOLDOWN": m.REPROPOSAL_COOLDOWN().call(),
    } == {
        "APPROVAL_THRESHOLD": 100_000 * 10**18,
        "PROPOSAL_FEE": 100 * 10**18,
        "PROPOSAL_DURATION": 3 * day,
        "EXTENSION_THRESHOLD": 10_000 * 10**18,
        "EXTENSION_WINDOW": 4 * 3600,
        "EXTENSION_DURATION": day,
        "MAX_EXTENSIONS": 3,
        "REPROPOSAL_COOLDOWN": 30 * day,
    }


def test_governance_views_read_as_no_proposal_ever_made(chain: Chain) -> None:
    m = chain.models
    model_id = chain.model_id(0)
    voter = chain.accounts[USER]
    assert m.getActiveProposals().call() == []
    assert m.accumulatedRejectedFees().call() == 0
    assert m.votes(model_id, voter).call() == 0
    assert m.lateVotes(model_id).call() == 0
    assert m.lastProposalExecutionTime(model_id).call() == 0
    assert list(m.proposals(model_id).call()) == [
        b"\x00" * 32,
        ZERO,
        0,
        0,
        0,
        False,
        ("", "", b"\x00" * 32, 0, False, 0),
        0,
        0,
    ]
    # an empty array: a public array getter reverts, without data, on any index
    from web3.exceptions import ContractLogicError

    with pytest.raises(ContractLogicError) as info:
        m.activeProposals(0).call()
    assert info.value.data == "0x"


# ================================================================== proof system


def test_proof_system(chain: Chain) -> None:
    ps = chain.c["ProofSystem"].functions
    digest = b"\x33" * 32
    prover = chain.accounts[HOST]
    chain.reverts(ps.markProofUsed(digest, prover, 100, b"\0" * 32), OTHER, "Caller not authorized")
    chain.reverts(
        ps.setAuthorizedCaller(chain.accounts[OTHER], True),
        OTHER,
        "OwnableUnauthorizedAccount(address)",
    )
    chain.reverts(ps.setAuthorizedCaller(ZERO, True), DEPLOYER, "Invalid caller")
    receipt = chain.send(ps.setAuthorizedCaller(chain.accounts[OTHER], True), DEPLOYER)
    assert dict(chain.event(receipt, "ProofSystem", "AuthorizedCallerUpdated")) == {
        "caller": chain.accounts[OTHER],
        "authorized": True,
    }
    assert ps.authorizedCallers(chain.accounts[OTHER]).call() is True
    assert ps.markProofUsed(digest, prover, 100, b"\0" * 32).call({"from": chain.accounts[OTHER]})
    chain.reverts(ps.markProofUsed(b"\0" * 32, prover, 100, b"\0" * 32), OTHER, "Empty proof hash")
    chain.reverts(ps.markProofUsed(digest, ZERO, 100, b"\0" * 32), OTHER, "Invalid prover")
    receipt = chain.send(ps.markProofUsed(digest, prover, 100, b"\0" * 32), OTHER)
    assert dict(chain.event(receipt, "ProofSystem", "ProofVerified")) == {
        "proofHash": digest,
        "prover": prover,
        "tokens": 100,
    }
    assert ps.verifiedProofs(digest).call() is True
    chain.reverts(ps.markProofUsed(digest, prover, 100, b"\0" * 32), OTHER, "Proof already used")
    chain.send(ps.setAuthorizedCaller(chain.accounts[OTHER], False), DEPLOYER)
    chain.reverts(
        ps.markProofUsed(b"\x34" * 32, prover, 100, b"\0" * 32), OTHER, "Caller not authorized"
    )


# ================================================================= host earnings


@pytest.fixture
def earnings(chain: Chain) -> Any:
    """A fresh HostEarnings with account OTHER as its authorised caller (a stand-in marketplace)."""
    contract = chain.deploy("HostEarnings")
    chain.send(contract.functions.setAuthorizedCaller(chain.accounts[OTHER], True), DEPLOYER)
    return contract


def _fund_usdc(chain: Chain, earnings: Any, amount: int) -> None:
    chain.send(chain.c["TestUSDC"].functions.transfer(earnings.address, amount), OTHER)


def _fund_eth(chain: Chain, earnings: Any, amount: int) -> None:
    chain.w3.eth.wait_for_transaction_receipt(
        chain.w3.eth.send_transaction(
            {"from": chain.accounts[OTHER], "to": earnings.address, "value": amount, "gasPrice": 0}
        )
    )


def test_credit_needs_authorisation_and_backing(chain: Chain, earnings: Any) -> None:
    e = earnings.functions
    usdc = chain.c["TestUSDC"].address
    host = chain.accounts[HOST]
    chain.reverts(e.creditEarnings(host, 1, usdc), USER, "Caller not authorized")
    chain.reverts(e.creditEarnings(host, 1, usdc), OTHER, "Credit not backed by funds")
    _fund_usdc(chain, earnings, 1000)
    chain.reverts(e.creditEarnings(host, 0, usdc), OTHER, "Amount must be positive")
    chain.reverts(e.creditEarnings(ZERO, 1, usdc), OTHER, "Invalid host")
    receipt = chain.send(e.creditEarnings(host, 600, usdc), OTHER)
    assert dict(chain.event(receipt, "HostEarnings", "EarningsCredited")) == {
        "host": host,
        "token": usdc,
        "amount": 600,
        "newBalance": 600,
    }
    chain.reverts(
        e.creditEarnings(chain.accounts[USER], 401, usdc), OTHER, "Credit not backed by funds"
    )
    chain.send(e.creditEarnings(chain.accounts[USER], 400, usdc), OTHER)
    assert e.getTokenStats(usdc).call() == [1000, 0, 1000]
    assert e.totalAccumulated(usdc).call() == 1000


def test_eth_is_accepted_only_from_authorised_callers(chain: Chain, earnings: Any) -> None:
    from web3.exceptions import ContractLogicError

    with pytest.raises(ContractLogicError, match="Caller not authorized"):
        chain.w3.eth.call({"from": chain.accounts[USER], "to": earnings.address, "value": 1})
    _fund_eth(chain, earnings, 5 * ETHER)
    assert chain.eth(earnings.address) == 5 * ETHER


def test_withdrawals(chain: Chain, earnings: Any) -> None:
    e = earnings.functions
    usdc = chain.c["TestUSDC"].address
    host = chain.accounts[HOST]
    _fund_usdc(chain, earnings, 3 * USDC)
    _fund_eth(chain, earnings, 2 * ETHER)
    chain.send(e.creditEarnings(host, 3 * USDC, usdc), OTHER)
    chain.send(e.creditEarnings(host, 2 * ETHER, ZERO), OTHER)
    assert e.getBalances(host, [usdc, ZERO, chain.c["FABToken"].address]).call() == [
        3 * USDC,
        2 * ETHER,
        0,
    ]
    usdc_before, eth_before = chain.usdc(HOST), chain.eth(HOST)

    chain.reverts(e.withdraw(3 * USDC + 1, usdc), HOST, "Insufficient earnings")
    chain.reverts(e.withdraw(0, usdc), HOST, "Amount must be positive")
    receipt = chain.send(e.withdraw(USDC, usdc), HOST)
    assert dict(chain.event(receipt, "HostEarnings", "EarningsWithdrawn")) == {
        "host": host,
        "token": usdc,
        "amount": USDC,
        "remainingBalance": 2 * USDC,
    }
    chain.send(e.withdrawAll(ZERO), HOST)
    chain.reverts(e.withdrawAll(ZERO), HOST, "No earnings to withdraw")
    receipt = chain.send(e.withdrawMultiple([ZERO, usdc]), HOST)
    assert len(chain.events(receipt, "HostEarnings", "EarningsWithdrawn")) == 1
    chain.reverts(e.withdrawMultiple([ZERO, usdc]), HOST, "No earnings to withdraw")

    assert chain.usdc(HOST) == usdc_before + 3 * USDC
    assert chain.eth(HOST) == eth_before + 2 * ETHER
    assert e.getTokenStats(usdc).call() == [3 * USDC, 3 * USDC, 0]
    assert e.getTokenStats(ZERO).call() == [2 * ETHER, 2 * ETHER, 0]
    assert e.totalWithdrawn(usdc).call() == 3 * USDC


def test_rescue_only_takes_the_excess(chain: Chain, earnings: Any) -> None:
    e = earnings.functions
    usdc = chain.c["TestUSDC"].address
    _fund_usdc(chain, earnings, 1000)
    chain.send(e.creditEarnings(chain.accounts[HOST], 700, usdc), OTHER)
    chain.reverts(e.rescueTokens(usdc, 1), OTHER, "OwnableUnauthorizedAccount(address)")
    chain.reverts(e.rescueTokens(usdc, 301), DEPLOYER, "Amount exceeds excess")
    chain.reverts(e.rescueTokens(ZERO, 1), DEPLOYER, "Amount exceeds excess")
    before = chain.usdc(DEPLOYER)
    receipt = chain.send(e.rescueTokens(usdc, 300), DEPLOYER)
    assert dict(chain.event(receipt, "HostEarnings", "TokensRescued")) == {
        "token": usdc,
        "to": chain.accounts[DEPLOYER],
        "amount": 300,
    }
    assert chain.usdc(DEPLOYER) == before + 300
    assert chain.usdc(earnings.address) == 700
    chain.send(e.withdrawAll(usdc), HOST)
