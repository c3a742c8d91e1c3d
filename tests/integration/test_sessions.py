"""SessionManager and Session against a real host process on a private devnet.

Like the host tests, this module has its own devnet without per-test snapshots: the host
processes live across tests, so job ids must never be reused.
"""

from __future__ import annotations

import asyncio
import warnings

import pytest

from fabstir_sdk import (
    FabstirSDK,
    HostKeyMismatchError,
    HostUnreachableError,
    PriceAboveMaximumError,
    SessionClosedError,
    SessionNotActiveError,
    SessionState,
    SessionTimeouts,
    StreamChunk,
    ValidationError,
)
from fabstir_sdk.chain.rpc import JsonRpcClient
from fabstir_sdk.devnet import Devnet, RunningHost

from .conftest import nonce
from .host_helpers import BUILTIN, PRICE, read_job, wait_for_job

pytestmark = pytest.mark.integration

USER, HOST, PACED, FAKE, OTHER, BROKEN = 1, 2, 4, 5, 6, 8


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start() as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def host(net) -> RunningHost:
    running = await net.start_host(account=HOST, models=[BUILTIN], chain_poll=0.1)
    yield running
    await running.stop()


@pytest.fixture(scope="module")
async def paced(net) -> RunningHost:
    """5 ms between tokens: long answers can be cut short."""
    running = await net.start_host(account=PACED, token_delay=0.005, chain_poll=0.1)
    yield running
    await running.stop()


@pytest.fixture
async def sdk(net):
    async with FabstirSDK(net.sdk_config()) as client:
        await client.authenticate(net.accounts[USER].private_key)
        yield client


async def test_session_end_to_end(net, host, sdk):
    sm = await sdk.get_session_manager()
    usdc = net.addresses.usdc_token
    pm = sdk.get_payment_manager()
    before = await pm.get_token_balance(usdc)
    session = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
    assert session.host.address == host.address and session.price_per_token == PRICE
    assert session.session_id == str(session.job_id) == session.conversation_id

    chunks: list[StreamChunk] = []
    async with session.stream("My name is Ada.") as stream:
        async for chunk in stream:
            chunks.append(chunk)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert stream.text == "".join(c.text for c in chunks)
    assert stream.usage is not None and stream.usage.completion_tokens == len(chunks)

    reply = await session.send_prompt("What is my name?")
    assert "Ada" in reply.text  # the second answer relies on the first's context
    assert reply.usage.completion_tokens > 0
    reported = stream.usage.completion_tokens + reply.usage.completion_tokens
    assert session.tokens_reported == reported < 1000

    sent = await nonce(net, USER)
    settlement = await session.complete()
    assert await nonce(net, USER) == sent + 1  # one transaction: completeSessionJob
    billed = max(reported, 1000)  # the first checkpoint is padded to the proof interval
    assert settlement.tokens_used == billed
    assert settlement.host_payment == billed * PRICE // 1000 == 2000
    assert (settlement.treasury_fee, settlement.host_net, settlement.refund) == (200, 1800, 998_000)
    assert await pm.get_token_balance(usdc) == before - 2000

    storage = await sdk.get_storage_manager()
    conversation = await storage.load_conversation(session.conversation_id)
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("user", "My name is Ada."),
        ("assistant", stream.text),
        ("user", "What is my name?"),
        ("assistant", reply.text),
    ]
    job = await pm.get_session_job(session.job_id)
    assert job.status is SessionState.COMPLETED
    assert job.conversation_cid.startswith("b") and len(job.conversation_cid) > 40
    with pytest.raises(SessionClosedError):
        await session.send_prompt("more?")


async def test_leaving_a_stream_early_cancels_it(net, paced, sdk):
    sm = await sdk.get_session_manager()
    async with await sm.create_session(model=BUILTIN, host=paced.address, deposit="1") as session:
        async with session.stream("count to 400") as stream:
            async for chunk in stream:
                if chunk.index == 4:
                    break
        assert stream.text.startswith("1 2 3 4 5")
        assert stream.usage is not None and stream.usage.completion_tokens < 400
        reply = await session.send_prompt("count to 3")  # the session goes on
        assert reply.text == "1 2 3"


