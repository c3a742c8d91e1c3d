"""The SDK against a malicious host (malicious_host.py): every misbehaviour is a typed error
within the session's deadline, the money moves exactly as far as the contracts let it, what
was said is kept, and honest hosts still serve the same user afterwards.

Amounts: price 2000 micro-USDC per 1000 tokens, so a token costs 2 micro-USDC; 1 USDC
deposits (1,000,000 base units).
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
from eth_utils import keccak, to_checksum_address

from fabstir_sdk import (
    DepositOutOfRangeError,
    FabstirSDK,
    FrameDecryptionError,
    HostOverclaimError,
    HostOverreportError,
    HostUnreachableError,
    MessageIndexError,
    ProtocolError,
    SessionTimeouts,
    StreamTimeoutError,
    TokenUsage,
)
from fabstir_sdk.chain.rpc import JsonRpcClient
from fabstir_sdk.devnet import Devnet, RunningHost
from tests.integration.rpc_proxy import RpcProxy

from .malicious_host import PRICE, STALLED, UNMINED_TX, MaliciousHost

pytestmark = pytest.mark.integration

BUILTIN = "fabstir/builtin:toy-1.gguf"
USER, MALICIOUS, HONEST = 1, 5, 6
DEPOSIT = 1_000_000


@pytest.fixture(scope="module")
async def net() -> AsyncIterator[Devnet]:
    async with Devnet.start(with_s5=True) as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def bad(net) -> AsyncIterator[MaliciousHost]:
    host = await MaliciousHost(net, MALICIOUS).start([BUILTIN])
    yield host
    await host.stop()


@pytest.fixture(scope="module")
async def honest(net) -> AsyncIterator[RunningHost]:
    running = await net.start_host(account=HONEST, chain_poll=0.1)
    yield running
    await running.stop()


@pytest.fixture
async def sdk(net, bad) -> AsyncIterator[FabstirSDK]:
    bad.behave()
    async with FabstirSDK(net.sdk_config()) as client:
        await client.authenticate(net.accounts[USER].private_key)
        yield client
    bad.behave()


async def usdc(net: Devnet, sdk: FabstirSDK) -> int:
    return await sdk.get_payment_manager().get_token_balance(net.addresses.usdc_token)


@contextmanager
def overclaim_warnings() -> Iterator[list[str]]:
    """The HostOverclaimError warnings issued inside, as "ClassName: message" lines."""
    lines: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield lines
    lines += [
        f"{type(w.message).__name__}: {w.message}"
        for w in caught
        if isinstance(w.message, HostOverclaimError)
    ]


async def honest_still_serves(sdk: FabstirSDK, honest: RunningHost) -> None:
    """The same user, the same SDK: a session with an honest host answers and settles,
    with no warning, and its claims are counted as it made them."""
    sm = await sdk.get_session_manager()
    with overclaim_warnings() as warned:
        session = await sm.create_session(model=BUILTIN, host=honest.address, deposit="1")
        reply = await session.send_prompt("count to 3")
        assert reply.text == "1 2 3"
        assert reply.usage.completion_tokens == 3
        assert (session.tokens_claimed, session.tokens_reported) == (3, 3)
        settlement = await session.complete()
    assert (settlement.tokens_used, settlement.refund) == (1000, DEPOSIT - 2000)
    assert warned == []


async def test_overclaim_warns_settles_at_once_and_is_recorded(net, bad, honest, sdk):
    """security.md: a host that proves tokens it never streamed is paid what it proved (the
    contract cannot tell), but complete() warns with HostOverclaimError, settles at once so it
    cannot claim more, and discovery records it against the host."""
    before = await usdc(net, sdk)
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=bad.address, deposit="1")
    bad.overclaim = 5000
    assert (await session.send_prompt("one two three")).text == " one two three"
    await bad.proof_done.wait()  # 3 streamed, 5003 proven
    with pytest.warns(HostOverclaimError, match="claimed 5003 tokens"):
        settlement = await session.complete()
    cost = 5003 * PRICE // 1000
    assert (settlement.tokens_used, settlement.host_payment) == (5003, cost)
    assert settlement.treasury_fee + settlement.host_net == cost
    assert settlement.refund == DEPOSIT - cost
    assert await usdc(net, sdk) == before - cost  # exact to the base unit
    dm = sdk.get_discovery_manager()
    reputation = await dm.get_reputation(bad.address)
    assert (reputation.overclaims, reputation.score) == (1, 0)
    offered = await dm.find_hosts(required_models=[BUILTIN])
    assert bad.address not in [h.address for h in offered]
    assert dm.last_dropped.get("overclaimed") == 1
    await honest_still_serves(sdk, honest)


async def test_proof_before_the_init_is_acknowledged(net, bad, sdk):
    """security.md: proofs for a session in which nothing was streamed are an overclaim:
    the same warning and immediate settlement; the host gets what it proved, no more."""
    bad.prove_before_ack = 1000
    before = await usdc(net, sdk)
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=bad.address, deposit="1")
    with pytest.warns(HostOverclaimError):
        settlement = await session.complete()
    assert (settlement.tokens_used, settlement.refund) == (1000, DEPOSIT - 2000)
    assert await usdc(net, sdk) == before - 2000


async def test_a_failed_connect_that_charged_is_an_overclaim(net, bad, sdk):
    """sessions.md: "If the payment went through but the connection fails ..., the job is
    settled at once". A host that proves tokens and never answers the init is paid what
    it proved (the contract allows it); the SDK settles at once, warns and records it."""
    bad.prove_before_ack = 1000
    bad.never_ack = True
    before = await usdc(net, sdk)
    sm = await sdk.get_session_manager()
    # the host's proof (two transactions) lands well within the 5 s connect deadline
    with pytest.warns(HostOverclaimError), pytest.raises(StreamTimeoutError):
        await sm.create_session(
            model=BUILTIN,
            host=bad.address,
            deposit="1",
            timeouts=SessionTimeouts(connect=5),
        )
    await bad.proof_done.wait()
    assert await usdc(net, sdk) == before - 2000  # 1000 proven tokens, to the base unit
    reputation = await sdk.get_discovery_manager().get_reputation(bad.address)
    assert reputation.overclaims == 1


async def test_keepalives_do_not_restart_the_idle_deadline(net, bad, honest, sdk):
    """sessions.md: ``idle`` covers "between two tokens of an answer": pings and status
    notices are not tokens. StreamTimeoutError at the deadline, the partial answer kept."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(
        model=BUILTIN, host=bad.address, deposit="1", timeouts=SessionTimeouts(idle=1.0)
    )
    bad.stall_with_keepalives = True
    with pytest.raises(StreamTimeoutError):
        async with session.stream("hello") as stream:
            async for _ in stream:
                pass
    assert stream.text == "".join(STALLED)
    assert bad.keepalives > 0  # the host really kept the connection busy
    bad.behave()
    assert (await session.send_prompt("still here")).text == " still here"
    settlement = await session.complete()
    assert settlement.refund == DEPOSIT


