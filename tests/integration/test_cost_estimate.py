"""estimate_session_cost against a real session on the devnet: every figure to the base unit.

The devnet's base fee is set to zero (and stays there: our blocks are far below the gas
target), so the gas price is the fixed priority fee and the native cost is exact too.
"""

from __future__ import annotations

import io

import pytest

from fabstir_sdk import FabstirSDK, ValidationError
from fabstir_sdk._chat import chat
from fabstir_sdk.chain.rpc import JsonRpcClient
from fabstir_sdk.devnet import Devnet, RunningHost
from fabstir_sdk.managers.cost import CONVERSATION_CID_LENGTH

from .conftest import nonce
from .host_helpers import BUILTIN, PRICE

pytestmark = pytest.mark.integration

USER, HOST, OTHER, FRESH = 1, 2, 3, 4


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start() as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def host(net) -> RunningHost:
    running = await net.start_host(account=HOST, models=[BUILTIN], chain_poll=0.1)
    yield running
    await running.stop()


async def _receipts(rpc: JsonRpcClient, sender: str, since: int) -> list[dict]:
    """The receipts of ``sender``'s transactions mined after block ``since``, in order."""
    out = []
    last = int(await rpc.call("eth_blockNumber"), 16)
    for number in range(since + 1, last + 1):
        block = await rpc.call("eth_getBlockByNumber", hex(number), True)
        for tx in block["transactions"]:
            if tx["from"].lower() == sender.lower():
                receipt = await rpc.call("eth_getTransactionReceipt", tx["hash"])
                out.append({**receipt, "input": tx["input"]})
    return out


@pytest.mark.parametrize("payment", ["usdc", "eth", "deposit"])
async def test_estimate_matches_a_real_session(net, host, payment) -> None:
    rpc = JsonRpcClient(net.rpc_url)
    sdk = FabstirSDK(net.sdk_config())
    try:
        await rpc.call("anvil_setNextBlockBaseFeePerGas", "0x0")
        await rpc.call("evm_mine")
        await sdk.authenticate(net.accounts[USER].private_key)
        sm = await sdk.get_session_manager()
        deposit = "0.001" if payment == "eth" else "1.0"
        if payment == "deposit":  # pre-fund the marketplace: no approval at session time
            pm = sdk.get_payment_manager()
            usdc = net.addresses.usdc_token
            await pm.approve_usdc(usdc, "1")
            await pm.deposit("1", usdc)
        info = await sdk.get_host_manager().get_host_info(host.address)
        host_eth_price = info.min_price_per_token_native
        estimate = await sm.estimate_session_cost(
            BUILTIN, 40, host=host.address, payment=payment, deposit=deposit
        )
        start = int(await rpc.call("eth_blockNumber"), 16)
        session = await sm.create_session(
            model=BUILTIN, host=host.address, payment=payment, deposit=deposit
        )
        await session.send_prompt("hello")
        settlement = await session.complete()
        mined = await _receipts(rpc, net.accounts[USER].address, start)
        job = await sdk.get_payment_manager().get_session_job(settlement.job_id)
    finally:
        await sdk.aclose()
        await rpc.aclose()

    assert estimate.price_per_token == (host_eth_price if payment == "eth" else PRICE)
    assert (estimate.min_tokens, estimate.billed_tokens) == (1000, 1000)
    assert estimate.token_cost == estimate.min_cost == 1000 * estimate.price_per_token // 1000
    assert len(job.conversation_cid) == CONVERSATION_CID_LENGTH
    assert settlement.tokens_used == estimate.billed_tokens
    assert settlement.host_payment == estimate.token_cost
    steps = ["approve", "create", "complete"] if payment == "usdc" else ["create", "complete"]
    if payment == "deposit":  # the deposit paid: no approval
        assert estimate.deposit == 1_000_000
    assert [g.step for g in estimate.gas] == steps
    assert [int(r["status"], 16) for r in mined] == [1] * len(steps)
    assert [g.gas for g in estimate.gas] == [int(r["gasUsed"], 16) for r in mined]
    assert [g.cost for g in estimate.gas] == [
        int(r["gasUsed"], 16) * int(r["effectiveGasPrice"], 16) for r in mined
    ]
    assert estimate.gas_cost == sum(g.cost for g in estimate.gas)


