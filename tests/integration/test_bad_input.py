"""Bad input is refused with a typed error before any transaction: the nonce never moves."""

from __future__ import annotations

from decimal import Decimal

import pytest

from fabstir_sdk import (
    AuthError,
    AuthRequiredError,
    ChainMismatchError,
    DepositOutOfRangeError,
    FabstirSDK,
    FloatAmountError,
    HostNotActiveError,
    InsufficientAllowanceError,
    InsufficientBalanceError,
    InvalidAddressError,
    InvalidAmountError,
    ModelNotApprovedError,
    PriceBelowMinimumError,
    ProofIntervalError,
    ProofTimeoutWindowError,
    SessionNotActiveError,
    SessionNotFoundError,
    ValidationError,
)

from .conftest import ETH_PRICE, HOST, OTHER, USDC_PRICE, USER, nonce

UNKNOWN_MODEL = "nobody/unknown:model.gguf"


async def refused(devnet, error, call, index=USER):
    """Run ``call`` expecting ``error`` and prove no transaction left account ``index``."""
    before = await nonce(devnet, index)
    with pytest.raises(error) as info:
        await call()
    assert await nonce(devnet, index) == before
    return info.value


def eth_job(devnet, pm, **overrides):
    args = {
        "host": devnet.accounts[HOST].address,
        "amount": "0.005",
        "price_per_token": ETH_PRICE,
        "duration": 3600,
        "proof_interval": 1000,
        "model": devnet.models[0],
    }
    args.update(overrides)
    return lambda: pm.create_eth_session_job(**args)


def usdc_job(devnet, pm, **overrides):
    args = {
        "host": devnet.accounts[HOST].address,
        "usdc_address": devnet.addresses.usdc_token,
        "amount": "1",
        "price_per_token": USDC_PRICE,
        "duration": 3600,
        "proof_interval": 1000,
        "model": devnet.models[0],
    }
    args.update(overrides)
    return lambda: pm.create_usdc_session_job(**args)


async def test_float_amount(devnet, user, host):
    pm = user.get_payment_manager()
    err = await refused(devnet, FloatAmountError, eth_job(devnet, pm, amount=0.005))
    assert isinstance(err, TypeError)


@pytest.mark.parametrize("amount", ["0", "-0.005", 0, -1, Decimal("-1"), "1e-19"])
async def test_zero_negative_or_too_fine_amount(devnet, user, host, amount):
    await refused(
        devnet, InvalidAmountError, eth_job(devnet, user.get_payment_manager(), amount=amount)
    )