async def test_the_idle_deadline_does_not_count_the_callers_time(net, bad, sdk):
    """sessions.md, Deadlines, ``idle``: counted from when the loop asks for the next token,
    so a caller that spends longer than ``idle`` on a token is not timed out by tokens that
    had arrived meanwhile."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(
        model=BUILTIN, host=bad.address, deposit="1", timeouts=SessionTimeouts(idle=0.2)
    )
    received: list[str] = []
    async with session.stream("one two three four") as stream:
        async for chunk in stream:
            received.append(chunk.text)
            if len(received) == 1:
                await bad.answered.wait()  # the host sent the whole answer
                await asyncio.sleep(1.0)  # the caller's own work: five times ``idle``
    assert received == [" one", " two", " three", " four"]
    assert stream.usage == TokenUsage(prompt_tokens=4, completion_tokens=4, total_tokens=8)
    settlement = await session.complete()
    assert (settlement.tokens_used, settlement.refund) == (0, DEPOSIT)


@pytest.mark.parametrize(
    ("switch", "error"),
    [
        ("wrong_key", FrameDecryptionError),
        ("replay_chunk", MessageIndexError),
    ],
)
async def test_forged_and_replayed_chunks_are_refused(net, bad, honest, sdk, switch, error):
    """security.md: "every later frame is XChaCha20-Poly1305 under [the session key] with ...
    an AAD that fixes its position, so frames cannot be replayed, reordered or moved"."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=bad.address, deposit="1")
    setattr(bad, switch, True)
    with pytest.raises(error):
        await session.send_prompt("alpha beta gamma")
    settlement = await session.complete()  # nothing proven: the whole deposit back
    assert (settlement.tokens_used, settlement.refund) == (0, DEPOSIT)
    await honest_still_serves(sdk, honest)


