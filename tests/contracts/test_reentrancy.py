"""A depositor contract that calls back into JobMarketplace while being refunded, and one that
rejects refunds altogether. Re-entry must fail, settlement must stay exact, and a depositor
must never be able to block the host's payment."""

from __future__ import annotations

from typing import Any

import pytest
from contract_helpers import (
    DISPUTE_WINDOW,
    ETH_DEPOSIT,
    ETHER,
    HOST,
    HOST_NATIVE_PRICE,
    OTHER,
    USER,
    ZERO,
    Chain,
    job_id_of,
    prove,
    settlement,
)

pytestmark = pytest.mark.usefixtures("registered_host")

NONE, COMPLETE, WITHDRAW_NATIVE, TIMEOUT = 0, 1, 2, 3


@pytest.fixture
def attacker(chain: Chain) -> Any:
    return chain.deploy("test/ReentrantDepositor", chain.c["JobMarketplace"].address)


def _via(chain: Chain, attacker: Any, fn: Any, value: int = 0) -> Any:
    """Have the attacker contract make the marketplace call ``fn``."""
    data = fn._encode_transaction_data()
    return chain.send(attacker.functions.execute(data), USER, value=value)


def _open_session(chain: Chain, attacker: Any, timeout: int = 300) -> int:
    fn = chain.market.createSessionJobForModel(
        chain.accounts[HOST], chain.model_id(0), HOST_NATIVE_PRICE, 3600, 1000, timeout
    )
    return job_id_of(chain, _via(chain, attacker, fn, value=ETH_DEPOSIT))


def _guard_error(chain: Chain) -> bytes:
    return bytes(chain.w3.keccak(text="ReentrancyGuardReentrantCall()")[:4])


def _assert_blocked(chain: Chain, attacker: Any) -> None:
    a = attacker.functions
    assert a.attempts().call() == 1
    assert a.lastAttemptSucceeded().call() is False
    assert a.lastRevertData().call() == _guard_error(chain)


def test_reentering_complete_from_the_refund_fails(chain: Chain, attacker: Any) -> None:
    job = _open_session(chain, attacker)
    assert chain.session(job)["depositor"] == attacker.address
    prove(chain, job, 4321)
    chain.send(attacker.functions.configure(COMPLETE, job, 0, False), USER)

    receipt = _via(chain, attacker, chain.market.completeSessionJob(job, "c"))

    _assert_blocked(chain, attacker)
    host_payment, fee, net, refund = settlement(4321, HOST_NATIVE_PRICE, ETH_DEPOSIT)
    assert attacker.functions.received().call() == refund
    assert chain.eth(attacker.address) == refund
    assert len(chain.events(receipt, "JobMarketplace", "SessionCompleted")) == 1
    s = chain.session(job)
    assert (s["status"], s["withdrawnByHost"], s["refundedToUser"]) == (1, host_payment, refund)
    earnings = chain.c["HostEarnings"].functions
    assert earnings.getBalance(chain.accounts[HOST], ZERO).call() == net
    assert chain.market.accumulatedTreasuryNative().call() == fee
    assert chain.eth(chain.c["JobMarketplace"].address) == fee


def test_reentering_withdraw_native_from_the_refund_fails(chain: Chain, attacker: Any) -> None:
    _via(chain, attacker, chain.market.depositNative(), value=ETHER)
    job = _open_session(chain, attacker)
    prove(chain, job, 1000)
    chain.send(attacker.functions.configure(WITHDRAW_NATIVE, job, ETHER, False), USER)
    chain.advance(DISPUTE_WINDOW)

    chain.send(chain.market.completeSessionJob(job, "c"), HOST)  # the host settles

    _assert_blocked(chain, attacker)
    _, fee, _, refund = settlement(1000, HOST_NATIVE_PRICE, ETH_DEPOSIT)
    assert chain.eth(attacker.address) == refund
    assert chain.market.getDepositBalance(attacker.address, ZERO).call() == ETHER
    assert chain.eth(chain.c["JobMarketplace"].address) == ETHER + fee


def test_reentering_timeout_from_the_refund_fails(chain: Chain, attacker: Any) -> None:
    job = _open_session(chain, attacker, timeout=60)
    second = _open_session(chain, attacker, timeout=60)
    chain.send(attacker.functions.configure(TIMEOUT, second, 0, False), USER)
    chain.advance(61)

    chain.send(chain.market.triggerSessionTimeout(job), OTHER)

    _assert_blocked(chain, attacker)
    assert chain.session(job)["status"] == 2
    assert chain.session(second)["status"] == 0  # the nested timeout did not happen
    assert chain.eth(attacker.address) == ETH_DEPOSIT
    chain.send(attacker.functions.configure(NONE, 0, 0, False), USER)
    chain.send(chain.market.triggerSessionTimeout(second), OTHER)
    assert chain.eth(attacker.address) == 2 * ETH_DEPOSIT


def test_a_depositor_rejecting_the_refund_cannot_block_settlement(
    chain: Chain, attacker: Any
) -> None:
    job = _open_session(chain, attacker)
    prove(chain, job, 2000)
    chain.send(attacker.functions.configure(NONE, 0, 0, True), USER)
    chain.advance(DISPUTE_WINDOW)

    receipt = chain.send(chain.market.completeSessionJob(job, "c"), HOST)

    _, _, net, refund = settlement(2000, HOST_NATIVE_PRICE, ETH_DEPOSIT)
    credited = chain.event(receipt, "JobMarketplace", "RefundCreditedToDeposit")
    assert dict(credited) == {
        "jobId": job,
        "depositor": attacker.address,
        "amount": refund,
        "token": ZERO,
    }
    assert chain.eth(attacker.address) == 0
    assert chain.market.getDepositBalance(attacker.address, ZERO).call() == refund
    assert chain.c["HostEarnings"].functions.getBalance(chain.accounts[HOST], ZERO).call() == net

    # once it accepts ETH again it can pull the refund from its deposit balance
    chain.send(attacker.functions.configure(NONE, 0, 0, False), USER)
    _via(chain, attacker, chain.market.withdrawNative(refund))
    assert chain.eth(attacker.address) == refund
    assert chain.market.getDepositBalance(attacker.address, ZERO).call() == 0
