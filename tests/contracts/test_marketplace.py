"""JobMarketplace against anvil: session creation, proofs, completion, timeout, settlement math
(exact to the base unit, odd-number rounding included), deposits, delegates, treasury, pause."""

from __future__ import annotations

import pytest
from contract_helpers import (
    DEFAULT_DURATION,
    DEFAULT_INTERVAL,
    DEFAULT_TIMEOUT,
    DELEGATE,
    DEPLOYER,
    DISPUTE_WINDOW,
    ETH_DEPOSIT,
    ETHER,
    HOST,
    HOST_NATIVE_PRICE,
    HOST_STABLE_PRICE,
    OTHER,
    USDC,
    USER,
    ZERO,
    Chain,
    approve_usdc,
    job_id_of,
    open_eth,
    open_usdc,
    proof_hash,
    prove,
    register_host,
    settlement,
    wait_for_rate,
)

pytestmark = pytest.mark.usefixtures("registered_host")

DAY = 86_400


# ====================================================================== creation


def test_eth_session_records_every_field(chain: Chain) -> None:
    market = chain.c["JobMarketplace"]
    before_user, before_market = chain.eth(USER), chain.eth(market.address)
    fn = chain.market.createSessionJobForModel(
        chain.accounts[HOST], chain.model_id(0), HOST_NATIVE_PRICE, 7200, 500, 120
    )
    receipt = chain.send(fn, USER, value=ETH_DEPOSIT)
    start = chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]

    created = chain.event(receipt, "JobMarketplace", "SessionJobCreated")
    assert dict(created) == {
        "jobId": 1,
        "depositor": chain.accounts[USER],
        "host": chain.accounts[HOST],
        "deposit": ETH_DEPOSIT,
    }
    for_model = chain.event(receipt, "JobMarketplace", "SessionJobCreatedForModel")
    assert for_model["modelId"] == chain.model_id(0) and for_model["deposit"] == ETH_DEPOSIT
    assert chain.session(1) == {
        "id": 1,
        "depositor": chain.accounts[USER],
        "host": chain.accounts[HOST],
        "paymentToken": ZERO,
        "deposit": ETH_DEPOSIT,
        "pricePerToken": HOST_NATIVE_PRICE,
        "tokensUsed": 0,
        "maxDuration": 7200,
        "startTime": start,
        "lastProofTime": start,
        "proofInterval": 500,
        "proofTimeoutWindow": 120,
        "status": 0,
        "withdrawnByHost": 0,
        "refundedToUser": 0,
        "conversationCID": "",
        "lastProofHash": b"\0" * 32,
        "lastProofCID": "",
    }
    assert chain.market.sessionModel(1).call() == chain.model_id(0)
    assert chain.market.userSessions(chain.accounts[USER], 0).call() == 1
    assert chain.market.hostSessions(chain.accounts[HOST], 0).call() == 1
    assert chain.market.nextJobId().call() == 2
    assert chain.market.getLockedBalanceNative(chain.accounts[USER]).call() == ETH_DEPOSIT
    assert chain.market.getTotalBalanceNative(chain.accounts[USER]).call() == ETH_DEPOSIT
    assert chain.eth(USER) == before_user - ETH_DEPOSIT
    assert chain.eth(market.address) == before_market + ETH_DEPOSIT


def test_usdc_session_pulls_exactly_the_deposit(chain: Chain) -> None:
    market = chain.c["JobMarketplace"].address
    before = chain.usdc(USER)
    job = open_usdc(chain, deposit=3 * USDC)
    assert chain.usdc(USER) == before - 3 * USDC
    assert chain.usdc(market) == 3 * USDC
    s = chain.session(job)
    assert s["paymentToken"] == chain.c["TestUSDC"].address and s["deposit"] == 3 * USDC
    usdc = chain.c["TestUSDC"].address
    assert chain.market.getLockedBalanceToken(chain.accounts[USER], usdc).call() == 3 * USDC
    assert chain.market.getTotalBalanceToken(chain.accounts[USER], usdc).call() == 3 * USDC


def test_job_ids_are_sequential_from_one(chain: Chain) -> None:
    assert [open_eth(chain) for _ in range(3)] == [1, 2, 3]


def test_creation_boundaries_are_accepted(chain: Chain) -> None:
    min_deposit = chain.market.MIN_DEPOSIT().call()
    max_tokens = min_deposit * 1000 // HOST_NATIVE_PRICE
    job = open_eth(chain, min_deposit, interval=max_tokens, duration=365 * DAY, timeout=60)
    assert chain.session(job)["proofInterval"] == max_tokens
    open_eth(chain, 1000 * ETHER, interval=100, timeout=3600)


ETH_CREATION_REVERTS = [
    ({"host": "zero"}, "Invalid host"),
    ({"price": 0}, "Invalid price"),
    ({"duration": 0}, "Invalid max duration"),
    ({"duration": 365 * DAY + 1}, "Invalid max duration"),
    ({"timeout": 59}, "Invalid proof timeout window"),
    ({"timeout": 3601}, "Invalid proof timeout window"),
    ({"deposit": 10**14 - 1}, "Deposit below minimum"),
    ({"deposit": 1000 * ETHER + 1}, "Deposit above maximum"),
    ({"interval": 99}, "Proof interval below minimum"),
    ({"deposit": 10**14, "interval": 100_001}, "Deposit too small for proof interval"),
    ({"model": "unknown"}, "Model not approved"),
    ({"host": OTHER}, "Host not active"),
    ({"model": 2}, "Host does not support model"),
    ({"price": HOST_NATIVE_PRICE - 1}, "Price below host minimum"),
]


@pytest.mark.parametrize(("change", "reason"), ETH_CREATION_REVERTS)
def test_eth_creation_reverts(chain: Chain, change: dict, reason: str) -> None:
    args = {
        "deposit": ETH_DEPOSIT,
        "price": HOST_NATIVE_PRICE,
        "duration": DEFAULT_DURATION,
        "interval": DEFAULT_INTERVAL,
        "timeout": DEFAULT_TIMEOUT,
        "host": HOST,
        "model": 0,
    } | change
    host = ZERO if args["host"] == "zero" else chain.accounts[args["host"]]
    model = (
        proof_hash("no such model") if args["model"] == "unknown" else chain.model_id(args["model"])
    )
    fn = chain.market.createSessionJobForModel(
        host, model, args["price"], args["duration"], args["interval"], args["timeout"]
    )
    chain.reverts(fn, USER, reason, value=args["deposit"])