async def test_oversized_frame_is_a_typed_error(net, bad, honest, sdk):
    """security.md: "oversized frames" raise a typed error: the client closes the connection
    (1009, message too big) before reading it, so HostUnreachableError; the money is safe."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=bad.address, deposit="1")
    bad.oversized_frame = True
    with pytest.raises(HostUnreachableError):  # the client library closes with 1009
        await session.send_prompt("alpha beta")
    settlement = await sm.complete_session(session.session_id)
    assert (settlement.tokens_used, settlement.refund) == (0, DEPOSIT)
    await honest_still_serves(sdk, honest)


async def test_endless_answer_stops_at_the_total_deadline(net, bad, sdk):
    """sessions.md: ``total`` bounds "a whole answer": StreamTimeoutError, and the answer is
    cancelled on the host (which stops sending)."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(
        model=BUILTIN,
        host=bad.address,
        deposit="1",
        timeouts=SessionTimeouts(total=1.0, idle=1.0),  # the cancel drain is min(5 s, idle)
    )
    bad.endless = True
    with pytest.raises(StreamTimeoutError):
        await session.send_prompt("go")
    await session.end()
    await bad.client_left.wait()  # the client really left: the host's sends fail now


@pytest.mark.parametrize(
    ("checkpoint", "logged"),
    [
        ("refuse", "no final checkpoint from {host}: host error NOT_SUPPORTED: no"),
        ("silent", "no final checkpoint from {host}: no final checkpoint from the host in 0.5 s"),
        ("unmined", f"the final proof of {{session}} is not mined: no receipt for {UNMINED_TX}"),
    ],
)
async def test_complete_settles_what_is_proven_when_the_final_checkpoint_fails(
    net, bad, sdk, caplog, checkpoint, logged
):
    """sessions.md, Deadlines, ``settle``: ``complete()`` waits at most ``settle`` for the
    host's answer to its final checkpoint request, then at most ``settle`` for the receipt of
    the proof that answer names; a refusal is not waited for. Then it completes the job with
    what is proven: here the 1000 tokens the host proved while answering."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(
        model=BUILTIN, host=bad.address, deposit="1", timeouts=SessionTimeouts(settle=0.5)
    )
    bad.overclaim = 998  # with the 2 tokens streamed: 1000 proven, the proof interval
    assert (await session.send_prompt("alpha beta")).text == " alpha beta"
    # the host proves after its stream_end: mined before complete() asks (a "silent" host
    # is not waited for beyond settle, so a proof still in flight would race the settlement)
    await bad.proof_done.wait()
    bad.checkpoint = checkpoint
    asked = bad.checkpoints
    with overclaim_warnings() as warned, caplog.at_level("WARNING", "fabstir_sdk"):
        settlement = await session.complete()
    assert bad.checkpoints == asked + 1  # it did ask
    assert (settlement.tokens_used, settlement.host_payment, settlement.refund) == (
        1000,
        2000,
        DEPOSIT - 2000,
    )
    assert warned == []  # 1000 tokens for 2 reported: the minimum bill, not an overclaim
    messages = [r.getMessage() for r in caplog.records]
    assert logged.format(host=bad.address, session=session.session_id) in "\n".join(messages)


async def test_close_mid_answer_keeps_the_partial_answer(net, bad, sdk):
    """sessions.md: HostUnreachableError "even mid-answer"; the conversation so far is kept."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=bad.address, deposit="1")
    bad.close_mid_answer = True
    with pytest.raises(HostUnreachableError):
        async with session.stream("hello") as stream:
            async for _ in stream:
                pass
    assert stream.text == "".join(STALLED)
    settlement = await sm.complete_session(session.session_id)
    assert settlement.refund == DEPOSIT


