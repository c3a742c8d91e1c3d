"""Fixtures for tests against the devnet: authenticated SDKs and a registered host."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from fabstir_sdk import FabstirSDK
from fabstir_sdk.chain.rpc import JsonRpcClient

#: The worked example's price: 2000 base units per 1000 tokens (2 micro-USDC per token).
USDC_PRICE = 2000
#: 1 gwei per token, in the contract's unit (wei per 1000 tokens).
ETH_PRICE = 10**12
USER, HOST, OTHER = 1, 2, 3

SdkFactory = Callable[[int], Awaitable[FabstirSDK]]


@pytest.fixture
async def sdk_for(devnet) -> AsyncIterator[SdkFactory]:
    """``await sdk_for(i)``: an SDK authenticated as devnet account ``i``."""
    made: list[FabstirSDK] = []

    async def make(index: int) -> FabstirSDK:
        sdk = FabstirSDK(devnet.sdk_config())
        made.append(sdk)
        await sdk.authenticate(devnet.accounts[index].private_key)
        return sdk

    yield make
    for sdk in made:
        await sdk.aclose()


@pytest.fixture
async def user(sdk_for) -> FabstirSDK:
    return await sdk_for(USER)


@pytest.fixture
async def host(devnet, sdk_for) -> FabstirSDK:
    """Account 2 registered as a host serving the devnet's first two models."""
    sdk = await sdk_for(HOST)
    await sdk.get_host_manager().register_host(
        "http://127.0.0.1:8080",
        devnet.models[:2],
        min_price_per_token_native=ETH_PRICE,
        min_price_per_token_stable=USDC_PRICE,
        metadata={"publicKey": "02" + "11" * 32},
    )
    return sdk


async def nonce(devnet, index: int) -> int:
    """The account's pending nonce: unchanged means no transaction was sent.

    Through our own JSON-RPC client: web3's AsyncHTTPProvider starts a ThreadPoolExecutor
    that its ``disconnect()`` does not shut down (its threads end only when a garbage
    collection finds it, maybe in the middle of a later test that counts threads)."""
    rpc = JsonRpcClient(devnet.rpc_url)
    try:
        return int(
            await rpc.call("eth_getTransactionCount", devnet.accounts[index].address, "pending"),
            16,
        )
    finally:
        await rpc.aclose()