def test_deactivated_model_cannot_be_booked(chain: Chain) -> None:
    chain.send(chain.models.deactivateModel(chain.model_id(0)), DEPLOYER)
    fn = chain.market.createSessionJobForModel(
        chain.accounts[HOST], chain.model_id(0), HOST_NATIVE_PRICE, 3600, 1000, 300
    )
    chain.reverts(fn, USER, "Model not approved", value=ETH_DEPOSIT)


def _token_session(chain: Chain, token: str, deposit: int, price: int = HOST_STABLE_PRICE):
    return chain.market.createSessionJobForModelWithToken(
        chain.accounts[HOST], chain.model_id(0), token, deposit, price, 3600, 1000, 300
    )


def test_token_creation_reverts(chain: Chain) -> None:
    usdc = chain.c["TestUSDC"].address
    fab = chain.c["FABToken"].address
    approve_usdc(chain, USER, 10**13)
    chain.reverts(
        _token_session(chain, ZERO, USDC), USER, "Use createSessionJobForModel for native"
    )
    chain.reverts(_token_session(chain, fab, USDC), USER, "Token not accepted")
    chain.reverts(_token_session(chain, usdc, 499_999), USER, "Deposit below minimum")
    chain.reverts(_token_session(chain, usdc, 10**12 + 1), USER, "Deposit above maximum")
    chain.reverts(
        _token_session(chain, usdc, USDC, HOST_STABLE_PRICE - 1), USER, "Price below host minimum"
    )
    approve_usdc(chain, USER, USDC - 1)
    chain.reverts(
        _token_session(chain, usdc, USDC),
        USER,
        "ERC20InsufficientAllowance(address,uint256,uint256)",
    )
    approve_usdc(chain, USER, 500_000)
    chain.send(_token_session(chain, usdc, 500_000), USER)  # the minimum is accepted


def test_model_price_override_is_enforced(chain: Chain) -> None:
    usdc = chain.c["TestUSDC"].address
    chain.send(chain.nodes.setModelTokenPricing(chain.model_id(0), usdc, 5000), HOST)
    approve_usdc(chain, USER, 10 * USDC)
    chain.reverts(_token_session(chain, usdc, USDC, 4999), USER, "Price below host minimum")
    chain.send(_token_session(chain, usdc, USDC, 5000), USER)
    open_usdc(chain, model=1, price=HOST_STABLE_PRICE)  # the other model keeps the default


def test_creation_is_blocked_while_paused(chain: Chain) -> None:
    chain.send(chain.market.pause(), DEPLOYER)
    fn = chain.market.createSessionJobForModel(
        chain.accounts[HOST], chain.model_id(0), HOST_NATIVE_PRICE, 3600, 1000, 300
    )
    chain.reverts(fn, USER, "EnforcedPause()", value=ETH_DEPOSIT)
    chain.send(chain.market.unpause(), DEPLOYER)
    chain.send(fn, USER, value=ETH_DEPOSIT)


# ======================================================================== proofs


def test_proof_updates_the_session(chain: Chain) -> None:
    job = open_eth(chain)
    digest = proof_hash("first")
    wait_for_rate(chain, job, 1500)
    fn = chain.market.submitProofOfWork(job, 1500, digest, "bafy-proof", "bafy-delta")
    receipt = chain.send(fn, HOST)
    at = chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]

    assert dict(chain.event(receipt, "JobMarketplace", "ProofSubmitted")) == {
        "jobId": job,
        "host": chain.accounts[HOST],
        "tokensClaimed": 1500,
        "proofHash": digest,
        "proofCID": "bafy-proof",
        "deltaCID": "bafy-delta",
    }
    verified = chain.event(receipt, "ProofSystem", "ProofVerified")
    assert dict(verified) == {"proofHash": digest, "prover": chain.accounts[HOST], "tokens": 1500}
    s = chain.session(job)
    assert (s["tokensUsed"], s["lastProofTime"], s["lastProofHash"], s["lastProofCID"]) == (
        1500,
        at,
        digest,
        "bafy-proof",
    )
    assert chain.market.getProofSubmission(job, 0).call() == [digest, 1500, at, True, "bafy-delta"]
    assert chain.c["ProofSystem"].functions.verifiedProofs(digest).call() is True
    prove(chain, job, 700)
    assert chain.session(job)["tokensUsed"] == 2200
    chain.reverts(chain.market.getProofSubmission(job, 2), USER, "Proof index out of range")


def test_proof_reverts(chain: Chain) -> None:
    job = open_eth(chain)
    digest = proof_hash()

    def submit(tokens: int, session: int = job, h: bytes | None = None):
        return chain.market.submitProofOfWork(session, tokens, h or proof_hash(), "cid", "delta")

    chain.advance(60)
    chain.reverts(submit(1000), USER, "Only host can submit proof")
    chain.reverts(submit(99), HOST, "Must claim minimum tokens")
    chain.reverts(submit(1000, session=99), HOST, "Session not found")
    chain.send(submit(1000, h=digest), HOST)
    chain.advance(60)
    chain.reverts(submit(1000, h=digest), HOST, "Proof already used")
    other = open_eth(chain)
    chain.advance(60)
    chain.reverts(submit(1000, session=other, h=digest), HOST, "Proof already used")


