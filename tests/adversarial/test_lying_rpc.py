"""The SDK against a lying JSON-RPC endpoint (lying_rpc.py) in front of the devnet's node.

The node is the only source of truth the SDK has about the chain, so a lie cannot always be
told from the truth; what must hold is that the SDK never signs for another chain, never
takes another transaction's receipt for its own, never buffers an endless answer, and that
every lie is a typed error that leaves the user's money where the chain says it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fabstir_sdk import ChainError, ChainMismatchError, FabstirSDK, RpcError
from fabstir_sdk.chain.transport import HttpTransport
from tests.integration.conftest import nonce

from .lying_rpc import LyingRpc

pytestmark = pytest.mark.integration

USER = 1


@pytest.fixture
async def rpc(devnet) -> AsyncIterator[LyingRpc]:
    liar = LyingRpc(devnet.rpc_url)
    await liar.start()
    yield liar
    await liar.stop()


@pytest.fixture
async def sdk(devnet, rpc) -> AsyncIterator[FabstirSDK]:
    async with FabstirSDK(devnet.sdk_config(rpc_url=rpc.url)) as client:
        await client.authenticate(devnet.accounts[USER].private_key)
        yield client


async def allowance(devnet, sdk: FabstirSDK) -> int:
    return await sdk.get_payment_manager().get_allowance(devnet.addresses.usdc_token)


async def test_a_chain_id_changed_after_authenticate_signs_nothing(devnet, rpc, sdk):
    """security.md: "A lying RPC cannot make the SDK sign for another chain": the chain id
    is in every signed transaction and re-checked with each one's gas estimate."""
    usdc = devnet.addresses.usdc_token
    pm = sdk.get_payment_manager()
    await pm.approve_usdc(usdc, "1")
    sent = await nonce(devnet, USER)
    rpc.chain_id = 1  # the endpoint now claims Ethereum mainnet
    with pytest.raises(ChainMismatchError) as info:
        await pm.approve_usdc(usdc, "2")
    assert (info.value.expected, info.value.actual) == (devnet.chain_id, 1)
    rpc.chain_id = None
    assert await nonce(devnet, USER) == sent  # nothing was sent
    assert await allowance(devnet, sdk) == 1_000_000
    await pm.approve_usdc(usdc, "3")
    assert await allowance(devnet, sdk) == 3_000_000
    assert rpc.signed_chain_ids() == [devnet.chain_id, devnet.chain_id]


async def test_a_receipt_for_another_transaction_is_refused(devnet, rpc, sdk):
    """The receipt returned must be the one of the transaction sent: another one (for
    example an older success) is an RpcError, never taken as this transaction's outcome."""
    usdc = devnet.addresses.usdc_token
    pm = sdk.get_payment_manager()
    first = await pm.approve_usdc(usdc, "1")
    rpc.foreign_receipt = first
    with pytest.raises(RpcError, match="another transaction's receipt"):
        await pm.approve_usdc(usdc, "2")
    rpc.foreign_receipt = None
    assert len(rpc.raw_sent) == 2  # sent once each, never twice
    assert await allowance(devnet, sdk) == 2_000_000  # what the chain says: it was mined
    await pm.approve_usdc(usdc, "4")  # the nonce allocator is still in order
    assert await allowance(devnet, sdk) == 4_000_000


async def test_a_reverted_status_for_a_mined_transaction(devnet, rpc, sdk):
    """A receipt that says "reverted" is a typed ChainError; the money is where the chain
    says it is (here: the approval happened), and the next transaction goes out normally."""
    usdc = devnet.addresses.usdc_token
    pm = sdk.get_payment_manager()
    rpc.revert_receipts = True
    with pytest.raises(ChainError):
        await pm.approve_usdc(usdc, "2")
    rpc.revert_receipts = False
    assert rpc.lies >= 1
    assert await allowance(devnet, sdk) == 2_000_000
    await pm.approve_usdc(usdc, "5")
    assert await allowance(devnet, sdk) == 5_000_000


async def test_truncated_json_is_a_typed_error(devnet, rpc, sdk):
    pm = sdk.get_payment_manager()
    expected = await pm.get_eth_balance()
    rpc.truncate = True
    with pytest.raises(RpcError):
        await pm.get_eth_balance()
    rpc.truncate = False
    assert await pm.get_eth_balance() == expected


async def test_an_oversized_answer_is_refused_unread(devnet, rpc, sdk, monkeypatch):
    """An answer over ``HttpTransport.max_reply_bytes`` is an RpcError, not buffered whole."""
    monkeypatch.setattr(HttpTransport, "max_reply_bytes", 1 << 20)
    pm = sdk.get_payment_manager()
    expected = await pm.get_eth_balance()
    rpc.oversize = 2 << 20
    with pytest.raises(RpcError, match="over 1048576 bytes"):
        await pm.get_eth_balance()
    rpc.oversize = 0
    assert await pm.get_eth_balance() == expected
