"""The write path: custom errors, reverts found only at mining, receipt deadlines, lifecycle."""

from __future__ import annotations

import asyncio

import pytest

from fabstir_sdk import (
    FabstirError,
    FabstirSDK,
    InsufficientAllowanceError,
    SessionNotActiveError,
    TransactionDroppedError,
    TransactionTimeoutError,
)
from fabstir_sdk.chain.rpc import JsonRpcClient
from fabstir_sdk.devnet import Devnet

from .conftest import ETH_PRICE, HOST, OTHER, USER, nonce
from .rpc_proxy import RpcProxy


async def test_custom_error_decoded_before_sending(devnet, user):
    """An OpenZeppelin custom error from the token reads as our typed error; nothing is sent."""
    ctx = user._ctx
    usdc = ctx.erc20(devnet.addresses.usdc_token)
    call = usdc.call(
        "transferFrom", devnet.accounts[OTHER].address, devnet.accounts[USER].address, 7
    )
    before = await nonce(devnet, USER)
    with pytest.raises(InsufficientAllowanceError) as info:
        await ctx.require_sender().send(call)
    assert (info.value.needed, info.value.allowance) == (7, 0)
    assert await nonce(devnet, USER) == before


async def test_sdk_lifecycle():
    config_net = await Devnet.start()
    try:
        sdk = FabstirSDK(config_net.sdk_config())
        await sdk.authenticate(config_net.accounts[USER].private_key)
        await sdk.aclose()
        await sdk.aclose()  # idempotent
        with pytest.raises(FabstirError, match="closed"):
            sdk.get_payment_manager()
        with pytest.raises(FabstirError, match="closed"):
            async with sdk:
                pass
    finally:
        await config_net.stop()


async def test_revert_found_at_mining_is_decoded_and_nonces_stay_in_order(devnet, host):
    """Two completions of one job land in one block: both pass the checks and the estimate,
    the second reverts when mined and is reported with its reason."""
    proxy = await RpcProxy(devnet.rpc_url).start()
    rpc = JsonRpcClient(devnet.rpc_url)
    try:
        async with FabstirSDK(devnet.sdk_config(rpc_url=proxy.url)) as user:
            await user.authenticate(devnet.accounts[USER].private_key)
            pm = user.get_payment_manager()
            job = await pm.create_eth_session_job(
                devnet.accounts[HOST].address, "0.001", ETH_PRICE, 600, 100, model=devnet.models[0]
            )
            before = await nonce(devnet, USER)
            # Both estimates run before either transaction reaches the node, and both
            # transactions wait in the mempool for one block.
            proxy.hold("eth_sendRawTransaction", until="eth_estimateGas", seen=2)
            await rpc.call("evm_setAutomine", False)
            both = asyncio.gather(
                pm.complete_session_job(job.job_id),
                pm.complete_session_job(job.job_id),
                return_exceptions=True,
            )
            for _ in range(6000):  # until both are in the mempool (60 s at most: a hang)
                if await nonce(devnet, USER) == before + 2:
                    break
                await asyncio.sleep(0.01)
            await rpc.call("evm_mine")
            results = await both
            await rpc.call("evm_setAutomine", True)
            errors = [r for r in results if isinstance(r, BaseException)]
            settled = [r for r in results if not isinstance(r, BaseException)]
            assert len(settled) == 1 and settled[0].refund == 10**15
            assert len(errors) == 1 and isinstance(errors[0], SessionNotActiveError)
            assert await nonce(devnet, USER) == before + 2  # both were really sent and mined
            # The allocator is still in step: the next transaction goes through.
            await pm.deposit("0.001")
            assert await pm.get_deposit_balance() == 10**15
    finally:
        await rpc.call("evm_setAutomine", True)
        await rpc.aclose()
        await proxy.stop()