async def test_negative_tokens_used_is_a_protocol_error(net, bad, sdk):
    """protocol.md: a malformed frame is a ProtocolError; a negative count is one."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=bad.address, deposit="1")
    bad.tokens_used = -5
    with pytest.raises(ProtocolError):
        await session.send_prompt("one two")
    assert session.tokens_reported == 0
    settlement = await session.complete()
    assert settlement.refund == DEPOSIT


async def test_absurd_tokens_used_is_capped_warned_and_recorded(net, bad, honest, sdk):
    """security.md: an answer's stream_end may claim at most one token a UTF-8 byte of the
    text received plus 8 (tokens that print nothing). " one two" is 8 bytes: 16 at most. A
    claim of 10^18 is counted as 16 everywhere the SDK shows it, kept as the host's claim,
    warned about with HostOverreportError, and the host is no longer offered."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=bad.address, deposit="1")
    bad.tokens_used = 10**18
    with overclaim_warnings() as warned:
        reply = await session.send_prompt("one two")
    assert reply.text == " one two"
    assert warned == [
        f"HostOverreportError: host {bad.address} claimed {10**18} tokens for answer "
        f"{session.session_id}-0 of session {session.session_id}, whose text was 8 bytes: "
        "at most 16 tokens (one a byte, plus 8); 16 counted. Complete the session to stop "
        "it proving the claim"
    ]
    # the host's usage said 2 + 10^18 = total: the total is recomputed from the capped count
    assert reply.usage == TokenUsage(prompt_tokens=2, completion_tokens=16, total_tokens=18)
    assert (session.tokens_reported, session.tokens_claimed) == (16, 10**18)
    status = await sm.get_session_status(session.session_id)
    assert (status.tokens_reported, status.tokens_claimed, status.tokens_billed) == (16, 10**18, 0)
    dm = sdk.get_discovery_manager()
    assert (await dm.get_reputation(bad.address)).overclaims == 1
    assert bad.address not in [h.address for h in await dm.find_hosts(required_models=[BUILTIN])]
    bad.behave()
    with overclaim_warnings() as warned:  # it proved nothing: no second warning, no charge
        settlement = await session.complete()
    assert warned == []
    assert (settlement.tokens_used, settlement.refund) == (0, DEPOSIT)
    await honest_still_serves(sdk, honest)


async def test_an_inflated_claim_then_proven_is_an_overclaim(net, bad, sdk):
    """The attack the cap stops: a host reports 5003 tokens for three words (14 bytes: 22 at
    most) and proves 5003. Before, complete() compared the proof with the host's own report
    and warned of nothing; now the answer's end warns, complete() warns of the proof against
    the 22 counted (1000 billable, the proof interval) and settles at once."""
    before = await usdc(net, sdk)
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=bad.address, deposit="1")
    bad.tokens_used, bad.overclaim = 5003, 5000  # proves 3 streamed + 5000
    with overclaim_warnings() as warned:
        reply = await session.send_prompt("one two three")
        await bad.proof_done.wait()
        settlement = await session.complete()
    assert reply.usage.completion_tokens == 22
    address, sid = bad.address, session.session_id
    assert warned == [
        f"HostOverreportError: host {address} claimed 5003 tokens for answer {sid}-0 of "
        f"session {sid}, whose text was 14 bytes: at most 22 tokens (one a byte, plus 8); "
        "22 counted. Complete the session to stop it proving the claim",
        f"HostOverclaimError: host {address} claimed 5003 tokens on session {sid} but reported "
        "22 that its answers account for (at most 1000 billable); the session was completed "
        "at once",
    ]
    cost = 5003 * PRICE // 1000  # the contract pays what was proven
    assert (settlement.tokens_used, settlement.host_payment, settlement.refund) == (
        5003,
        cost,
        DEPOSIT - cost,
    )
    assert await usdc(net, sdk) == before - cost
    assert (await sdk.get_discovery_manager().get_reputation(address)).overclaims == 2
    record = await sm.get_session_data(sid, "proofs")  # the evidence, kept in S5
    assert {k: v for k, v in record.items() if k != "proofs"} == {
        "tokens_in_proofs": 0,  # it announced none of its proofs
        "tokens_used_on_chain": 5003,
        "reconciled": False,
        "tokens_reported": 22,
        "tokens_claimed": 5003,
        "settled": True,
    }
    assert issubclass(HostOverreportError, HostOverclaimError)  # one filter covers both