def test_claims_are_capped_by_the_deposit(chain: Chain) -> None:
    deposit = 10**14  # 100,000 tokens at 1 gwei
    job = open_eth(chain, deposit)
    max_tokens = deposit * 1000 // HOST_NATIVE_PRICE
    chain.advance(max_tokens // 2000 + 1)
    fn = chain.market.submitProofOfWork(job, max_tokens + 1, proof_hash(), "cid", "delta")
    chain.reverts(fn, HOST, "Exceeds deposit")
    prove(chain, job, max_tokens - 100)
    chain.advance(60)
    chain.reverts(
        chain.market.submitProofOfWork(job, 101, proof_hash(), "c", "d"), HOST, "Exceeds deposit"
    )
    prove(chain, job, 100)
    assert chain.session(job)["tokensUsed"] == max_tokens


def test_rate_limit_allows_twice_the_model_rate(chain: Chain) -> None:
    job = open_eth(chain)
    start = chain.session(job)["lastProofTime"]
    chain.set_next_timestamp(start + 10)  # 10 s x 1000 tokens/s x 2 = 20,000 tokens
    chain.reverts(
        chain.market.submitProofOfWork(job, 20_001, proof_hash(), "c", "d"),
        HOST,
        "Exceeds rate limit",
    )
    chain.set_next_timestamp(start + 10)
    chain.send(chain.market.submitProofOfWork(job, 20_000, proof_hash(), "c", "d"), HOST)


def test_rate_limit_follows_the_model_setting(chain: Chain) -> None:
    chain.send(chain.models.setModelRateLimit(chain.model_id(0), 50), DEPLOYER)
    job = open_eth(chain)
    start = chain.session(job)["lastProofTime"]
    chain.set_next_timestamp(start + 2)  # 2 s x 50 x 2 = 200 tokens
    chain.reverts(
        chain.market.submitProofOfWork(job, 201, proof_hash(), "c", "d"), HOST, "Exceeds rate limit"
    )
    chain.set_next_timestamp(start + 2)
    chain.send(chain.market.submitProofOfWork(job, 200, proof_hash(), "c", "d"), HOST)


def test_proofs_are_blocked_while_paused(chain: Chain) -> None:
    job = open_eth(chain)
    chain.advance(10)
    chain.send(chain.market.pause(), DEPLOYER)
    fn = chain.market.submitProofOfWork(job, 1000, proof_hash(), "c", "d")
    chain.reverts(fn, HOST, "EnforcedPause()")


def test_proofs_need_a_proof_system(chain: Chain) -> None:
    market = chain.deploy(
        "JobMarketplace",
        chain.c["NodeRegistry"].address,
        chain.c["HostEarnings"].address,
        1000,
        DISPUTE_WINDOW,
    )
    fn = market.functions.createSessionJobForModel(
        chain.accounts[HOST], chain.model_id(0), HOST_NATIVE_PRICE, 3600, 1000, 300
    )
    job = job_id_of_market(chain, market, chain.send(fn, USER, value=ETH_DEPOSIT))
    chain.advance(10)
    chain.reverts(
        market.functions.submitProofOfWork(job, 1000, proof_hash(), "c", "d"),
        HOST,
        "Proof system not set",
    )


def job_id_of_market(chain: Chain, market, receipt) -> int:
    from web3.logs import DISCARD

    events = market.events.SessionJobCreated().process_receipt(receipt, errors=DISCARD)
    return int(events[0]["args"]["jobId"])


# ==================================================================== settlement


def test_worked_example_in_usdc(chain: Chain) -> None:
    """1 USDC at price 2000, 150,000 tokens proven: host 0.27, treasury 0.03, refund 0.70."""
    market, earnings = chain.c["JobMarketplace"], chain.c["HostEarnings"]
    usdc = chain.c["TestUSDC"].address
    user_before = chain.usdc(USER)
    job = open_usdc(chain, deposit=USDC, price=2000)
    prove(chain, job, 100_000)
    prove(chain, job, 50_000)
    receipt = chain.send(chain.market.completeSessionJob(job, "bafy-conversation"), USER)

    assert dict(chain.event(receipt, "JobMarketplace", "SessionCompleted")) == {
        "jobId": job,
        "totalTokensUsed": 150_000,
        "hostEarnings": 300_000,
        "userRefund": 700_000,
    }
    assert dict(chain.event(receipt, "JobMarketplace", "SessionCompletedBy")) == {
        "jobId": job,
        "completedBy": chain.accounts[USER],
        "tokensUsed": 150_000,
        "paymentAmount": 300_000,
        "refundAmount": 700_000,
    }
    credited = chain.event(receipt, "HostEarnings", "EarningsCredited")
    assert dict(credited) == {
        "host": chain.accounts[HOST],
        "token": usdc,
        "amount": 270_000,
        "newBalance": 270_000,
    }
    s = chain.session(job)
    assert (s["status"], s["withdrawnByHost"], s["refundedToUser"], s["conversationCID"]) == (
        1,
        300_000,
        700_000,
        "bafy-conversation",
    )
    assert chain.usdc(USER) == user_before - 300_000
    assert chain.usdc(earnings.address) == 270_000
    assert chain.usdc(market.address) == 30_000
    assert chain.market.accumulatedTreasuryTokens(usdc).call() == 30_000
    assert earnings.functions.getBalance(chain.accounts[HOST], usdc).call() == 270_000
    assert chain.market.getLockedBalanceToken(chain.accounts[USER], usdc).call() == 0

    host_before = chain.usdc(HOST)
    chain.send(earnings.functions.withdrawAll(usdc), HOST)
    assert chain.usdc(HOST) == host_before + 270_000
    assert chain.usdc(earnings.address) == 0


@pytest.mark.parametrize(
    ("token", "price", "tokens", "deposit"),
    [
        ("eth", 1_000_000_000_001, 333, ETH_DEPOSIT),
        ("eth", 1_234_567_891_011, 1_001, 10**15 + 7),
        ("usdc", 2001, 777, USDC),
        ("usdc", 2999, 101, 500_001),
        ("usdc", 3, 100_003, 500_000),  # host payment 300.009 -> 300, fee 30.0 -> 30
        ("usdc", 7, 101, 500_000),  # host payment 0.707 -> 0: nothing to pay, nothing credited
    ],
)
def test_odd_number_settlement_rounds_down(
    chain: Chain, token: str, price: int, tokens: int, deposit: int
) -> None:
    market, earnings = chain.c["JobMarketplace"], chain.c["HostEarnings"]
    usdc = chain.c["TestUSDC"].address
    if token == "usdc":
        chain.send(chain.nodes.updatePricingStable(1), HOST)
        job = open_usdc(chain, deposit=deposit, price=price, interval=100)
        balance, asset = chain.usdc, usdc
    else:
        job = open_eth(chain, deposit, price, interval=100)
        balance, asset = chain.eth, ZERO
    prove(chain, job, tokens)
    host_payment, fee, net, refund = settlement(tokens, price, deposit)
    user_before, market_before = balance(USER), balance(market.address)

    receipt = chain.send(chain.market.completeSessionJob(job, "cid"), USER)

    assert (
        chain.event(receipt, "JobMarketplace", "SessionCompleted")["hostEarnings"] == host_payment
    )
    assert chain.event(receipt, "JobMarketplace", "SessionCompleted")["userRefund"] == refund
    assert balance(USER) == user_before + refund
    assert balance(market.address) == market_before - refund - net
    assert balance(earnings.address) == net
    assert earnings.functions.getBalance(chain.accounts[HOST], asset).call() == net
    treasury = (
        chain.market.accumulatedTreasuryNative().call()
        if token == "eth"
        else chain.market.accumulatedTreasuryTokens(usdc).call()
    )
    assert treasury == fee
    assert host_payment + refund == deposit and fee + net == host_payment
    if net == 0:
        assert chain.events(receipt, "HostEarnings", "EarningsCredited") == []


def test_no_proof_means_full_refund(chain: Chain) -> None:
    user_before = chain.eth(USER)
    job = open_eth(chain)
    receipt = chain.send(chain.market.completeSessionJob(job, ""), USER)
    assert chain.eth(USER) == user_before
    assert chain.event(receipt, "JobMarketplace", "SessionCompleted")["userRefund"] == ETH_DEPOSIT
    assert chain.events(receipt, "HostEarnings", "EarningsCredited") == []
    sent = chain.events(receipt, "JobMarketplace", "PaymentSent")
    assert [dict(e["args"]) for e in sent] == [
        {"recipient": chain.accounts[USER], "amount": ETH_DEPOSIT}
    ]
    assert chain.market.accumulatedTreasuryNative().call() == 0


def test_early_cancellation_fee_is_charged_to_a_depositor_completing_before_any_proof(
    chain: Chain,
) -> None:
    # upstream's minTokensFee: the depositor who ends a session before the first proof pays
    # for minTokensFee tokens at the session's price; the host gets it like proven work
    usdc = chain.c["TestUSDC"].functions
    chain.send(chain.market.setMinTokensFee(1000), DEPLOYER)
    job = open_usdc(chain)  # 1 USDC at 2000 (2 micro-USDC per token)
    user_before = usdc.balanceOf(chain.accounts[USER]).call()
    receipt = chain.send(chain.market.completeSessionJob(job, ""), USER)

    host_payment, fee, net, refund = settlement(1000, HOST_STABLE_PRICE, USDC)
    assert (host_payment, fee, net, refund) == (2000, 200, 1800, 998_000)
    assert dict(chain.event(receipt, "JobMarketplace", "SessionCompletedBy")) == {
        "jobId": job,
        "completedBy": chain.accounts[USER],
        "tokensUsed": 0,
        "paymentAmount": host_payment,
        "refundAmount": refund,
    }
    assert usdc.balanceOf(chain.accounts[USER]).call() == user_before + refund
    earnings = chain.c["HostEarnings"].functions
    assert earnings.getBalance(chain.accounts[HOST], chain.c["TestUSDC"].address).call() == net
    assert chain.market.accumulatedTreasuryTokens(chain.c["TestUSDC"].address).call() == fee
    session = chain.session(job)
    assert (session["tokensUsed"], session["withdrawnByHost"], session["refundedToUser"]) == (
        0,
        host_payment,
        refund,
    )


def test_early_cancellation_fee_only_for_a_depositor_without_proofs(chain: Chain) -> None:
    chain.send(chain.market.setMinTokensFee(5000), DEPLOYER)
    # after a proof, the depositor pays for the proven tokens only
    proven = open_eth(chain)
    prove(chain, proven, 100)
    receipt = chain.send(chain.market.completeSessionJob(proven, ""), USER)
    paid = chain.event(receipt, "JobMarketplace", "SessionCompleted")["hostEarnings"]
    assert paid == settlement(100, HOST_NATIVE_PRICE, ETH_DEPOSIT)[0]
    # the host completing an unproven session gets nothing
    unproven = open_eth(chain)
    chain.set_next_timestamp(chain.session(unproven)["startTime"] + DISPUTE_WINDOW)
    receipt = chain.send(chain.market.completeSessionJob(unproven, ""), HOST)
    assert chain.event(receipt, "JobMarketplace", "SessionCompleted")["userRefund"] == ETH_DEPOSIT
    # nor does a timeout of an unproven session
    lapsed = open_eth(chain, timeout=60)
    chain.set_next_timestamp(chain.session(lapsed)["startTime"] + 61)
    receipt = chain.send(chain.market.triggerSessionTimeout(lapsed), OTHER)
    assert chain.event(receipt, "JobMarketplace", "SessionTimedOut")["userRefund"] == ETH_DEPOSIT


def test_early_cancellation_fee_is_capped_at_the_deposit(chain: Chain) -> None:
    chain.send(chain.market.setMinTokensFee(2**255), DEPLOYER)  # absurd: no overflow, capped
    job = open_eth(chain)
    receipt = chain.send(chain.market.completeSessionJob(job, ""), USER)
    completed = chain.event(receipt, "JobMarketplace", "SessionCompleted")
    assert (completed["hostEarnings"], completed["userRefund"]) == (ETH_DEPOSIT, 0)


def test_fully_used_deposit_refunds_nothing(chain: Chain) -> None:
    deposit = 10**14
    job = open_eth(chain, deposit, interval=100)
    prove(chain, job, deposit * 1000 // HOST_NATIVE_PRICE)
    user_before = chain.eth(USER)
    receipt = chain.send(chain.market.completeSessionJob(job, ""), USER)
    assert chain.eth(USER) == user_before
    sent = chain.events(receipt, "JobMarketplace", "PaymentSent")
    assert [dict(e["args"]) for e in sent] == [
        {"recipient": chain.accounts[HOST], "amount": 9 * 10**13}
    ]
    assert chain.session(job)["refundedToUser"] == 0


def test_host_completes_only_after_the_dispute_window(chain: Chain) -> None:
    job = open_eth(chain)
    start = chain.session(job)["startTime"]
    chain.set_next_timestamp(start + DISPUTE_WINDOW - 1)
    chain.reverts(chain.market.completeSessionJob(job, "c"), HOST, "Must wait dispute window")
    chain.set_next_timestamp(start + DISPUTE_WINDOW)
    receipt = chain.send(chain.market.completeSessionJob(job, "c"), HOST)
    by = chain.event(receipt, "JobMarketplace", "SessionCompletedBy")
    assert by["completedBy"] == chain.accounts[HOST]


def test_only_depositor_or_host_complete(chain: Chain) -> None:
    job = open_eth(chain)
    chain.advance(DISPUTE_WINDOW)
    chain.reverts(
        chain.market.completeSessionJob(job, "c"), OTHER, "Only depositor or host can complete"
    )
    chain.reverts(
        chain.market.completeSessionJob(job, "c"), DEPLOYER, "Only depositor or host can complete"
    )
    chain.reverts(chain.market.completeSessionJob(77, "c"), USER, "Session not found")
    chain.send(chain.market.completeSessionJob(job, "c"), USER)
    chain.reverts(chain.market.completeSessionJob(job, "c"), USER, "Session not active")
    chain.reverts(chain.market.completeSessionJob(job, "c"), HOST, "Session not active")
    chain.advance(60)
    chain.reverts(
        chain.market.submitProofOfWork(job, 1000, proof_hash(), "c", "d"),
        HOST,
        "Session not active",
    )
    chain.reverts(chain.market.triggerSessionTimeout(job), OTHER, "Session not active")


def test_completion_works_while_paused(chain: Chain) -> None:
    job = open_eth(chain)
    prove(chain, job, 1000)
    chain.send(chain.market.pause(), DEPLOYER)
    chain.send(chain.market.completeSessionJob(job, "c"), USER)
    assert chain.session(job)["status"] == 1


# ======================================================================= timeout


def test_timeout_after_the_proof_window(chain: Chain) -> None:
    job = open_eth(chain, timeout=120)
    start = chain.session(job)["startTime"]
    chain.set_next_timestamp(start + 120)
    chain.reverts(chain.market.triggerSessionTimeout(job), OTHER, "Session not timed out")
    prove(chain, job, 1000)  # resets the window
    last = chain.session(job)["lastProofTime"]
    chain.set_next_timestamp(last + 120)
    chain.reverts(chain.market.triggerSessionTimeout(job), OTHER, "Session not timed out")
    chain.set_next_timestamp(last + 121)
    user_before = chain.eth(USER)
    receipt = chain.send(chain.market.triggerSessionTimeout(job), OTHER)

    host_payment, fee, net, refund = settlement(1000, HOST_NATIVE_PRICE, ETH_DEPOSIT)
    assert dict(chain.event(receipt, "JobMarketplace", "SessionTimedOut")) == {
        "jobId": job,
        "hostEarnings": host_payment,
        "userRefund": refund,
    }
    assert chain.eth(USER) == user_before + refund
    assert chain.session(job)["status"] == 2
    assert chain.market.accumulatedTreasuryNative().call() == fee
    earnings = chain.c["HostEarnings"].functions
    assert earnings.getBalance(chain.accounts[HOST], ZERO).call() == net
    assert chain.events(receipt, "JobMarketplace", "SessionCompleted") == []


def test_timeout_after_the_max_duration_despite_proofs(chain: Chain) -> None:
    job = open_eth(chain, duration=200, timeout=3600)
    start = chain.session(job)["startTime"]
    chain.set_next_timestamp(start + 150)
    chain.send(chain.market.submitProofOfWork(job, 1000, proof_hash(), "c", "d"), HOST)
    chain.set_next_timestamp(start + 200)
    chain.reverts(chain.market.triggerSessionTimeout(job), USER, "Session not timed out")
    chain.set_next_timestamp(start + 201)
    chain.send(chain.market.triggerSessionTimeout(job), USER)
    assert chain.session(job)["status"] == 2
    chain.reverts(chain.market.triggerSessionTimeout(job), USER, "Session not active")
    chain.reverts(chain.market.triggerSessionTimeout(1234), USER, "Session not found")


def test_timeout_works_while_paused(chain: Chain) -> None:
    job = open_eth(chain, timeout=60)
    chain.send(chain.market.pause(), DEPLOYER)
    chain.advance(61)
    chain.send(chain.market.triggerSessionTimeout(job), OTHER)


# ====================================================================== deposits


def test_native_deposit_and_withdrawal(chain: Chain) -> None:
    market = chain.c["JobMarketplace"].address
    before = chain.eth(USER)
    receipt = chain.send(chain.market.depositNative(), USER, value=3 * ETHER)
    assert dict(chain.event(receipt, "JobMarketplace", "DepositReceived")) == {
        "depositor": chain.accounts[USER],
        "amount": 3 * ETHER,
        "token": ZERO,
    }
    assert chain.market.getDepositBalance(chain.accounts[USER], ZERO).call() == 3 * ETHER
    assert chain.market.userDepositsNative(chain.accounts[USER]).call() == 3 * ETHER
    chain.reverts(chain.market.withdrawNative(3 * ETHER + 1), USER, "Insufficient balance")
    chain.reverts(chain.market.withdrawNative(0), USER, "Amount must be positive")
    chain.reverts(chain.market.depositNative(), USER, "Amount must be positive")
    receipt = chain.send(chain.market.withdrawNative(ETHER + 1), USER)
    assert dict(chain.event(receipt, "JobMarketplace", "WithdrawalProcessed")) == {
        "depositor": chain.accounts[USER],
        "amount": ETHER + 1,
        "token": ZERO,
    }
    assert chain.eth(USER) == before - 2 * ETHER + 1
    assert chain.eth(market) == 2 * ETHER - 1


def test_token_deposit_and_withdrawal(chain: Chain) -> None:
    usdc, fab = chain.c["TestUSDC"].address, chain.c["FABToken"].address
    approve_usdc(chain, USER, 5 * USDC)
    chain.send(chain.market.depositToken(usdc, 5 * USDC), USER)
    assert chain.market.getDepositBalances(chain.accounts[USER], [usdc, ZERO, fab]).call() == [
        5 * USDC,
        0,
        0,
    ]
    assert chain.market.userDepositsToken(chain.accounts[USER], usdc).call() == 5 * USDC
    chain.reverts(chain.market.depositToken(fab, 1), USER, "Token not accepted")
    chain.reverts(chain.market.withdrawToken(usdc, 5 * USDC + 1), USER, "Insufficient balance")
    chain.reverts(chain.market.withdrawToken(ZERO, 1), USER, "Use withdrawNative")
    before = chain.usdc(USER)
    chain.send(chain.market.withdrawToken(usdc, 2 * USDC), USER)
    assert chain.usdc(USER) == before + 2 * USDC
    assert chain.market.getDepositBalance(chain.accounts[USER], usdc).call() == 3 * USDC


def test_withdrawals_work_while_paused(chain: Chain) -> None:
    chain.send(chain.market.depositNative(), USER, value=ETHER)
    chain.send(chain.market.pause(), DEPLOYER)
    chain.reverts(chain.market.depositNative(), USER, "EnforcedPause()", value=1)
    chain.send(chain.market.withdrawNative(ETHER), USER)


def test_session_from_native_deposit_refunds_into_the_deposit(chain: Chain) -> None:
    chain.send(chain.market.depositNative(), USER, value=ETHER)
    fn = chain.market.createSessionFromDepositForModel(
        chain.model_id(0),
        chain.accounts[HOST],
        ZERO,
        ETH_DEPOSIT,
        HOST_NATIVE_PRICE,
        3600,
        1000,
        300,
    )
    chain.reverts(
        chain.market.createSessionFromDepositForModel(
            chain.model_id(0),
            chain.accounts[HOST],
            ZERO,
            ETHER + 1,
            HOST_NATIVE_PRICE,
            3600,
            1000,
            300,
        ),
        USER,
        "Insufficient deposit balance",
    )
    receipt = chain.send(fn, USER)
    job = job_id_of(chain, receipt)
    assert dict(chain.event(receipt, "JobMarketplace", "SessionCreatedByDepositor")) == {
        "sessionId": job,
        "depositor": chain.accounts[USER],
        "host": chain.accounts[HOST],
        "deposit": ETH_DEPOSIT,
    }
    user = chain.accounts[USER]
    assert chain.market.getDepositBalance(user, ZERO).call() == ETHER - ETH_DEPOSIT
    assert chain.market.getLockedBalanceNative(user).call() == ETH_DEPOSIT
    assert chain.market.getTotalBalanceNative(user).call() == ETHER

    prove(chain, job, 2500)
    host_payment, _, _, refund = settlement(2500, HOST_NATIVE_PRICE, ETH_DEPOSIT)
    eth_before = chain.eth(USER)
    receipt = chain.send(chain.market.completeSessionJob(job, "c"), USER)
    assert chain.eth(USER) == eth_before  # nothing sent: credited instead
    assert dict(chain.event(receipt, "JobMarketplace", "RefundCreditedToDeposit")) == {
        "jobId": job,
        "depositor": user,
        "amount": refund,
        "token": ZERO,
    }
    assert chain.market.getDepositBalance(user, ZERO).call() == ETHER - host_payment
    assert chain.market.getLockedBalanceNative(user).call() == 0
    chain.send(chain.market.withdrawNative(ETHER - host_payment), USER)
    assert chain.eth(USER) == eth_before + ETHER - host_payment


def test_session_from_usdc_deposit(chain: Chain) -> None:
    usdc = chain.c["TestUSDC"].address
    approve_usdc(chain, USER, 2 * USDC)
    chain.send(chain.market.depositToken(usdc, 2 * USDC), USER)
    fn = chain.market.createSessionFromDepositForModel(
        chain.model_id(1), chain.accounts[HOST], usdc, USDC, HOST_STABLE_PRICE, 3600, 1000, 300
    )
    job = job_id_of(chain, chain.send(fn, USER))
    assert chain.market.getTotalBalanceToken(chain.accounts[USER], usdc).call() == 2 * USDC
    prove(chain, job, 1000)
    chain.advance(301)
    chain.send(chain.market.triggerSessionTimeout(job), OTHER)
    # 1000 tokens x 2000 / 1000 = 2000 units paid; the rest of the 1 USDC goes back to the deposit
    assert chain.market.getDepositBalance(chain.accounts[USER], usdc).call() == 2 * USDC - 2000


# ===================================================================== delegates


def _delegate_session(chain: Chain, payer=USER, token=None, amount=USDC):
    return chain.market.createSessionForModelAsDelegate(
        chain.accounts[payer] if isinstance(payer, int) else payer,
        chain.model_id(0),
        chain.accounts[HOST],
        chain.c["TestUSDC"].address if token is None else token,
        amount,
        HOST_STABLE_PRICE,
        3600,
        1000,
        300,
    )


def test_delegate_opens_a_session_paid_by_the_payer(chain: Chain) -> None:
    user, delegate = chain.accounts[USER], chain.accounts[DELEGATE]
    chain.reverts(_delegate_session(chain), DELEGATE, "NotDelegate()")
    receipt = chain.send(chain.market.authorizeDelegate(delegate, True), USER)
    assert dict(chain.event(receipt, "JobMarketplace", "DelegateAuthorized")) == {
        "depositor": user,
        "delegate": delegate,
        "authorized": True,
    }
    assert chain.market.isDelegateAuthorized(user, delegate).call() is True
    assert chain.market.isAuthorizedDelegate(user, delegate).call() is True
    chain.reverts(_delegate_session(chain, token=ZERO), DELEGATE, "ERC20Only()")
    chain.reverts(_delegate_session(chain, payer=ZERO), DELEGATE, "BadDelegateParams()")
    chain.reverts(_delegate_session(chain, amount=0), DELEGATE, "BadDelegateParams()")

    approve_usdc(chain, USER, USDC)
    payer_before, delegate_before = chain.usdc(USER), chain.usdc(DELEGATE)
    receipt = chain.send(_delegate_session(chain), DELEGATE)
    job = job_id_of(chain, receipt)
    assert dict(chain.event(receipt, "JobMarketplace", "SessionCreatedByDelegate")) == {
        "sessionId": job,
        "payer": user,
        "delegate": delegate,
        "host": chain.accounts[HOST],
        "modelId": chain.model_id(0),
        "amount": USDC,
    }
    assert chain.usdc(USER) == payer_before - USDC
    assert chain.usdc(DELEGATE) == delegate_before
    assert chain.session(job)["depositor"] == user

    prove(chain, job, 1000)
    chain.reverts(
        chain.market.completeSessionJob(job, "c"), DELEGATE, "Only depositor or host can complete"
    )
    chain.send(chain.market.completeSessionJob(job, "c"), USER)
    assert chain.usdc(USER) == payer_before - 2000

    chain.send(chain.market.authorizeDelegate(delegate, False), USER)
    chain.reverts(_delegate_session(chain), DELEGATE, "NotDelegate()")
    chain.reverts(chain.market.authorizeDelegate(ZERO, True), USER, "Invalid delegate")
    chain.reverts(chain.market.authorizeDelegate(user, True), USER, "Invalid delegate")


# ====================================================================== treasury


def test_treasury_withdraws_accumulated_fees(chain: Chain) -> None:
    usdc = chain.c["TestUSDC"].address
    eth_job = open_eth(chain)
    usdc_job = open_usdc(chain)
    prove(chain, eth_job, 3333)
    prove(chain, usdc_job, 4444)
    chain.send(chain.market.completeSessionJob(eth_job, ""), USER)
    chain.send(chain.market.completeSessionJob(usdc_job, ""), USER)
    _, eth_fee, _, _ = settlement(3333, HOST_NATIVE_PRICE, ETH_DEPOSIT)
    _, usdc_fee, _, _ = settlement(4444, HOST_STABLE_PRICE, USDC)
    assert (eth_fee, usdc_fee) == (333_300_000_000, 888)

    chain.reverts(chain.market.withdrawTreasuryNative(), OTHER, "Only treasury")
    chain.reverts(chain.market.withdrawTreasuryTokens(ZERO), DEPLOYER, "Use withdrawTreasuryNative")
    eth_before, usdc_before = chain.eth(DEPLOYER), chain.usdc(DEPLOYER)
    receipt = chain.send(chain.market.withdrawTreasuryNative(), DEPLOYER)
    assert dict(chain.event(receipt, "JobMarketplace", "TreasuryWithdrawal")) == {
        "token": ZERO,
        "amount": eth_fee,
    }
    chain.send(chain.market.withdrawTreasuryTokens(usdc), DEPLOYER)
    assert chain.eth(DEPLOYER) == eth_before + eth_fee
    assert chain.usdc(DEPLOYER) == usdc_before + usdc_fee
    chain.reverts(chain.market.withdrawTreasuryNative(), DEPLOYER, "No native fees")
    chain.reverts(chain.market.withdrawTreasuryTokens(usdc), DEPLOYER, "No token fees")
    chain.reverts(chain.market.withdrawAllTreasuryFees([usdc]), DEPLOYER, "No fees to withdraw")
    assert chain.usdc(chain.c["JobMarketplace"].address) == 0
    assert chain.eth(chain.c["JobMarketplace"].address) == 0


def test_withdraw_all_fees_goes_to_the_current_treasury(chain: Chain) -> None:
    usdc = chain.c["TestUSDC"].address
    eth_job, usdc_job = open_eth(chain), open_usdc(chain)
    prove(chain, eth_job, 1000)
    prove(chain, usdc_job, 1000)
    chain.send(chain.market.completeSessionJob(eth_job, ""), USER)
    chain.send(chain.market.completeSessionJob(usdc_job, ""), USER)
    chain.reverts(
        chain.market.setTreasury(chain.accounts[OTHER]),
        OTHER,
        "OwnableUnauthorizedAccount(address)",
    )
    chain.send(chain.market.setTreasury(chain.accounts[OTHER]), DEPLOYER)
    assert chain.market.treasuryAddress().call() == chain.accounts[OTHER]
    chain.reverts(chain.market.withdrawAllTreasuryFees([usdc]), DEPLOYER, "Only treasury")
    eth_before, usdc_before = chain.eth(OTHER), chain.usdc(OTHER)
    receipt = chain.send(chain.market.withdrawAllTreasuryFees([usdc, ZERO]), OTHER)
    assert len(chain.events(receipt, "JobMarketplace", "TreasuryWithdrawal")) == 2
    assert chain.eth(OTHER) == eth_before + 100_000_000_000  # 1000 x 1e12 / 1000 x 10%
    assert chain.usdc(OTHER) == usdc_before + 200  # 1000 x 2000 / 1000 x 10%


# ========================================================================= admin


def test_pause_is_for_owner_or_treasury(chain: Chain) -> None:
    chain.reverts(chain.market.pause(), OTHER, "Only treasury or owner")
    receipt = chain.send(chain.market.pause(), DEPLOYER)
    assert (
        chain.event(receipt, "JobMarketplace", "ContractPaused")["by"] == chain.accounts[DEPLOYER]
    )
    assert chain.event(receipt, "JobMarketplace", "Paused")["account"] == chain.accounts[DEPLOYER]
    assert chain.market.paused().call() is True
    chain.reverts(chain.market.unpause(), OTHER, "Only treasury or owner")
    chain.send(chain.market.setTreasury(chain.accounts[OTHER]), DEPLOYER)
    receipt = chain.send(chain.market.unpause(), OTHER)
    assert chain.event(receipt, "JobMarketplace", "ContractUnpaused")["by"] == chain.accounts[OTHER]
    assert chain.market.paused().call() is False


def test_token_administration(chain: Chain) -> None:
    fab = chain.c["FABToken"].address
    usdc = chain.c["TestUSDC"].address
    assert chain.market.usdcAddress().call() == usdc
    assert chain.market.acceptedTokens(usdc).call() is True
    assert chain.market.tokenMinDeposits(usdc).call() == 500_000
    assert chain.market.tokenMaxDeposits(usdc).call() == 10**12
    chain.reverts(chain.market.addAcceptedToken(fab, 1, 2), OTHER, "Only treasury or owner")
    chain.reverts(chain.market.addAcceptedToken(fab, 0, 2), DEPLOYER, "Invalid minimum deposit")
    chain.reverts(chain.market.addAcceptedToken(fab, 3, 2), DEPLOYER, "Invalid maximum deposit")
    chain.reverts(chain.market.addAcceptedToken(usdc, 1, 2), DEPLOYER, "Token already accepted")
    receipt = chain.send(chain.market.addAcceptedToken(fab, 10, 1000), DEPLOYER)
    assert dict(chain.event(receipt, "JobMarketplace", "TokenAccepted")) == {
        "token": fab,
        "minDeposit": 10,
        "maxDeposit": 1000,
    }
    receipt = chain.send(chain.market.updateTokenMinDeposit(fab, 20), DEPLOYER)
    assert dict(chain.event(receipt, "JobMarketplace", "TokenMinDepositUpdated")) == {
        "token": fab,
        "oldMinDeposit": 10,
        "newMinDeposit": 20,
    }
    receipt = chain.send(chain.market.updateTokenMaxDeposit(fab, 500), DEPLOYER)
    assert dict(chain.event(receipt, "JobMarketplace", "TokenMaxDepositUpdated")) == {
        "token": fab,
        "oldMaxDeposit": 1000,
        "newMaxDeposit": 500,
    }
    chain.reverts(chain.market.updateTokenMinDeposit(fab, 501), DEPLOYER, "Invalid minimum deposit")
    chain.reverts(chain.market.updateTokenMaxDeposit(fab, 19), DEPLOYER, "Invalid maximum deposit")
    chain.reverts(chain.market.updateTokenMinDeposit(ZERO, 1), DEPLOYER, "Token not accepted")
    chain.reverts(chain.market.setUsdcAddress(fab), OTHER, "OwnableUnauthorizedAccount(address)")
    chain.reverts(chain.market.setProofSystem(fab), OTHER, "OwnableUnauthorizedAccount(address)")


def test_chain_config_and_min_tokens_fee(chain: Chain) -> None:
    config = (chain.accounts[OTHER], chain.c["TestUSDC"].address, 10**14, "ETH")
    chain.reverts(
        chain.market.initializeChainConfig(config), OTHER, "OwnableUnauthorizedAccount(address)"
    )
    chain.reverts(
        chain.market.initializeChainConfig((ZERO, ZERO, 0, "")),
        DEPLOYER,
        "Empty native token symbol",
    )
    chain.send(chain.market.initializeChainConfig(config), DEPLOYER)
    assert tuple(chain.market.chainConfig().call()) == config
    chain.reverts(chain.market.initializeChainConfig(config), DEPLOYER, "Chain config already set")
    chain.send(chain.market.setMinTokensFee(123), DEPLOYER)
    assert chain.market.minTokensFee().call() == 123


def test_public_configuration(chain: Chain) -> None:
    m = chain.market
    assert m.feeBasisPoints().call() == 1000
    assert m.disputeWindow().call() == DISPUTE_WINDOW
    assert m.treasuryAddress().call() == chain.accounts[DEPLOYER]
    assert m.owner().call() == chain.accounts[DEPLOYER]
    assert m.nodeRegistry().call() == chain.c["NodeRegistry"].address
    assert m.hostEarnings().call() == chain.c["HostEarnings"].address
    assert m.proofSystem().call() == chain.c["ProofSystem"].address
    constants = (
        m.MIN_DEPOSIT(),
        m.USDC_MIN_DEPOSIT(),
        m.USDC_MAX_DEPOSIT(),
        m.MIN_PROVEN_TOKENS(),
        m.PRICE_PRECISION(),
        m.MIN_PROOF_TIMEOUT(),
        m.MAX_PROOF_TIMEOUT(),
        m.DEFAULT_PROOF_TIMEOUT(),
    )
    assert [c.call() for c in constants] == [10**14, 500_000, 10**12, 100, 1000, 60, 3600, 300]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (("zero", "earnings", 1000, 30), "Invalid node registry"),
        (("nodes", "zero", 1000, 30), "Invalid host earnings"),
        (("nodes", "earnings", 10_001, 30), "Fee above 100%"),
        (("nodes", "earnings", 1000, 0), "Invalid dispute window"),
        (("nodes", "earnings", 1000, 7 * DAY + 1), "Invalid dispute window"),
    ],
)
def test_constructor_checks(chain: Chain, args: tuple, reason: str) -> None:
    from contract_helpers import load_artifact
    from web3.exceptions import ContractLogicError

    lookup = {
        "zero": ZERO,
        "nodes": chain.c["NodeRegistry"].address,
        "earnings": chain.c["HostEarnings"].address,
    }
    values = [lookup.get(a, a) if isinstance(a, str) else a for a in args]
    artifact = load_artifact("JobMarketplace")
    factory = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx = factory.constructor(*values).build_transaction(
        {"from": chain.accounts[DEPLOYER], "gasPrice": 0, "gas": 8_000_000}
    )
    with pytest.raises(ContractLogicError, match=reason):
        chain.w3.eth.call(tx)


def test_second_host_sessions_are_separate(chain: Chain) -> None:
    register_host(chain, who=3, models=(0,), url="http://127.0.0.1:8081")
    a = open_eth(chain)
    b = open_eth(chain, host=3)
    assert chain.market.hostSessions(chain.accounts[3], 0).call() == b
    assert chain.market.hostSessions(chain.accounts[HOST], 0).call() == a
    assert chain.market.userSessions(chain.accounts[USER], 1).call() == b