async def test_receipt_deadline_then_recovery():
    async with Devnet.start() as net:
        # nothing is mined until the test mines it: the 0.2 s receipt deadline passes first on
        # any machine (with interval mining a block could land inside those 0.2 s)
        rpc = JsonRpcClient(net.rpc_url)
        await rpc.call("evm_setAutomine", False)
        try:
            async with FabstirSDK(net.sdk_config(tx_timeout=0.2)) as sdk:
                await sdk.authenticate(net.accounts[USER].private_key)
                pm = sdk.get_payment_manager()
                with pytest.raises(TransactionTimeoutError) as info:
                    await pm.approve_usdc(net.addresses.usdc_token, "1")
                assert info.value.tx_hash.startswith("0x") and info.value.timeout == 0.2
            # The transaction was sent: it is mined later, and the next one takes the next nonce.
            await rpc.call("evm_mine")
            receipt = await rpc.call("eth_getTransactionReceipt", info.value.tx_hash)
            assert receipt["status"] == "0x1"
        finally:
            await rpc.call("evm_setAutomine", True)
            await rpc.aclose()
        async with FabstirSDK(net.sdk_config()) as sdk:
            await sdk.authenticate(net.accounts[USER].private_key)
            await sdk.get_payment_manager().approve_usdc(net.addresses.usdc_token, "2")
            assert await nonce(net, USER) == 2


async def _in_mempool(devnet, index: int, count: int) -> None:
    for _ in range(6000):  # 60 s at most: only against a hang
        if await nonce(devnet, index) == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the transaction never reached the mempool")


async def test_dropped_transaction_is_reported_and_the_nonce_reused(devnet, user):
    pm = user.get_payment_manager()
    rpc = JsonRpcClient(devnet.rpc_url)
    start = await nonce(devnet, USER)
    await rpc.call("evm_setAutomine", False)
    try:
        deposit = asyncio.ensure_future(pm.deposit("0.001"))
        await _in_mempool(devnet, USER, start + 1)
        await rpc.call("anvil_dropAllTransactions")
        with pytest.raises(TransactionDroppedError) as info:
            await deposit
        assert info.value.nonce == start
    finally:
        await rpc.call("evm_setAutomine", True)
        await rpc.aclose()
    assert await pm.get_deposit_balance() == 0
    await pm.deposit("0.002")  # resynchronised: the freed nonce is used again
    assert await nonce(devnet, USER) == start + 1
    assert await pm.get_deposit_balance() == 2 * 10**15


async def test_a_transaction_whose_nonce_another_took_is_signed_again(devnet, user):
    """The same key (another process, another wallet) sends another transaction with our
    nonce and a higher fee; it is mined. Ours never ran: it is signed again with the next
    nonce and mined once (before: TransactionReplacedError, the deposit not made)."""
    from eth_account import Account

    pm = user.get_payment_manager()
    rpc = JsonRpcClient(devnet.rpc_url)
    start = await nonce(devnet, USER)
    await rpc.call("evm_setAutomine", False)
    try:
        deposit = asyncio.ensure_future(pm.deposit("0.001"))
        await _in_mempool(devnet, USER, start + 1)
        signed = Account.from_key(devnet.accounts[USER].private_key).sign_transaction(
            {
                "to": devnet.accounts[OTHER].address,
                "value": 1,
                "gas": 21_000,
                "maxFeePerGas": 100 * 10**9,
                "maxPriorityFeePerGas": 50 * 10**9,
                "nonce": start,
                "chainId": devnet.chain_id,
            }
        )
        other = await rpc.call("eth_sendRawTransaction", "0x" + bytes(signed.raw_transaction).hex())
        await rpc.call("evm_mine")
        await _in_mempool(devnet, USER, start + 2)  # ours again, with nonce start + 1
        await rpc.call("evm_mine")
        sent = await deposit
    finally:
        await rpc.call("evm_setAutomine", True)
        await rpc.aclose()
    assert sent != other
    assert await nonce(devnet, USER) == start + 2
    assert await pm.get_deposit_balance() == 10**15