async def test_end_is_gas_free_and_the_host_settles(net, host, sdk):
    """sessions.md's money table, ``end()``: no gas; the rest of the deposit comes back when
    the host settles, after the dispute window; the host gets its proven tokens."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
    await session.send_prompt("count to 50")
    sent = await nonce(net, USER)
    await session.end()
    await session.end()  # idempotent
    assert await nonce(net, USER) == sent  # ending cost the user nothing
    await net.advance_time(31)
    job = await wait_for_job(net, session.job_id, lambda j: j.status != SessionState.ACTIVE)
    assert job.status is SessionState.COMPLETED
    assert (job.tokens_used, job.withdrawn_by_host) == (1000, 2000)  # padded minimum bill
    # the rest of the deposit, back to the user (its balance also takes the refunds of the
    # other tests' ended sessions, which the same dispute window lets their host settle)
    assert job.refunded_to_user == 998_000


async def test_price_above_the_maximum_is_refused_before_paying(net, host, sdk):
    sm = await sdk.get_session_manager()
    before = await nonce(net, USER)
    with pytest.raises(PriceAboveMaximumError) as info:
        await sm.create_session(model=BUILTIN, host=host.address, max_price_per_token=PRICE - 1)
    assert (info.value.price, info.value.maximum) == (PRICE, PRICE - 1)
    assert await nonce(net, USER) == before


async def test_resume_replays_the_history_from_storage(net, host, sdk):
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
    await session.send_prompt("My name is Bob.")
    await session._channel.drop_link()  # the connection is lost (not ended)
    with pytest.raises(HostUnreachableError):
        await session.send_prompt("still there?")

    resumed = await sm.resume_session(session.session_id)
    reply = await resumed.send_prompt("What is my name?")
    assert "Bob" in reply.text
    status = await sm.get_session_status(session.session_id)
    assert status.connected and status.job.status is SessionState.ACTIVE
    assert status.messages == 4  # the failed prompt was never sent, so never stored
    assert session.job_id in [j.id for j in await sm.list_sessions()]
    settlement = await resumed.complete()
    assert settlement.tokens_used == 1000


async def test_a_given_history_becomes_the_hosts_context(net, host, sdk):
    """The reference host starts from the history a prompt brings, goes on from there
    without one, and ``history=[]`` starts it from nothing."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
    await session.send_prompt("My name is Bob.")
    ada = [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Hi"}]
    asked = await session.send_prompt("What is my name?", history=ada)
    assert asked.text == "Your name is Ada."
    assert (await session.send_prompt("What is my name?")).text == "Your name is Ada."
    forgot = await session.send_prompt("What is my name?", history=[])
    assert forgot.text == "You have not told me your name yet."
    await session.end()


async def test_eth_and_deposit_payments(net, host, sdk):
    sm = await sdk.get_session_manager()
    host_info = await sdk.get_host_manager().get_host_info(host.address)
    eth_price = await sdk._ctx.client.read(
        sdk._ctx.contract("node_registry").call(
            "getModelPricing", host.address, host_info.models[0], "0x" + "00" * 20
        )
    )
    eth = await sm.create_session(model=BUILTIN, host=host.address, payment="eth", deposit="0.01")
    assert eth.payment_token == "0x" + "00" * 20 and eth.price_per_token == eth_price
    assert (await eth.send_prompt("count to 5")).text == "1 2 3 4 5"
    settlement = await eth.complete()
    assert settlement.host_payment == 1000 * eth_price // 1000

    pm = sdk.get_payment_manager()
    await pm.approve_usdc(net.addresses.usdc_token, "2")
    await pm.deposit("2", net.addresses.usdc_token)
    funded = await sm.create_session(model=BUILTIN, host=host.address, payment="deposit")
    assert await pm.get_deposit_balance(net.addresses.usdc_token) == 1_000_000
    await funded.send_prompt("count to 5")
    await funded.complete()
    # 1000 tokens billed at 2 micro-USDC; the rest of the 1 USDC came back into the deposit
    assert await pm.get_deposit_balance(net.addresses.usdc_token) == 2_000_000 - 2000


async def test_the_best_host_is_found_when_none_is_given(net, host, sdk):
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, deposit="1")
    assert session.host.address in {host.address, net.accounts[PACED].address}
    assert (await session.send_prompt("count to 2")).text == "1 2"
    await session.complete()


