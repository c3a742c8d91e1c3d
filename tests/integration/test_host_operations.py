"""A host's whole life through HostManager on the devnet: register, update, price, earn,
withdraw, unregister; every contract refusal as a typed error before any transaction."""

from __future__ import annotations

import os

import pytest

from fabstir_sdk import (
    DuplicateModelError,
    HostAlreadyRegisteredError,
    HostNotActiveError,
    HostPriceOutOfRangeError,
    ModelNotApprovedError,
    ModelNotSupportedError,
    NoEarningsError,
)

from .conftest import ETH_PRICE, USDC_PRICE, USER, nonce

OPERATOR = 5
STAKE = 1000 * 10**18
UNAPPROVED = "0x" + "ab" * 32


async def test_host_life_with_exact_balances(devnet, sdk_for):
    usdc, fab = devnet.addresses.usdc_token, devnet.addresses.fab_token
    sdk, user = await sdk_for(OPERATOR), await sdk_for(USER)
    hm, pm, upm = sdk.get_host_manager(), sdk.get_payment_manager(), user.get_payment_manager()
    address = devnet.accounts[OPERATOR].address
    first, second = devnet.models[0], devnet.models[1]
    fab_before = await pm.get_token_balance(fab)

    await hm.register_host(
        "http://127.0.0.1:1/a",
        [first],
        min_price_per_token_native=ETH_PRICE,
        min_price_per_token_stable=USDC_PRICE,
        metadata={"publicKey": "02" + "11" * 32},
    )
    assert await pm.get_token_balance(fab) == fab_before - STAKE
    info = await hm.get_host_info(address)
    assert (info.is_active, info.stake, info.api_url) == (True, STAKE, "http://127.0.0.1:1/a")

    await hm.update_api_url("http://127.0.0.1:2/b")
    await hm.update_metadata({"publicKey": "02" + "22" * 32, "region": "eu"})
    await hm.update_supported_models([first, second])
    info = await hm.get_host_info(address)
    assert info.api_url == "http://127.0.0.1:2/b"
    assert info.metadata == {"publicKey": "02" + "22" * 32, "region": "eu"}
    assert info.public_key == "02" + "22" * 32
    assert len(info.models) == 2

    await hm.set_model_pricing(second, usdc, 5000)
    await hm.set_model_pricing(second, None, 2 * ETH_PRICE)
    assert await hm.get_model_pricing(second, usdc) == 5000
    assert await hm.get_model_pricing(second) == 2 * ETH_PRICE
    assert await hm.get_model_pricing(first, usdc) == USDC_PRICE
    await hm.clear_model_pricing(second, usdc)
    assert await hm.get_model_pricing(second, usdc) == USDC_PRICE
    assert await hm.get_model_pricing(second) == 2 * ETH_PRICE

    # earn: a user's session on the second model at its ETH price, 1000 tokens proven
    created = await upm.create_eth_session_job(
        address, "0.001", 2 * ETH_PRICE, 3600, 1000, model=second
    )
    await devnet.advance_time(10)
    await hm.submit_proof_of_work(created.job_id, 1000, os.urandom(32), "p", "d")
    settlement = await upm.complete_session_job(created.job_id, "cid")
    assert settlement.host_payment == 1000 * 2 * ETH_PRICE // 1000
    assert await hm.get_host_earnings() == settlement.host_net
    eth_before = await pm.get_eth_balance()
    tx = await hm.withdraw_earnings()
    assert await pm.get_eth_balance() == eth_before + settlement.host_net - await _gas(devnet, tx)
    assert await hm.get_host_earnings() == 0
    with pytest.raises(NoEarningsError):
        await hm.withdraw_earnings()

    await hm.unregister_host()
    assert await pm.get_token_balance(fab) == fab_before  # the whole stake came back
    assert (await hm.get_host_info(address)).is_active is False
    with pytest.raises(HostNotActiveError):
        await hm.unregister_host()


async def test_contract_refusals_are_typed_and_send_nothing(devnet, sdk_for):
    sdk = await sdk_for(OPERATOR)
    hm = sdk.get_host_manager()
    first, second = devnet.models[0], devnet.models[1]
    before = await nonce(devnet, OPERATOR)
    with pytest.raises(ModelNotApprovedError):
        await hm.register_host(
            "http://x",
            [UNAPPROVED],
            min_price_per_token_native=ETH_PRICE,
            min_price_per_token_stable=USDC_PRICE,
        )
    with pytest.raises(HostNotActiveError):
        await hm.update_api_url("http://y")
    assert await nonce(devnet, OPERATOR) == before
    await hm.register_host(
        "http://x",
        [first],
        min_price_per_token_native=ETH_PRICE,
        min_price_per_token_stable=USDC_PRICE,
    )
    before = await nonce(devnet, OPERATOR)
    refusals = [
        (
            HostAlreadyRegisteredError,
            lambda: hm.register_host(
                "http://x",
                [first],
                min_price_per_token_native=ETH_PRICE,
                min_price_per_token_stable=USDC_PRICE,
            ),
        ),
        (ModelNotSupportedError, lambda: hm.set_model_pricing(second, None, ETH_PRICE)),
        (HostPriceOutOfRangeError, lambda: hm.set_model_pricing(first, None, 1)),
        (ModelNotApprovedError, lambda: hm.update_supported_models([UNAPPROVED])),
        (DuplicateModelError, lambda: hm.update_supported_models([first, first])),
        (NoEarningsError, lambda: hm.withdraw_earnings(devnet.addresses.usdc_token)),
    ]
    for error, call in refusals:
        with pytest.raises(error):
            await call()
    assert await nonce(devnet, OPERATOR) == before


async def _gas(devnet, tx: str) -> int:
    from .test_payments import gas_paid

    return await gas_paid(devnet, tx)