@pytest.mark.parametrize(
    "address",
    ["0x1234", "not an address", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", None],
)
async def test_malformed_or_bad_checksum_host(devnet, user, address):
    await refused(
        devnet, InvalidAddressError, eth_job(devnet, user.get_payment_manager(), host=address)
    )


async def test_deposit_below_minimum(devnet, user, host):
    # 0.00005 ETH < MIN_DEPOSIT 0.0001 ETH (proof interval kept within the tiny deposit)
    job = eth_job(devnet, user.get_payment_manager(), amount="0.00005", proof_interval=100)
    err = await refused(devnet, DepositOutOfRangeError, job)
    assert (err.amount, err.minimum) == (5 * 10**13, 10**14)


async def test_usdc_deposit_below_minimum_and_above_maximum(devnet, user, host):
    pm = user.get_payment_manager()
    await pm.approve_usdc(devnet.addresses.usdc_token, "2000000")
    await refused(devnet, DepositOutOfRangeError, usdc_job(devnet, pm, amount="0.4"))
    await refused(devnet, DepositOutOfRangeError, usdc_job(devnet, pm, amount="1000000.000001"))


async def test_eth_deposit_above_maximum(devnet, user, host):
    await refused(
        devnet, DepositOutOfRangeError, eth_job(devnet, user.get_payment_manager(), amount="1000.1")
    )


async def test_price_below_host_minimum(devnet, user, host):
    err = await refused(
        devnet,
        PriceBelowMinimumError,
        eth_job(devnet, user.get_payment_manager(), price_per_token=ETH_PRICE - 1),
    )
    assert err.minimum == ETH_PRICE


@pytest.mark.parametrize("interval", [99, 0, -5])
async def test_proof_interval_below_100(devnet, user, host, interval):
    await refused(
        devnet,
        ValidationError,
        eth_job(devnet, user.get_payment_manager(), proof_interval=interval),
    )


async def test_proof_interval_above_max_tokens(devnet, user, host):
    # 0.005 ETH at 1e12 per 1000 tokens pays for 5,000,000 tokens.
    job = eth_job(devnet, user.get_payment_manager(), proof_interval=5_000_001)
    await refused(devnet, ProofIntervalError, job)


@pytest.mark.parametrize("window", [59, 3601, 0])
async def test_proof_timeout_window_out_of_range(devnet, user, host, window):
    job = eth_job(devnet, user.get_payment_manager(), proof_timeout_window=window)
    await refused(devnet, ProofTimeoutWindowError, job)


async def test_unknown_model(devnet, user, host):
    await refused(
        devnet,
        ModelNotApprovedError,
        eth_job(devnet, user.get_payment_manager(), model=UNKNOWN_MODEL),
    )


async def test_model_the_host_does_not_serve(devnet, user, host):
    # devnet.models[2] is approved but the fixture host serves only the first two.
    job = eth_job(devnet, user.get_payment_manager(), model=devnet.models[2])
    await refused(devnet, ModelNotApprovedError, job)


async def test_host_not_registered(devnet, user):
    job = eth_job(devnet, user.get_payment_manager(), host=devnet.accounts[OTHER].address)
    await refused(devnet, HostNotActiveError, job)


async def test_host_unregistered_is_inactive(devnet, user, host):
    await host.get_host_manager().unregister_host()
    await refused(devnet, HostNotActiveError, eth_job(devnet, user.get_payment_manager()))


async def test_chain_id_mismatch(devnet):
    sdk = FabstirSDK(devnet.sdk_config(chain_id=84532))
    try:
        with pytest.raises(ChainMismatchError) as info:
            await sdk.authenticate(devnet.accounts[USER].private_key)
        assert (info.value.expected, info.value.actual) == (84532, devnet.chain_id)
        assert not sdk.get_auth_manager().is_authenticated()
    finally:
        await sdk.aclose()


async def test_insufficient_eth_balance(devnet, user, host):
    # Anvil accounts hold 10,000 ETH; the contract's cap is 1000 ETH, so drain below a 900 ETH job.
    balance = await user.get_payment_manager().get_eth_balance()
    job = eth_job(devnet, user.get_payment_manager(), amount=str(balance // 10**18 + 1))
    await refused(devnet, (InsufficientBalanceError, DepositOutOfRangeError), job)


async def test_insufficient_usdc_balance(devnet, sdk_for, host):
    # Account 9 parks all but 1 USDC in the marketplace, then tries to pay 5 from its wallet.
    poor = await sdk_for(9)
    pm = poor.get_payment_manager()
    usdc = devnet.addresses.usdc_token
    balance = await pm.get_token_balance(usdc)
    await pm.approve_usdc(usdc, str(balance // 10**6))
    await pm.deposit(str(balance // 10**6 - 1), usdc)
    assert await pm.get_token_balance(usdc) == 1_000_000
    await pm.approve_usdc(usdc, "5")
    err = await refused(devnet, InsufficientBalanceError, usdc_job(devnet, pm, amount="5"), index=9)
    assert err.needed == 5_000_000


async def test_insufficient_allowance(devnet, user, host):
    pm = user.get_payment_manager()
    await pm.approve_usdc(devnet.addresses.usdc_token, "0.5")
    err = await refused(devnet, InsufficientAllowanceError, usdc_job(devnet, pm, amount="1"))
    assert (err.needed, err.allowance) == (1_000_000, 500_000)


async def test_complete_inactive_or_missing_session(devnet, user, host):
    pm = user.get_payment_manager()
    created = await pm.create_eth_session_job(
        devnet.accounts[HOST].address, "0.005", ETH_PRICE, 3600, 100, model=devnet.models[0]
    )
    await pm.complete_session_job(created.job_id)
    await refused(devnet, SessionNotActiveError, lambda: pm.complete_session_job(created.job_id))
    await refused(devnet, SessionNotActiveError, lambda: pm.trigger_session_timeout(created.job_id))
    await refused(devnet, SessionNotFoundError, lambda: pm.complete_session_job(10_000))


async def test_stranger_cannot_complete(devnet, user, host, sdk_for):
    created = await user.get_payment_manager().create_eth_session_job(
        devnet.accounts[HOST].address, "0.005", ETH_PRICE, 3600, 100, model=devnet.models[0]
    )
    stranger = await sdk_for(OTHER)
    await refused(
        devnet,
        ValidationError,
        lambda: stranger.get_payment_manager().complete_session_job(created.job_id),
        index=OTHER,
    )


async def test_writes_need_authentication(devnet):
    async with FabstirSDK(devnet.sdk_config()) as sdk:
        with pytest.raises(AuthRequiredError):
            await eth_job(devnet, sdk.get_payment_manager())()
        with pytest.raises(AuthRequiredError):
            await sdk.get_payment_manager().get_eth_balance()
        # Reads of explicit addresses need no wallet.
        assert await sdk.get_payment_manager().get_eth_balance(devnet.accounts[USER].address) > 0


@pytest.mark.parametrize("key", ["0x1234", "zz" * 32, "00" * 32, b"short", 42])
async def test_bad_private_key_never_echoed(devnet, key):
    async with FabstirSDK(devnet.sdk_config()) as sdk:
        with pytest.raises(AuthError) as info:
            await sdk.authenticate(key)
        if isinstance(key, str) and len(key) > 8:
            assert key not in str(info.value)