@pytest.mark.parametrize(("claim", "counted", "warns"), [(16, 16, False), (17, 16, True)])
async def test_the_bound_is_exact(net, bad, sdk, claim, counted, warns):
    """ " one two" is 8 bytes: a claim of 16 tokens is believed, 17 is one too many."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=bad.address, deposit="1")
    bad.tokens_used = claim
    with overclaim_warnings() as warned:
        reply = await session.send_prompt("one two")
    assert reply.usage.completion_tokens == counted
    assert (session.tokens_reported, session.tokens_claimed) == (counted, claim)
    assert [w.split(":")[0] for w in warned] == (["HostOverreportError"] if warns else [])
    reputation = await sdk.get_discovery_manager().get_reputation(bad.address)
    assert reputation.overclaims == (1 if warns else 0)
    settlement = await session.complete()
    assert settlement.refund == DEPOSIT


async def test_several_tokens_a_chunk_are_believed(net, bad, sdk):
    """A chunk may carry several tokens: a host that packs three words (one token each) into
    a chunk and reports the six tokens of two chunks is counted 6, not 2, and not warned."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=bad.address, deposit="1")
    bad.words_per_chunk = 3
    chunks = []
    with overclaim_warnings() as warned:
        async with session.stream("one two three four five six") as stream:
            chunks = [chunk.text async for chunk in stream]
        settlement = await session.complete()
    assert chunks == [" one two three", " four five six"]
    assert stream.usage == TokenUsage(prompt_tokens=6, completion_tokens=6, total_tokens=12)
    assert (session.tokens_reported, session.tokens_claimed) == (6, 6)
    assert warned == []
    assert (await sdk.get_discovery_manager().get_reputation(bad.address)).overclaims == 0
    assert settlement.refund == DEPOSIT


async def test_an_answer_given_up_is_capped_too(net, bad, sdk):
    """The stream_end of an answer the client gave up (here at the idle deadline) comes after
    the cancel; its chunks, "The answer is" (13 bytes), bound it to 21 tokens: a claim of
    1000 is counted 21 and warned when the next answer ends."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(
        model=BUILTIN, host=bad.address, deposit="1", timeouts=SessionTimeouts(idle=2.0)
    )
    sid = session.session_id
    bad.stall_with_keepalives, bad.tokens_used = True, 1000
    with overclaim_warnings() as warned:
        with pytest.raises(StreamTimeoutError):
            await session.send_prompt("hello")
        await bad.cancelled.wait()  # the late stream_end is on the wire before the next answer
        bad.stall_with_keepalives, bad.tokens_used = False, None
        reply = await session.send_prompt("still here")
    assert reply.text == " still here"
    assert warned == [
        f"HostOverreportError: host {bad.address} claimed 1000 tokens for answer {sid}-0 of "
        f"session {sid}, whose text was 13 bytes: at most 21 tokens (one a byte, plus 8); "
        "21 counted. Complete the session to stop it proving the claim"
    ]
    assert (session.tokens_reported, session.tokens_claimed) == (21 + 2, 1000 + 2)
    settlement = await session.complete()
    assert settlement.refund == DEPOSIT


async def test_stream_end_of_another_answer_is_not_this_one(net, bad, sdk):
    """sessions.md: stream_end frames "are matched to their prompt by the frame's id": one
    for another answer neither ends this answer nor adds to its bill."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=bad.address, deposit="1")
    bad.foreign_stream_end = True
    reply = await session.send_prompt("one two three")
    assert reply.text == " one two three"
    assert session.tokens_reported == 3  # not 503: the other answer's end is not ours
    settlement = await session.complete()
    assert settlement.refund == DEPOSIT


async def _nonces(net: Devnet, address: str) -> tuple[int, int]:
    """The account's (latest, pending) nonces: equal when nothing waits to be mined."""
    rpc = JsonRpcClient(net.rpc_url)
    try:
        latest = await rpc.call("eth_getTransactionCount", address, "latest")
        pending = await rpc.call("eth_getTransactionCount", address, "pending")
    finally:
        await rpc.aclose()
    return int(latest, 16), int(pending, 16)


async def test_a_payment_refused_after_the_handshake_closes_the_connection(net, bad, sdk):
    """create_session dials the host beside the checks that precede the payment; a payment
    refused there (a deposit above the marketplace's bound, read on chain with the balance)
    sends nothing and hangs up, no init."""
    me = net.accounts[USER].address
    sm = await sdk.get_session_manager()
    opened, inits = bad.connections, bad.inits
    nonces, balance = await _nonces(net, me), await usdc(net, sdk)
    with pytest.raises(DepositOutOfRangeError) as raised:
        await sm.create_session(model=BUILTIN, host=bad.address, deposit="1000000.000001")
    assert (raised.value.amount, raised.value.maximum) == (10**12 + 1, 10**12)
    await bad.client_left.wait()  # the SDK closed the early connection
    assert (bad.connections, bad.inits) == (opened + 1, inits)
    assert await _nonces(net, me) == nonces
    assert await usdc(net, sdk) == balance


