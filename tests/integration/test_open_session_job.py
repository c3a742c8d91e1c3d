"""PaymentManager.open_session_job, the one payment path, on the devnet: checks before any
transaction (a short balance before any approval), the allowance raised once to the budget
and never lowered, and the job as the receipt states it, equal to what the chain holds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from eth_account import Account
from websockets.asyncio.server import ServerConnection, serve

from fabstir_sdk import (
    FabstirSDK,
    InsufficientAllowanceError,
    InsufficientBalanceError,
    SessionState,
)
from fabstir_sdk.chain.abi import Contract
from fabstir_sdk.chain.rpc import JsonRpcClient
from fabstir_sdk.chain.transport import HttpTransport

from .conftest import ETH_PRICE, HOST, USDC_PRICE, USER

BUDGET = 100_000_000  # the default approval_budget, "100" USDC


async def allowance(devnet, pm, owner: str) -> int:
    return await pm.get_allowance(devnet.addresses.usdc_token, owner)


async def pending_nonce(devnet, address: str) -> int:
    rpc = JsonRpcClient(devnet.rpc_url)
    try:
        return int(await rpc.call("eth_getTransactionCount", address, "pending"), 16)
    finally:
        await rpc.aclose()


@pytest.fixture
async def no_usdc(devnet):
    """An SDK for a fresh account holding 1 ETH and no USDC."""
    account = Account.create()
    rpc = JsonRpcClient(devnet.rpc_url)
    await rpc.call("anvil_setBalance", account.address, hex(10**18))
    await rpc.aclose()
    async with FabstirSDK(devnet.sdk_config()) as sdk:
        await sdk.authenticate(account.key)
        yield sdk


@pytest.fixture
async def answering_host(devnet, sdk_for) -> AsyncIterator[str]:
    """Account HOST registered with the URL of a WebSocket server that completes handshakes
    (and says nothing): create_session dials the host before it pays, so the payment's own
    checks are reached only with a host that answers."""

    async def hold(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with serve(hold, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        sdk = await sdk_for(HOST)
        await sdk.get_host_manager().register_host(
            f"http://127.0.0.1:{port}",
            devnet.models[:2],
            min_price_per_token_native=ETH_PRICE,
            min_price_per_token_stable=USDC_PRICE,
            metadata={"publicKey": "02" + "11" * 32},
        )
        yield devnet.accounts[HOST].address


async def test_a_usdc_session_without_usdc_sends_nothing(devnet, answering_host, no_usdc):
    """Before: create_session approved first (gas spent, nonce moved), then refused."""
    me = no_usdc.get_auth_manager().get_user_address()
    sm = await no_usdc.get_session_manager()
    with pytest.raises(InsufficientBalanceError) as raised:
        await sm.create_session(model=devnet.models[0], host=answering_host, deposit="1")
    assert (raised.value.needed, raised.value.available) == (1_000_000, 0)
    assert await pending_nonce(devnet, me) == 0
    pm = no_usdc.get_payment_manager()
    assert await pm.get_eth_balance() == 10**18
    assert await allowance(devnet, pm, me) == 0


@pytest.mark.parametrize(
    ("token", "funding", "amount"),
    [
        (None, "wallet", "0.005"),
        ("usdc", "wallet", "1"),
        (None, "deposit", "0.005"),
        ("usdc", "deposit", "1"),
    ],
)
async def test_the_job_from_the_receipt_is_the_job_on_chain(
    devnet, user, host, token, funding, amount
):
    pm = user.get_payment_manager()
    usdc = devnet.addresses.usdc_token
    address = None if token is None else usdc
    if funding == "deposit":
        if token is not None:
            await pm.approve_usdc(usdc, amount)
        await pm.deposit(amount, address)
    created = await pm.open_session_job(
        devnet.accounts[HOST].address,
        amount,
        ETH_PRICE if token is None else USDC_PRICE,
        model=devnet.models[0],
        token=address,
        funding=funding,
        duration=600,
        proof_interval=200,
        proof_timeout_window=120,
    )
    on_chain = await pm.get_session_job(created.job_id)
    assert created.job == on_chain
    assert on_chain.status is SessionState.ACTIVE
    assert on_chain.deposit == (5 * 10**15 if token is None else 1_000_000)


async def test_a_short_allowance_is_raised_once_to_the_budget(devnet, user, host):
    """Five sessions at once with no allowance: one approval, then five creations."""
    pm, me = user.get_payment_manager(), user.get_auth_manager().get_user_address()
    usdc = devnet.addresses.usdc_token
    before_nonce, before_usdc = await pending_nonce(devnet, me), await pm.get_token_balance(usdc)
    assert await allowance(devnet, pm, me) == 0

    def open_one():
        return pm.open_session_job(
            devnet.accounts[HOST].address, "1", USDC_PRICE, model=devnet.models[0], token=usdc
        )

    created = await asyncio.gather(*(open_one() for _ in range(5)))
    assert len({c.job_id for c in created}) == 5
    assert await pending_nonce(devnet, me) == before_nonce + 6
    assert await allowance(devnet, pm, me) == BUDGET - 5_000_000
    assert await pm.get_token_balance(usdc) == before_usdc - 5_000_000
    # the next session needs one transaction
    await open_one()
    assert await pending_nonce(devnet, me) == before_nonce + 7
    assert await allowance(devnet, pm, me) == BUDGET - 6_000_000


async def test_a_larger_allowance_is_never_lowered(devnet, user, host):
    pm, me = user.get_payment_manager(), user.get_auth_manager().get_user_address()
    usdc = devnet.addresses.usdc_token
    await pm.approve_usdc(usdc, "1000")
    before = await pending_nonce(devnet, me)
    await pm.open_session_job(
        devnet.accounts[HOST].address, "2", USDC_PRICE, model=devnet.models[0], token=usdc
    )
    assert await pending_nonce(devnet, me) == before + 1
    assert await allowance(devnet, pm, me) == 998_000_000


async def test_a_deposit_above_the_budget_approves_the_deposit(devnet, sdk_for, host):
    config = devnet.sdk_config(approval_budget="0.5")
    async with FabstirSDK(config) as sdk:
        await sdk.authenticate(devnet.accounts[USER].private_key)
        pm, me = sdk.get_payment_manager(), sdk.get_auth_manager().get_user_address()
        usdc = devnet.addresses.usdc_token
        await pm.open_session_job(
            devnet.accounts[HOST].address, "2", USDC_PRICE, model=devnet.models[0], token=usdc
        )
        assert await allowance(devnet, pm, me) == 0  # approved exactly 2, all of it spent


async def test_approve_false_refuses_a_short_allowance_before_sending(devnet, user, host):
    pm, me = user.get_payment_manager(), user.get_auth_manager().get_user_address()
    before = await pending_nonce(devnet, me)
    with pytest.raises(InsufficientAllowanceError) as raised:
        await pm.open_session_job(
            devnet.accounts[HOST].address,
            "1",
            USDC_PRICE,
            model=devnet.models[0],
            token=devnet.addresses.usdc_token,
            approve=False,
        )
    assert (raised.value.needed, raised.value.allowance) == (1_000_000, 0)
    assert await pending_nonce(devnet, me) == before


class Counting(HttpTransport):
    """HTTP to the devnet, counting each JSON-RPC method (and eth_call by selector)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.calls: list[str] = []

    async def handle(self, payload):
        for request in payload if isinstance(payload, list) else [payload]:
            name = request["method"]
            if name == "eth_call":
                name += ":" + request["params"][0]["data"][:10]
            self.calls.append(name)
        return await super().handle(payload)


async def test_every_chain_client_uses_the_injected_transport(devnet, host):
    transport = Counting(devnet.rpc_url)
    async with FabstirSDK(devnet.sdk_config(), transport=transport) as sdk:
        await sdk.authenticate(devnet.accounts[USER].private_key)
        pm = sdk.get_payment_manager()
        await pm.approve_usdc(devnet.addresses.usdc_token, "1")
        transport.calls.clear()
        created = await pm.open_session_job(
            devnet.accounts[HOST].address,
            "1",
            USDC_PRICE,
            model=devnet.models[0],
            token=devnet.addresses.usdc_token,
        )
    assert created.job.deposit == 1_000_000
    mp = Contract("JobMarketplace", devnet.addresses.job_marketplace)
    read_back = "eth_call:0x" + mp.call("sessionJobs", 1).data[:4].hex()
    assert read_back not in transport.calls
    assert transport.calls.count("eth_sendRawTransaction") == 1
    assert transport.calls.count("eth_estimateGas") == 1
