"""HostManager, ModelManager and TreasuryManager against the devnet."""

from __future__ import annotations

import pytest

from fabstir_sdk import (
    FabstirSDK,
    HostNotActiveError,
    InsufficientBalanceError,
    ModelInfo,
    NoEarningsError,
    NotFoundError,
    ValidationError,
)
from fabstir_sdk.chain.model_id import model_id

from .conftest import ETH_PRICE, HOST, OTHER, USDC_PRICE, nonce


async def test_host_info_after_registration(devnet, host):
    info = await host.get_host_manager().get_host_info(devnet.accounts[HOST].address)
    assert info.is_active
    assert info.address == devnet.accounts[HOST].address
    assert info.api_url == "http://127.0.0.1:8080"
    assert info.models == [model_id(m) for m in devnet.models[:2]]
    assert info.stake == 1000 * 10**18
    assert (info.min_price_per_token_native, info.min_price_per_token_stable) == (
        ETH_PRICE,
        USDC_PRICE,
    )
    assert info.public_key == "02" + "11" * 32
    assert info.metadata == {"publicKey": info.public_key}


async def test_registration_stakes_fab_and_unregistering_returns_it(devnet, sdk_for):
    sdk = await sdk_for(OTHER)
    fab = devnet.addresses.fab_token
    pm, hm = sdk.get_payment_manager(), sdk.get_host_manager()
    before = await pm.get_token_balance(fab)
    await hm.register_host(
        "http://127.0.0.1:9000",
        [devnet.models[0]],
        min_price_per_token_native=ETH_PRICE,
        min_price_per_token_stable=USDC_PRICE,
    )
    assert await pm.get_token_balance(fab) == before - 1000 * 10**18
    await hm.unregister_host()
    assert await pm.get_token_balance(fab) == before
    assert not (await hm.get_host_info(devnet.accounts[OTHER].address)).is_active
    with pytest.raises(HostNotActiveError):
        await hm.unregister_host()


async def test_update_url_metadata_and_pricing(devnet, host, user):
    hm = host.get_host_manager()
    await hm.update_api_url("http://127.0.0.1:8081")
    await hm.update_metadata({"publicKey": "03" + "22" * 32, "region": "local"})
    await hm.set_model_pricing(devnet.models[0], devnet.addresses.usdc_token, USDC_PRICE * 3)
    info = await hm.get_host_info(devnet.accounts[HOST].address)
    assert info.api_url == "http://127.0.0.1:8081"
    assert info.metadata["region"] == "local" and info.public_key == "03" + "22" * 32
    # The per-model price now binds: the old price is refused before sending.
    from fabstir_sdk import PriceBelowMinimumError

    pm = user.get_payment_manager()
    await pm.approve_usdc(devnet.addresses.usdc_token, "1")
    with pytest.raises(PriceBelowMinimumError) as info_err:
        await pm.create_usdc_session_job(
            devnet.accounts[HOST].address,
            devnet.addresses.usdc_token,
            "1",
            USDC_PRICE,
            3600,
            1000,
            model=devnet.models[0],
        )
    assert info_err.value.minimum == USDC_PRICE * 3


async def test_host_manager_bad_input_sends_nothing(devnet, host):
    hm = host.get_host_manager()
    before = await nonce(devnet, HOST)
    for call in (
        lambda: hm.update_api_url(""),
        lambda: hm.set_model_pricing(devnet.models[0], None, 0),
        lambda: hm.submit_proof_of_work(1, 99, b"\0" * 32, "", ""),
        lambda: hm.submit_proof_of_work(1, 100, "0x1234", "", ""),
        lambda: hm.register_host(
            "http://x", [], min_price_per_token_native=1, min_price_per_token_stable=1
        ),
    ):
        with pytest.raises(ValidationError):
            await call()
    with pytest.raises(InsufficientBalanceError):
        await hm.withdraw_earnings()
    assert await nonce(devnet, HOST) == before


async def test_models(devnet, user):
    mm = user.get_model_manager()
    repo, file = devnet.models[0].split(":")
    mid = mm.get_model_id(repo, file)
    assert mid == model_id(devnet.models[0])
    assert await mm.is_model_approved(devnet.models[0])
    assert not await mm.is_model_approved("nobody/none:x.gguf")
    info = await mm.get_model(devnet.models[0])
    assert info == ModelInfo(model_id=mid, repo=repo, file=file, sha256=info.sha256, approved=True)
    listed = await mm.list_models()
    assert [m.model_id for m in listed] == [model_id(m) for m in devnet.models]
    with pytest.raises(NotFoundError):
        await mm.get_model("nobody/none:x.gguf")


async def test_only_the_treasury_withdraws_fees(devnet, user):
    with pytest.raises(ValidationError, match="only the treasury"):
        await user.get_treasury_manager().withdraw_fees()


async def test_nothing_to_withdraw_is_said_in_words(devnet):
    async with FabstirSDK(devnet.sdk_config()) as sdk:
        await sdk.authenticate(devnet.accounts[0].private_key)  # the devnet's treasury
        tm = sdk.get_treasury_manager()
        fab = devnet.deployment.addresses.fab_token
        assert await tm.get_accumulated_fees(fab) == 0
        with pytest.raises(NoEarningsError) as info:
            await tm.withdraw_fees(fab)
    assert str(info.value) == f"the treasury holds no {fab} fees to withdraw"
