"""The SDK against a malicious host (malicious_host.py): every misbehaviour is a typed error
within the session's deadline, the money moves exactly as far as the contracts let it, what
was said is kept, and honest hosts still serve the same user afterwards.

Amounts: price 2000 micro-USDC per 1000 tokens, so a token costs 2 micro-USDC; 1 USDC
deposits (1,000,000 base units).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fabstir_sdk import (
    FabstirSDK,
    FrameDecryptionError,
    HostOverclaimError,
    HostUnreachableError,
    MessageIndexError,
    ProtocolError,
    SessionTimeouts,
    StreamTimeoutError,
)
from fabstir_sdk.devnet import Devnet, RunningHost

from .malicious_host import PRICE, STALLED, MaliciousHost

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


async def honest_still_serves(sdk: FabstirSDK, honest: RunningHost) -> None:
    """The same user, the same SDK: a session with an honest host answers and settles."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=honest.address, deposit="1")
    assert (await session.send_prompt("count to 3")).text == "1 2 3"
    settlement = await session.complete()
    assert (settlement.tokens_used, settlement.refund) == (1000, DEPOSIT - 2000)


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


async def test_absurd_tokens_used_is_believed_but_only_proofs_are_paid(net, bad, sdk):
    """sessions.md: "The token count you are billed for is the host's": a stream_end that
    claims 10^18 tokens for two chunks is believed (a known gap, stated with its exposure in
    security.md), but the host is paid only what it proves: here nothing, a full refund."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=bad.address, deposit="1")
    bad.tokens_used = 10**18
    reply = await session.send_prompt("one two")
    assert reply.text == " one two"
    assert session.tokens_reported == 10**18  # believed: see security.md, "what a host can take"
    bad.behave()
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