async def test_unreachable_host_is_never_paid(net, sdk):
    """A host registered on chain whose API is down: typed error before any transaction.

    The WebSocket handshake runs beside the checks that precede the payment, and the payment
    waits for it: no job is opened, the nonce and the balance do not move (before, the job
    was paid for and then settled at once, costing two transactions' gas)."""
    async with FabstirSDK(net.sdk_config()) as fake:
        await fake.authenticate(net.accounts[FAKE].private_key)
        await fake.get_host_manager().register_host(
            "http://127.0.0.1:9",  # discard port: nothing listens
            [BUILTIN],
            min_price_per_token_native=10**12,
            min_price_per_token_stable=PRICE,
            metadata={"publicKey": "02" + "33" * 32},
        )
    sm = await sdk.get_session_manager()
    pm = sdk.get_payment_manager()
    usdc = net.addresses.usdc_token
    before = (await pm.get_token_balance(usdc), await nonce(net, USER))
    with pytest.raises(HostUnreachableError) as info:
        await sm.create_session(model=BUILTIN, host=net.accounts[FAKE].address, deposit="1")
    assert "no session job was opened: nothing was paid" in info.value.__notes__
    assert [j for j in await sm.list_sessions() if j.host == net.accounts[FAKE].address] == []
    assert (await pm.get_token_balance(usdc), await nonce(net, USER)) == before


async def test_a_host_whose_public_key_is_no_key_costs_nothing(net, sdk):
    """The init's key agreement is made before paying: a registry publicKey that is not a
    secp256k1 point is a typed error before any transaction (nonce and balance unchanged)."""
    async with FabstirSDK(net.sdk_config()) as broken:
        await broken.authenticate(net.accounts[BROKEN].private_key)
        await broken.get_host_manager().register_host(
            "http://127.0.0.1:9",
            [BUILTIN],
            min_price_per_token_native=10**12,
            min_price_per_token_stable=PRICE,
            metadata={"publicKey": "02" + "11" * 32},  # x has no point on the curve
        )
    sm = await sdk.get_session_manager()
    pm = sdk.get_payment_manager()
    usdc = net.addresses.usdc_token
    before = (await pm.get_token_balance(usdc), await nonce(net, USER))
    with pytest.raises(ValidationError, match="publicKey that is not a secp256k1 key"):
        await sm.create_session(model=BUILTIN, host=net.accounts[BROKEN].address, deposit="1")
    assert (await pm.get_token_balance(usdc), await nonce(net, USER)) == before


async def test_host_key_mismatch_is_reported(net, sdk):
    """A host whose registry publicKey is not its key cannot open our init."""
    impostor = await net.start_host(account=OTHER, models=[BUILTIN], chain_poll=0.1)
    try:
        async with FabstirSDK(net.sdk_config()) as operator:
            await operator.authenticate(net.accounts[OTHER].private_key)
            hm = operator.get_host_manager()
            meta = (await hm.get_host_info(impostor.address)).metadata
            await hm.update_metadata({**meta, "publicKey": "02" + "44" * 32})
        sm = await sdk.get_session_manager()
        pm = sdk.get_payment_manager()
        before = await pm.get_token_balance(net.addresses.usdc_token)
        with pytest.raises(HostKeyMismatchError) as info:
            await sm.create_session(model=BUILTIN, host=impostor.address, deposit="1")
        # sessions.md's errors table: the job was settled at once, the notes say the cost
        (note,) = info.value.__notes__
        assert note.endswith(
            " was opened; it has been settled: nothing charged (full refund of 1000000 base units)"
        )
        assert await pm.get_token_balance(net.addresses.usdc_token) == before
    finally:
        await impostor.stop()


async def test_idle_deadline_and_host_dying_mid_stream(net, sdk):
    """The host is killed mid-answer: HostUnreachableError at once (the closed connection,
    not a deadline: those are far away, so a loaded machine's pauses between tokens do not
    end the answer before the kill), and what was said so far is kept."""
    victim = await net.start_host(account=7, models=[BUILTIN], token_delay=0.02, chain_poll=0.1)
    sm = await sdk.get_session_manager()
    session = await sm.create_session(
        model=BUILTIN,
        host=victim.address,
        deposit="1",
        timeouts=SessionTimeouts(idle=120.0, first_token=120.0),
    )
    received: list[str] = []
    with pytest.raises(HostUnreachableError):
        async with session.stream("count to 1000") as stream:
            async for chunk in stream:
                received.append(chunk.text)
                if len(received) == 10:
                    victim.kill()
    assert len(received) >= 10
    storage = await sdk.get_storage_manager()
    conversation = await storage.load_conversation(session.conversation_id)
    assert conversation.messages[0].content == "count to 1000"
    assert conversation.messages[1].content.startswith("".join(received))
    await session.end()
    # The user can still settle: whatever the host proved is paid, the rest refunded.
    settlement = await sm.complete_session(session.session_id)
    assert settlement.tokens_used == 0 and settlement.refund == 1_000_000