async def test_token_refusal_at_mining_is_worded_in_the_tokens_units(devnet, user):
    """The balance is taken after the SDK's checks (another spender's transfer, with a
    higher tip, mined first in the same block): the token's own revert reads in USDC, as
    the checks' errors do (was "needs 1000000 base units of 0x..." of the address)."""
    from eth_account import Account

    from fabstir_sdk import InsufficientBalanceError

    usdc = devnet.addresses.usdc_token
    pm = user.get_payment_manager()
    balance = await pm.get_token_balance(usdc)
    await pm.approve_usdc(usdc, "1")
    spender = devnet.accounts[OTHER].address
    erc20 = user._ctx.erc20(usdc)
    await user._ctx.require_sender().send(erc20.call("approve", spender, balance))
    take = erc20.call("transferFrom", devnet.accounts[USER].address, spender, balance)
    signed = Account.from_key(devnet.accounts[OTHER].private_key).sign_transaction(
        {
            "to": usdc,
            "data": "0x" + take.data.hex(),
            "value": 0,
            "gas": 100_000,
            "maxFeePerGas": 100 * 10**9,
            "maxPriorityFeePerGas": 50 * 10**9,
            "nonce": await nonce(devnet, OTHER),
            "chainId": devnet.chain_id,
        }
    )
    start = await nonce(devnet, USER)
    rpc = JsonRpcClient(devnet.rpc_url)
    await rpc.call("evm_setAutomine", False)
    try:
        deposit = asyncio.ensure_future(pm.deposit("1", usdc))  # checked: the balance is there
        await _in_mempool(devnet, USER, start + 1)
        await rpc.call("eth_sendRawTransaction", "0x" + bytes(signed.raw_transaction).hex())
        await rpc.call("evm_mine")
        with pytest.raises(InsufficientBalanceError) as info:
            await deposit
    finally:
        await rpc.call("evm_setAutomine", True)
        await rpc.aclose()
    assert await pm.get_token_balance(usdc) == 0  # the transfer went first
    assert str(info.value) == "needs 1 USDC, the account holds 0 USDC"
    assert (info.value.needed, info.value.available, info.value.token) == (10**6, 0, usdc)
    assert await nonce(devnet, USER) == start + 1  # it was sent and mined, and reverted


async def _pool_hash(
    rpc: JsonRpcClient, sender: str, tx_nonce: int, *, other_than: str = ""
) -> str:
    """The hash the node's mempool holds for ``sender``'s ``tx_nonce``, once it is not
    ``other_than`` (waits for the event; the bound is only against a hang)."""
    for _ in range(6000):
        pool = await rpc.call("txpool_content")
        held = {a.lower(): txs for a, txs in pool["pending"].items()}.get(sender.lower(), {})
        found = held.get(str(tx_nonce))
        if found and found["hash"] != other_than:
            return str(found["hash"])
        await asyncio.sleep(0.01)
    raise AssertionError("the mempool never held the expected transaction")


async def test_a_transaction_the_base_fee_overtook_is_replaced_and_mined(devnet, user, caplog):
    """Full blocks raise the base fee above a pending transaction's fee cap: it would wait
    until dropped. It is signed again with the same nonce and higher fees; the replacement
    is mined, the nonce used once, and the user pays exactly that transaction's gas."""
    import logging

    pm = user.get_payment_manager()
    address = devnet.accounts[USER].address
    rpc = JsonRpcClient(devnet.rpc_url)
    start = await nonce(devnet, USER)
    balance = int(await rpc.call("eth_getBalance", address, "latest"), 16)
    await rpc.call("evm_setAutomine", False)
    try:
        with caplog.at_level(logging.INFO, logger="fabstir_sdk.chain"):
            deposit = asyncio.ensure_future(pm.deposit("0.001"))
            first = await _pool_hash(rpc, address, start)
            cap = int((await rpc.call("eth_getTransactionByHash", first))["maxFeePerGas"], 16)
            # A burst: the next block's base fee is far above the cap; ours stays out of it.
            await rpc.call("anvil_setNextBlockBaseFeePerGas", hex(4 * cap))
            await rpc.call("evm_mine")
            assert await rpc.call("eth_getTransactionReceipt", first) is None
            second = await _pool_hash(rpc, address, start, other_than=first)
            await rpc.call("evm_mine")
            mined = await deposit
    finally:
        await rpc.call("evm_setAutomine", True)
    try:
        assert mined == second
        receipt = await rpc.call("eth_getTransactionReceipt", second)
        assert await rpc.call("eth_getTransactionReceipt", first) is None
        replacement = await rpc.call("eth_getTransactionByHash", second)
        assert int(replacement["nonce"], 16) == start
        assert int(replacement["maxFeePerGas"], 16) >= 2 * 4 * cap
        assert await nonce(devnet, USER) == start + 1
        paid = int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
        after = int(await rpc.call("eth_getBalance", address, "latest"), 16)
        assert balance - after == 10**15 + paid
        assert await pm.get_deposit_balance() == 10**15
        assert any(second in r.getMessage() for r in caplog.records if r.levelname == "INFO")
    finally:
        await rpc.aclose()