async def test_a_connection_dropped_while_the_payment_is_mined_is_dialled_again(net, bad, sdk):
    """The host closes the early connection before the payment's block is mined (blocks
    are mined by hand here, so the order is certain): the init goes on a new connection, and
    the session works and settles exactly."""
    me = net.accounts[USER].address
    sm = await sdk.get_session_manager()
    before, opened, inits = await usdc(net, sdk), bad.connections, bad.inits
    bad.drop_before_init = 1
    rpc = JsonRpcClient(net.rpc_url)
    await rpc.call("evm_setAutomine", False)
    try:
        task = asyncio.ensure_future(
            sm.create_session(model=BUILTIN, host=bad.address, deposit="1")
        )
        await bad.dropped.wait()  # closed on both ends before any block is mined
        while not task.done():  # mine each transaction the SDK sends (approve, job)
            latest, pending = await _nonces(net, me)
            if pending > latest:
                await rpc.call("evm_mine")
            await asyncio.sleep(0.01)
        session = await task
    finally:
        await rpc.call("evm_setAutomine", True)
        await rpc.aclose()
    assert (bad.connections, bad.inits) == (opened + 2, inits + 1)
    assert (await session.send_prompt("one two three")).text == " one two three"
    settlement = await session.complete()  # this host bills nothing unless told to
    assert (settlement.tokens_used, settlement.refund) == (0, DEPOSIT)
    assert await usdc(net, sdk) == before


async def test_a_host_dialled_before_is_dialled_while_its_entry_is_read(net, bad, sdk):
    """The second session with a host dials the URL it had last time at once, beside the
    registry read, and uses that connection (one per session); once the host moved, the
    read's new URL is dialled and the early connection is hung up, unused.

    The SDK reads the chain through a proxy that holds the read of the host's entry (for a
    host opened before, it is read in the payment's check batch, which finds it moved: nothing
    is sent and the entry is read again) until the early dial has reached the old URL: the
    order is the same on a loaded machine as on a quiet one."""
    proxy = await RpcProxy(net.rpc_url).start()
    try:
        async with FabstirSDK(net.sdk_config(rpc_url=proxy.url)) as user:
            await user.authenticate(net.accounts[USER].private_key)
            sm = await user.get_session_manager()
            first = await sm.create_session(model=BUILTIN, host=bad.address, deposit="1")
            await first.end()
            opened, inits = bad.connections, bad.inits
            second = await sm.create_session(model=BUILTIN, host=bad.address, deposit="1")
            assert (bad.connections, bad.inits) == (opened + 1, inits + 1)
            assert (await second.send_prompt("one two")).text == " one two"
            await second.end()
            old = bad.url
            url = await bad.move()
            seen = len(bad.visits)
            bad.visited.clear()
            read = proxy.gate("eth_call")
            creating = asyncio.ensure_future(
                sm.create_session(model=BUILTIN, host=bad.address, deposit="1")
            )
            await read.arrived.wait()
            assert held_entry(read.calls) == (net.addresses.node_registry.lower(), bad.address)
            await bad.visited.wait()  # the early dial reached the old URL while it is held
            (early,) = bad.visits[seen:]
            assert (early.url, early.inits) == (old, 0)
            read.opened.set()
            third = await creating
            await early.ended.wait()  # the SDK hung up the early connection...
            assert early.inits == 0  # ...with no init on it
            (used,) = bad.visits[seen + 1 :]
            assert (used.url, used.inits) == (url, 1)  # the init went to the new URL
            assert third.host.api_url == url
            assert (await third.send_prompt("three")).text == " three"
            settlement = await third.complete()
            assert (settlement.tokens_used, settlement.refund) == (0, DEPOSIT)
    finally:
        await proxy.stop()


def held_entry(calls: list[dict]) -> tuple[str, str]:
    """``(contract, host)`` of the ``getNodeFullInfo`` read among held JSON-RPC ``calls`` (a
    batch may hold other methods, some without params)."""
    selector = "0x" + keccak(b"getNodeFullInfo(address)")[:4].hex()
    (params,) = [
        c["params"][0]
        for c in calls
        if c["method"] == "eth_call" and c["params"][0]["data"].startswith(selector)
    ]
    host = "0x" + params["data"][len(selector) + 24 :]
    return params["to"].lower(), to_checksum_address(host)