class _Terminal(io.StringIO):
    """Typed input at a terminal: ``fabstir chat`` asks before paying only there."""

    def isatty(self) -> bool:
        return True


async def test_chat_shows_the_estimate_and_pays_nothing_when_declined(net, host) -> None:
    err = io.StringIO()
    before = await nonce(net, FRESH)
    code = await chat(
        net.sdk_config(),
        bytes.fromhex(net.accounts[FRESH].private_key.removeprefix("0x")),
        model=BUILTIN,
        host=host.address,
        stdin=_Terminal("n\n"),
        stdout=io.StringIO(),
        stderr=err,
    )
    assert code == 1
    assert await nonce(net, FRESH) == before
    shown = err.getvalue()
    assert f"Host {host.address} charges 0.002 USDC per 1000 tokens" in shown
    assert "1,000 tokens cost 0.002 USDC (the minimum bill is 1,000 tokens, 0.002 USDC)" in shown
    assert "approve 46,330 gas, create " in shown
    assert shown.rstrip().endswith("Pay and open the session? [y/N] Nothing was paid.")


async def test_chat_with_yes_pays_without_asking(net, host) -> None:
    err = io.StringIO()
    code = await chat(
        net.sdk_config(),
        bytes.fromhex(net.accounts[OTHER].private_key.removeprefix("0x")),
        model=BUILTIN,
        host=host.address,
        yes=True,
        stdin=_Terminal("/quit\n"),
        stdout=io.StringIO(),
        stderr=err,
    )
    assert code == 0
    shown = err.getvalue()
    assert "[y/N]" not in shown
    assert "Your transactions: approve 46,330 gas" in shown
    assert "completed (tx 0x" in shown


NODE_WITHOUT_SIMULATE, OWNER, AGENT, STRANGER = 5, 6, 7, 8


async def test_a_node_without_eth_simulate_v1_gets_a_typed_error_and_the_token_cost(
    net, host
) -> None:
    """An older node: estimate_session_cost says what is missing; gas=False gives the token
    figures; fabstir chat shows them, says why the gas is not shown, and still works."""
    from fabstir_sdk import SimulationUnsupportedError
    from fabstir_sdk.errors import RpcError

    from .rpc_proxy import RpcProxy

    rpc = JsonRpcClient(net.rpc_url)
    await rpc.call("anvil_setNextBlockBaseFeePerGas", "0x0")
    await rpc.call("evm_mine")
    await rpc.aclose()
    proxy = await RpcProxy(net.rpc_url).start()
    proxy.missing.add("eth_simulateV1")
    config = net.sdk_config(rpc_url=proxy.url)
    sdk = FabstirSDK(config)
    try:
        await sdk.authenticate(net.accounts[NODE_WITHOUT_SIMULATE].private_key)
        sm = await sdk.get_session_manager()
        before = await nonce(net, NODE_WITHOUT_SIMULATE)
        with pytest.raises(SimulationUnsupportedError) as missing:
            await sm.estimate_session_cost(BUILTIN, 40, host=host.address)
        assert isinstance(missing.value, RpcError) and missing.value.url == proxy.url
        assert f"the RPC node at {proxy.url} does not support eth_simulateV1" in str(missing.value)
        assert "gas=False" in str(missing.value)
        assert proxy.seen["eth_simulateV1"] == 1
        tokens_only = await sm.estimate_session_cost(BUILTIN, 1500, host=host.address, gas=False)
        assert proxy.seen["eth_simulateV1"] == 1  # not asked again
        assert (tokens_only.price_per_token, tokens_only.billed_tokens) == (PRICE, 1500)
        assert (tokens_only.token_cost, tokens_only.min_cost) == (3000, 2000)
        assert (tokens_only.gas, tokens_only.gas_cost, tokens_only.deposit) == ([], 0, 1_000_000)
        with pytest.raises(ValidationError, match="gas must be a bool"):
            await sm.estimate_session_cost(BUILTIN, 1, host=host.address, gas="no")  # type: ignore[arg-type]
        assert await nonce(net, NODE_WITHOUT_SIMULATE) == before
    finally:
        await sdk.aclose()

    err = io.StringIO()
    try:
        code = await chat(
            config,
            bytes.fromhex(net.accounts[NODE_WITHOUT_SIMULATE].private_key.removeprefix("0x")),
            model=BUILTIN,
            host=host.address,
            yes=True,
            stdin=_Terminal("count to 3\n/quit\n"),
            stdout=io.StringIO(),
            stderr=err,
        )
    finally:
        await proxy.stop()
    shown = err.getvalue()
    assert code == 0, shown
    assert f"The RPC node {proxy.url} has no eth_simulateV1: gas cannot be estimated" in shown
    assert (
        "1,000 tokens cost 0.002 USDC (the minimum bill is 1,000 tokens, 0.002 USDC). "
        "Gas: not estimated.\n"
    ) in shown
    assert "1,000 tokens billed; paid 0.002 USDC (host 0.0018 USDC" in shown