async def test_settled_session_cannot_be_resumed(net, host, sdk):
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
    await session.complete()
    with pytest.raises(SessionNotActiveError):
        await sm.resume_session(session.session_id)


async def test_overclaim_warns_and_completes_at_once(net, host, sdk):
    """The host bills more than it reported: complete() settles now and warns."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
    await session.send_prompt("count to 3")
    session.tokens_reported = 0  # as if the host's reports had been lower than its claims
    await net.advance_time(2)
    async with FabstirSDK(net.sdk_config()) as h:  # the host's own key claims extra work
        await h.authenticate(net.accounts[HOST].private_key)
        await h.get_host_manager().submit_proof_of_work(session.job_id, 500, b"\7" * 32, "", "")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        settlement = await session.complete()
    assert any("claimed 500 tokens" in str(w.message) for w in caught)
    assert settlement.tokens_used == 500


async def test_concurrent_prompts_on_one_session_are_serialized(net, host, sdk):
    sm = await sdk.get_session_manager()
    async with await sm.create_session(model=BUILTIN, host=host.address, deposit="1") as s:
        replies = await asyncio.gather(*(s.send_prompt(f"count to {n}") for n in (3, 4, 5)))
    assert sorted(r.text for r in replies) == ["1 2 3", "1 2 3 4", "1 2 3 4 5"]


async def test_metadata_is_readable_when_create_session_returns(net, host, sdk):
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
    meta = await sm.get_session_data(session.session_id, "metadata")
    assert (meta["job_id"], meta["host"], meta["model"]) == (session.job_id, host.address, BUILTIN)
    assert (meta["price_per_token"], meta["deposit"], meta["deposit_human"]) == (
        PRICE,
        1_000_000,
        "1",
    )
    assert meta["user"] == net.accounts[USER].address
    await session.end()


async def test_complete_keeps_every_proof_checked_against_the_chain(net, host, sdk):
    """The final checkpoint's proof is recorded in S5 as the chain has it (hash, CIDs,
    tokens, transaction, block) and reconciled with the job's tokensUsed."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
    await session.send_prompt("count to 3")
    settlement = await session.complete()
    assert settlement.tokens_used == 1000  # the proof interval: the least a session bills
    record = await sm.get_session_data(session.session_id, "proofs")
    assert (record["tokens_in_proofs"], record["tokens_used_on_chain"]) == (1000, 1000)
    assert record["reconciled"] is True and record["settled"] is True
    (proof,) = record["proofs"]
    rpc = JsonRpcClient(net.rpc_url)  # the receipt, read apart from the SDK's records
    try:
        receipt = await rpc.call("eth_getTransactionReceipt", proof["tx_hash"])
    finally:
        await rpc.aclose()
    assert proof["block"] == int(receipt["blockNumber"], 16)
    assert proof["on_chain"] is True and proof["tokens"] == proof["tokens_announced"] == 1000
    assert proof["proof_hash"] == proof["proof_hash_announced"]
    assert proof["proof_hash"].startswith("0x") and len(proof["proof_hash"]) == 66
    assert isinstance(proof["proof_cid"], str) and isinstance(proof["delta_cid"], str)


async def test_end_keeps_the_proofs_seen_during_the_session(net, host, sdk):
    """A proof the host announces mid-session is in S5 once end() returns (settled: False:
    the host's last claim comes after the disconnect)."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
    await net.advance_time(2)  # the contract's rate limit, for the host's periodic claim
    await session.send_prompt("write 1200 words")  # a claim of 1000 comes due at 1100
    assert (await wait_for_job(net, session.job_id, lambda j: j.tokens_used)).tokens_used == 1000
    while not session.proofs:  # noqa: ASYNC110  (the host's notice follows its receipt)
        await asyncio.sleep(0.05)
    await session.end()
    record = await sm.get_session_data(session.session_id, "proofs")
    # the host's final claim (1200) follows the disconnect: end() read the job before or
    # after it landed, whichever came first on this machine; the chain says which it can be
    after = (await read_job(net, session.job_id)).tokens_used
    assert after in (1000, 1200)
    assert record["settled"] is False
    (proof,) = record["proofs"]
    assert (proof["on_chain"], proof["tokens"], proof["tokens_announced"]) == (True, 1000, 1000)
    assert record["tokens_in_proofs"] == 1000
    assert record["tokens_used_on_chain"] in {1000, after}
    assert record["reconciled"] is (record["tokens_used_on_chain"] == 1000)
