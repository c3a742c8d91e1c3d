"""Replays against the reference host (issue 10 §2): someone who saw a victim's frames on the
wire sends them again. Each attack is refused with a typed code and nothing of it is billed:
the job's tokens, the host's payment and the victim's refund are checked on chain exactly.

Bills are exact only above the proof interval (the first claim is padded up to it), so the
jobs here have a proof interval of 100 and the victim uses more than that: a replayed
prompt that was answered would show in ``tokens_used``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from fabstir_sdk import FabstirSDK, SessionState
from fabstir_sdk.devnet import Devnet, RunningHost
from fabstir_sdk.errors import HostError
from fabstir_sdk.protocol import ClientState, SessionInitAck, StreamEnd, TokenChunk

from .host_helpers import STRANGER, USER, Client, encrypted, open_job, read_job, wait_for_job

pytestmark = pytest.mark.integration

HOST, ANY_SIGNER, RESTARTED = 2, 4, 5
DEPOSIT = 1_000_000  # 1 USDC in base units
PRICE_PER_TOKEN = 2  # 2000 per 1000 tokens


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start() as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def host(net) -> RunningHost:
    running = await net.start_host(account=HOST, chain_poll=0.1)
    yield running
    await running.stop()


def exists(path: Path) -> bool:
    return path.exists()


async def answer(client: Client, frame: str) -> tuple[str, int]:
    """Send a prompt frame, read the answer: (text, tokens the host reported)."""
    await client.ws.send(frame)
    pieces = []
    while True:
        event = await client.next()
        if isinstance(event, StreamEnd):
            return "".join(pieces), event.tokens_used
        text = getattr(event, "text", None)
        if text is not None:
            pieces.append(text)


async def init(client: Client, frame: str) -> SessionInitAck:
    await client.ws.send(frame)
    event = await client.next()
    assert isinstance(event, SessionInitAck)
    return event


async def settled_exactly(net: Devnet, job_id: int, tokens: int) -> None:
    """Past the dispute window, the host completes the job: the bill is ``tokens``, exactly."""
    await net.advance_time(31)
    job = await wait_for_job(net, job_id, lambda j: j.status != SessionState.ACTIVE)
    assert (job.status, job.tokens_used, job.withdrawn_by_host, job.refunded_to_user) == (
        SessionState.COMPLETED,
        tokens,
        tokens * PRICE_PER_TOKEN,
        DEPOSIT - tokens * PRICE_PER_TOKEN,
    )


async def test_replay_on_a_new_connection_and_after_the_victim_left(net, host):
    job_id = await open_job(net, host.address, proof_interval=100)
    proto = encrypted(net, host, job_id)
    victim = await Client.connect(host, proto)
    init_frame = proto.init_frame()
    await init(victim, init_frame)
    prompt_frame = proto.prompt_frame("count to 150")
    assert (await answer(victim, prompt_frame))[1] == 150
    record = net.state_dir / "hosts" / f"state-{HOST}" / "inits" / f"{job_id}.inits"
    assert len(record.read_text().split()) == 2  # the init's two fingerprints, on disk
    # while the victim is connected: the captured init and prompt on a connection of one's own
    attacker = await Client.connect(host, encrypted(net, host, job_id, signer=STRANGER))
    try:
        assert await attacker.error_code(init_frame) == "REPLAYED_INIT"
        assert await attacker.error_code(prompt_frame) == "SESSION_NOT_INITIALIZED"
        # and a copy of the init on the victim's own connection (a re-key to a known key)
        assert await victim.error_code(init_frame) == "REPLAYED_INIT"
    finally:
        await attacker.close()
    await victim.close()
    # the host bills what the victim used when it leaves; then the same attack again
    assert (await wait_for_job(net, job_id, lambda j: j.tokens_used == 150)).tokens_used == 150
    for _ in range(3):  # repeated: it would drain the deposit if any were served
        attacker = await Client.connect(host, encrypted(net, host, job_id, signer=STRANGER))
        try:
            assert await attacker.error_code(init_frame) == "REPLAYED_INIT"
            assert await attacker.error_code(prompt_frame) == "SESSION_NOT_INITIALIZED"
        finally:
            await attacker.close()
    await settled_exactly(net, job_id, 150)


async def test_two_copies_of_an_init_at_once(net, host):
    """An attacker racing the victim with a copy: exactly one of the two is served."""
    job_id = await open_job(net, host.address, proof_interval=100)
    frame = encrypted(net, host, job_id).init_frame()
    first = await Client.connect(host, encrypted(net, host, job_id))
    second = await Client.connect(host, encrypted(net, host, job_id))

    async def outcome(client: Client) -> str:
        await client.ws.send(frame)
        try:
            return type(await client.next()).__name__
        except HostError as exc:
            return exc.code

    try:
        results = await asyncio.gather(outcome(first), outcome(second))
    finally:
        await first.close()
        await second.close()
    assert sorted(results) == ["REPLAYED_INIT", "SessionInitAck"]


async def test_message_indexes_never_go_back(net, host):
    job_id = await open_job(net, host.address, proof_interval=100)
    key = os.urandom(32)
    proto = encrypted(net, host, job_id, session_key=key)
    client = await Client.connect(host, proto)
    try:
        await init(client, proto.init_frame())
        # the frames are forged apart from the client's core (same key), which would take
        # m0's answer for one given up once m1 was made, and drop it
        forger = encrypted(net, host, job_id, session_key=key)
        forger.state = ClientState.READY
        m0, m1 = forger.prompt_frame("count to 50"), forger.prompt_frame("count to 60")
        assert await client.error_code(m1) == "INVALID_MESSAGE_INDEX"  # reordered
        assert await answer(client, m0) == (" ".join(map(str, range(1, 51))), 50)
        assert await client.error_code(m0) == "INVALID_MESSAGE_INDEX"  # repeated
        assert (await answer(client, m1))[1] == 60
        assert await client.error_code(m1) == "INVALID_MESSAGE_INDEX"
        assert await client.error_code(m0) == "INVALID_MESSAGE_INDEX"
        # the same session key in a new init would restart its indexes: refused
        assert await client.error_code(proto.init_frame()) == "REPLAYED_INIT"
        # a re-key signed by someone else is refused before the chain is asked
        stranger = encrypted(net, host, job_id, signer=STRANGER)
        assert await client.error_code(stranger.init_frame()) == "CLIENT_CHANGED"
        # a re-key (new key, same signer) on the same connection: indexes from 0 again, and
        # frames sealed under the old key no longer open, message_0 included
        rekeyed = client.proto = encrypted(net, host, job_id)
        ack = await init(client, rekeyed.init_frame())
        assert ack.message == "Encrypted session re-keyed"
        assert await client.error_code(m0) == "DECRYPTION_FAILED"
        assert (await answer(client, rekeyed.prompt_frame("count to 70")))[1] == 70
        assert await client.error_code(m1) == "DECRYPTION_FAILED"
    finally:
        await client.close()
    await settled_exactly(net, job_id, 180)


async def test_a_second_client_on_the_job_has_its_own_context(net):
    """With --accept-any-signer a stranger may open a session on someone's job (upstream's
    behaviour, the documented trade-off); it still neither sees nor extends the victim's
    conversation. The same signer on a second connection continues its own."""
    any_signer = await net.start_host(
        account=ANY_SIGNER, chain_poll=0.1, accept_any_signer=True, token_delay=0.005
    )
    try:
        job_id = await open_job(net, any_signer.address, proof_interval=100)
        victim = await Client.session(net, any_signer, job_id)
        stranger = await Client.session(net, any_signer, job_id, signer=STRANGER)
        again = None
        try:
            assert (await victim.ask("My name is Grace."))[0].startswith("Nice to meet you, Grace")
            assert (await stranger.ask("What's my name?"))[0] == (
                "You have not told me your name yet."
            )
            await stranger.ask("My name is Mallory.")
            assert (await victim.ask("What's my name?"))[0] == "Your name is Grace."
            again = await Client.session(net, any_signer, job_id)  # the victim, elsewhere
            assert (await again.ask("What's my name?"))[0] == "Your name is Grace."
            # a re-key while an answer streams is refused; the answer goes on under its key
            await again.ws.send(again.proto.prompt_frame("count to 2000"))
            assert (await again.next()).text == "1"
            await again.ws.send(encrypted(net, any_signer, job_id).init_frame())
            while True:
                try:
                    event = await again.next()
                except HostError as exc:
                    assert exc.code == "STREAM_IN_PROGRESS"
                    break
                assert isinstance(event, TokenChunk)
            # the client core ends an answer at an error frame; the host still ends it
            await again.ws.send(again.proto.cancel_frame())
            while json.loads(await asyncio.wait_for(again.ws.recv(), 20))["type"] != "stream_end":
                pass
        finally:
            for client in (victim, stranger, again):
                if client is not None:
                    await client.close()
    finally:
        await any_signer.stop()


async def test_replay_after_a_host_restart(net):
    first = await net.start_host(account=RESTARTED, chain_poll=0.1)
    job_id = await open_job(net, first.address, proof_interval=100)
    proto = encrypted(net, first, job_id)
    victim = await Client.connect(first, proto)
    init_frame = proto.init_frame()
    await init(victim, init_frame)
    prompt_frame = proto.prompt_frame("count to 150")
    assert (await answer(victim, prompt_frame))[1] == 150
    await victim.close()
    assert (await wait_for_job(net, job_id, lambda j: j.tokens_used == 150)).tokens_used == 150
    await first.stop()
    second = await net.start_host(account=RESTARTED, chain_poll=0.1)
    try:
        assert second.public_key == first.public_key  # the same key opens the captured init
        attacker = await Client.connect(second, encrypted(net, second, job_id, signer=STRANGER))
        try:
            assert await attacker.error_code(init_frame) == "REPLAYED_INIT"
            assert await attacker.error_code(prompt_frame) == "SESSION_NOT_INITIALIZED"
        finally:
            await attacker.close()
        # the victim ends the session: billed exactly what it used
        async with FabstirSDK(net.sdk_config()) as sdk:
            await sdk.authenticate(net.accounts[USER].private_key)
            await sdk.get_payment_manager().complete_session_job(job_id)
        job = await read_job(net, job_id)
        assert (job.status, job.tokens_used, job.withdrawn_by_host, job.refunded_to_user) == (
            SessionState.COMPLETED,
            150,
            150 * PRICE_PER_TOKEN,
            DEPOSIT - 150 * PRICE_PER_TOKEN,
        )
    finally:
        await second.stop()
    # the job ended while no host served it: the next start drops its record
    record = net.state_dir / "hosts" / f"state-{RESTARTED}" / "inits" / f"{job_id}.inits"
    assert exists(record)
    third = await net.start_host(account=RESTARTED, chain_poll=0.1)
    try:
        deadline = time.monotonic() + 30
        while exists(record) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        assert not exists(record)
    finally:
        await third.stop()