async def test_an_agents_estimate_is_its_one_transaction(net, host) -> None:
    """A delegated session: the agent sends only the creation, from the owner's allowance;
    its gas is the receipt's, and the token cost is what the owner then pays."""
    from fabstir_sdk import DelegateNotAuthorizedError, InsufficientAllowanceError, SessionState

    from .host_helpers import wait_for_job

    rpc = JsonRpcClient(net.rpc_url)
    owner_sdk, agent_sdk = FabstirSDK(net.sdk_config()), FabstirSDK(net.sdk_config())
    try:
        await rpc.call("anvil_setNextBlockBaseFeePerGas", "0x0")
        await rpc.call("evm_mine")
        owner = (await owner_sdk.authenticate(net.accounts[OWNER].private_key)).user_address
        await agent_sdk.authenticate(net.accounts[AGENT].private_key)
        usdc = net.addresses.usdc_token
        wallet = owner_sdk.get_payment_manager()
        await wallet.approve_usdc(usdc, "1")
        sm = await agent_sdk.get_session_manager()
        before = await nonce(net, AGENT)
        with pytest.raises(DelegateNotAuthorizedError):
            await sm.estimate_session_cost(BUILTIN, 0, host=host.address, payer=owner)
        await wallet.authorize_delegate(net.accounts[AGENT].address)
        with pytest.raises(InsufficientAllowanceError) as short:
            await sm.estimate_session_cost(
                BUILTIN, 0, host=host.address, payer=owner, deposit="2", gas=False
            )
        assert (short.value.needed, short.value.allowance) == (2_000_000, 1_000_000)
        with pytest.raises(ValidationError, match="pays in 'usdc'"):
            await sm.estimate_session_cost(
                BUILTIN, 0, host=host.address, payer=owner, payment="eth"
            )
        assert await nonce(net, AGENT) == before  # estimates send nothing

        estimate = await sm.estimate_session_cost(BUILTIN, 40, host=host.address, payer=owner)
        owner_usdc = await wallet.get_token_balance(usdc)
        start = int(await rpc.call("eth_blockNumber"), 16)
        session = await sm.create_session(
            model=BUILTIN, host=host.address, deposit="1", payer=owner
        )
        mined = await _receipts(rpc, net.accounts[AGENT].address, start)
        assert await nonce(net, AGENT) == before + 1
        assert [g.step for g in estimate.gas] == ["create"]
        assert [g.gas for g in estimate.gas] == [int(r["gasUsed"], 16) for r in mined]
        assert estimate.gas_cost == sum(
            int(r["gasUsed"], 16) * int(r["effectiveGasPrice"], 16) for r in mined
        )
        await session.send_prompt("count to 3")
        await session.end()  # the host proves and settles with the owner
        await net.advance_time(31)
        job = await wait_for_job(net, session.job_id, lambda j: j.status != SessionState.ACTIVE)
        assert (job.status, job.depositor, job.tokens_used) == (
            SessionState.COMPLETED,
            owner,
            estimate.billed_tokens,
        )
        assert await wallet.get_token_balance(usdc) == owner_usdc - 2000
        assert estimate.token_cost == 2000
    finally:
        await owner_sdk.aclose()
        await agent_sdk.aclose()
        await rpc.aclose()
