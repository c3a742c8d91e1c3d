"""The reference host as a real process on a private devnet: HTTP API, encrypted sessions,
refusals, malformed input, billing and settlement on chain."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import aiohttp
import pytest
import websockets
from eth_account import Account
from eth_account.messages import encode_defunct

from fabstir_sdk import FabstirSDK, SessionState
from fabstir_sdk.chain.model_id import model_id
from fabstir_sdk.devnet import Devnet, RunningHost
from fabstir_sdk.errors import ContextLimitError
from fabstir_sdk.protocol import (
    MAX_FRAME_BYTES,
    ChatMessage,
    CheckpointSubmitted,
    ClientSession,
    ClientState,
    SessionInitAck,
    StreamEnd,
    Usage,
)

from .host_helpers import (
    BUILTIN,
    PRICE,
    STRANGER,
    USER,
    Client,
    encrypted,
    host_net_credit,
    open_job,
    read_job,
    wait_for_job,
)

pytestmark = pytest.mark.integration

HOST, PACED, ANY_SIGNER_HOST, OTHER_MODEL = 2, 4, 5, 0


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start() as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def host(net) -> RunningHost:
    """Serves the toy model and one more, flat out, plaintext allowed; proofs every 1000."""
    running = await net.start_host(
        account=HOST,
        models=[BUILTIN, net.models[OTHER_MODEL]],
        allow_plaintext=True,
        chain_poll=0.1,
    )
    yield running
    await running.stop()


@pytest.fixture(scope="module")
async def paced(net) -> RunningHost:
    """A second host: 5 ms between tokens, encrypted sessions only."""
    running = await net.start_host(account=PACED, token_delay=0.005, chain_poll=0.1)
    yield running
    await running.stop()


# ---------------------------------------------------------------- HTTP


async def test_http_routes(net, host):
    async with aiohttp.ClientSession() as http:
        async with http.get(host.api_url + "/health") as r:
            assert (r.status, await r.json()) == (200, {"status": "healthy", "issues": None})
            assert r.headers["Access-Control-Allow-Origin"] == "*"
        async with http.get(host.api_url + "/v1/version") as r:
            version = await r.json()
        assert {"e2ee", "websocket", "streaming", "plaintext"} <= set(version["features"])
        async with http.get(host.api_url + f"/v1/models?chain_id={net.chain_id}") as r:
            models = await r.json()
        assert models["chain_id"] == net.chain_id
        assert [(m["id"], m["huggingface_repo"], m["name"]) for m in models["models"]] == [
            (model_id(BUILTIN), "fabstir/builtin", "toy-1.gguf"),
            (model_id(net.models[OTHER_MODEL]), *net.models[OTHER_MODEL].split(":")),
        ]
        async with http.get(host.api_url + "/v1/models?chain_id=1") as r:
            assert (r.status, (await r.json())["code"]) == (400, "WRONG_CHAIN")
        async with http.get(host.api_url + "/v1/checkpoints/999999") as r:
            assert (r.status, (await r.json())["code"]) == (404, "SESSION_NOT_FOUND")


async def test_http_inference_json_and_sse(net, host):
    url = host.api_url + "/v1/inference"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"model": BUILTIN, "prompt": "count to 5"}) as r:
            body = await r.json()
        assert (body["content"], body["tokens_used"], body["finish_reason"]) == (
            "1 2 3 4 5",
            5,
            "stop",
        )
        assert body["usage"] == {
            "prompt_tokens": 4,
            "completion_tokens": 5,
            "total_tokens": 9,
            "context_window_size": 8192,
        }
        assert (body["chain_id"], body["native_token"]) == (net.chain_id, "ETH")
        async with http.post(url, json={"prompt": "count to 9", "max_tokens": 3}) as r:
            assert (await r.json())["finish_reason"] == "length"
        payload = {"prompt": "count to 3", "stream": True}
        async with http.post(url, json=payload) as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            lines = [line for line in (await r.text()).split("\n\n") if line]
        events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
        assert lines[-1] == "data: [DONE]"
        assert [e["content"] for e in events] == ["1", " 2", " 3", ""]
        assert [e["finish_reason"] for e in events] == [None, None, None, "stop"]
        assert events[-1]["usage"]["completion_tokens"] == 3
        for bad, code in (("{", "INVALID_JSON"), ('{"max_tokens": 5}', "INVALID_REQUEST")):
            async with http.post(url, data=bad) as r:
                assert (r.status, (await r.json())["code"]) == (400, code)


async def test_http_inference_needs_plaintext_allowed(paced):
    async with (
        aiohttp.ClientSession() as http,
        http.post(paced.api_url + "/v1/inference", json={"prompt": "hi"}) as r,
    ):
        assert (r.status, (await r.json())["code"]) == (403, "PLAINTEXT_DISABLED")


async def test_registration_on_chain(net, host):
    async with FabstirSDK(net.sdk_config()) as sdk:
        info = await sdk.get_host_manager().get_host_info(host.address)
    assert info.is_active and info.address == net.accounts[HOST].address
    assert info.api_url == host.api_url and info.api_url.startswith("http://127.0.0.1:")
    assert info.public_key == host.public_key
    assert info.metadata["apiUrl"] == host.api_url
    assert info.models == [model_id(BUILTIN), model_id(net.models[OTHER_MODEL])]
    assert (info.min_price_per_token_stable, info.min_price_per_token_native) == (PRICE, 10**12)
    # the public key is the host address's own key: clients can check it
    from fabstir_sdk.protocol._crypto import address_of

    assert address_of(bytes.fromhex(host.public_key)) == host.address


# ---------------------------------------------------------------- sessions


async def test_encrypted_session_multi_turn(net, host):
    job_id = await open_job(net, host.address)
    client = await Client.session(net, host, job_id)
    try:
        text, end, chunks = await client.ask("My name is Ada.")
        assert text == "Nice to meet you, Ada. I will remember your name."
        assert [c.index for c in chunks] == list(range(14))  # 13 tokens, then the final marker
        assert chunks[-1].final and chunks[-1].text == "" and chunks[-1].tokens == 0
        assert (end.reason, end.finish_reason, end.tokens_used) == ("complete", "stop", 13)
        assert end.usage == Usage(
            prompt_tokens=6, completion_tokens=13, total_tokens=19, context_window_size=8192
        )
        text, end, _ = await client.ask("What is my name?")
        assert (text, end.tokens_used) == ("Your name is Ada.", 5)
        assert end.usage is not None and end.usage.prompt_tokens == 26  # the context came along
        text, end, _ = await client.ask("count to 7", max_tokens=4)
        assert (text, end.finish_reason, end.tokens_used) == ("1 2 3 4", "length", 4)
    finally:
        await client.close()


async def test_history_from_the_client_replaces_the_hosts(net, host):
    """A resuming client replays its history; the host keeps none of its own across restarts."""
    job_id = await open_job(net, host.address)
    client = await Client.session(net, host, job_id)
    try:
        history = [
            ChatMessage(role="user", content="My name is Grace."),
            ChatMessage(role="assistant", content="Nice to meet you, Grace."),
        ]
        text, _, _ = await client.ask("What's my name?", messages=history)
        assert text == "Your name is Grace."
    finally:
        await client.close()


async def test_plaintext_names_no_job_unless_any_signer_is_accepted(net, host):
    """security.md: a plaintext init or POST /v1/inference proves nobody's identity, so a
    host that checks signers (the default) refuses to bill a job to it, even with
    --allow-plaintext; the job is untouched."""
    job_id = await open_job(net, host.address)
    depositor = net.accounts[USER].address
    proto = ClientSession(
        job_id=job_id, chain_id=net.chain_id, encrypted=False, user_address=depositor
    )
    client = await Client.connect(host, proto)
    try:
        assert await client.error_code(proto.init_frame()) == "NOT_DEPOSITOR"
    finally:
        await client.close()
    body = {"prompt": "count to 50", "jobId": str(job_id)}
    async with (
        aiohttp.ClientSession() as http,
        http.post(host.api_url + "/v1/inference", json=body) as r,
    ):
        refusal = await r.json()
    assert (r.status, refusal["code"]) == (403, "NOT_DEPOSITOR")
    assert "--accept-any-signer" in refusal["error"]
    assert (await read_job(net, job_id)).tokens_used == 0


async def test_plaintext_fallback_session(net):
    host = await net.start_host(
        account=ANY_SIGNER_HOST, allow_plaintext=True, accept_any_signer=True, chain_poll=0.1
    )
    try:
        await _plaintext_fallback_session(net, host)
    finally:
        await host.stop()


async def _plaintext_fallback_session(net, host):
    job_id = await open_job(net, host.address)
    proto = ClientSession(
        job_id=job_id, chain_id=net.chain_id, encrypted=False, user_address=net.accounts[1].address
    )
    client = await Client.connect(host, proto)
    try:
        ack = await client.init()
        assert (ack.session_id, ack.job_id, ack.client_address) == (str(job_id), job_id, None)
        text, end, chunks = await client.ask("count to 4")
        assert text == "1 2 3 4" and end.tokens_used == 4 and len(chunks) == 4
        # an encrypted prompt in a plaintext session is refused
        other = encrypted(net, host, job_id)
        other.state = ClientState.READY  # pretend, to get a frame out
        assert await client.error_code(other.prompt_frame("x")) == "ENCRYPTION_REQUIRED"
    finally:
        await client.close()
    # a user_address that is not the depositor is refused
    liar = ClientSession(
        job_id=job_id, chain_id=net.chain_id, encrypted=False, user_address=net.accounts[5].address
    )
    client = await Client.connect(host, liar)
    try:
        assert await client.error_code(liar.init_frame()) == "NOT_DEPOSITOR"
    finally:
        await client.close()


async def test_plaintext_refused_where_not_allowed(net, paced):
    job_id = await open_job(net, paced.address)
    proto = ClientSession(job_id=job_id, chain_id=net.chain_id, encrypted=False)
    client = await Client.connect(paced, proto)
    try:
        assert await client.error_code(proto.init_frame()) == "PLAINTEXT_DISABLED"
    finally:
        await client.close()


async def test_stream_cancel(net, paced):
    job_id = await open_job(net, paced.address)
    client = await Client.session(net, paced, job_id)
    try:
        await client.ws.send(client.proto.prompt_frame("count to 2000"))
        first = await client.next()
        assert first.text == "1"
        await client.ws.send(client.proto.cancel_frame())
        while not isinstance(event := await client.next(), StreamEnd):
            pass
        assert (event.reason, event.finish_reason) == ("cancelled", "cancelled")
        assert 1 <= event.tokens_used < 2000
        # the session goes on: the next response starts again at chunk 0
        text, end, _ = await client.ask("count to 3")
        assert (text, end.reason) == ("1 2 3", "complete")
    finally:
        await client.close()


# ---------------------------------------------------------------- refusals


async def test_init_refusals(net, host, paced):
    job_id = await open_job(net, host.address)
    stranger = await Client.connect(host, encrypted(net, host, job_id, signer=STRANGER))
    try:  # someone else's job: the signature recovers to the stranger
        assert await stranger.error_code(stranger.proto.init_frame()) == "NOT_DEPOSITOR"
    finally:
        await stranger.close()
    cases = [
        (await open_job(net, paced.address), {}, "WRONG_HOST"),
        (job_id + 1000, {}, "JOB_NOT_FOUND"),
        (job_id, {"model": net.models[OTHER_MODEL]}, "WRONG_MODEL"),
        (job_id, {"chain_id": 1}, "WRONG_CHAIN"),
    ]
    for job, options, code in cases:
        proto = encrypted(net, host, job, **options)
        client = await Client.connect(host, proto)
        try:
            assert await client.error_code(proto.init_frame()) == code, code
        finally:
            await client.close()
    # a session for the other model works when the init names it
    other = await open_job(net, host.address, model=net.models[OTHER_MODEL])
    client = await Client.session(net, host, other, model=net.models[OTHER_MODEL])
    await client.close()


async def test_settled_job_is_refused(net, host):
    job_id = await open_job(net, host.address)
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(net.accounts[USER].private_key)
        await sdk.get_payment_manager().complete_session_job(job_id)
    proto = encrypted(net, host, job_id)
    client = await Client.connect(host, proto)
    try:
        assert await client.error_code(proto.init_frame()) == "JOB_NOT_ACTIVE"
    finally:
        await client.close()


async def test_message_rules(net, host):
    job_id = await open_job(net, host.address)
    proto = encrypted(net, host, job_id)
    client = await Client.connect(host, proto)
    try:
        proto.state = ClientState.READY  # pretend, to get frames out before the init
        early = proto.prompt_frame("too early")
        proto.state, proto._next_message = ClientState.CONNECTING, 0
        assert await client.error_code(early) == "SESSION_NOT_INITIALIZED"
        await client.init()
        # a connection serves one job (a re-key of the same job is in test_host_replay)
        other = encrypted(net, host, job_id + 1000).init_frame()
        assert await client.error_code(other) == "SESSION_ALREADY_INITIALIZED"
        first = proto.prompt_frame("count to 2")
        replay_me = first
        await client.ws.send(first)
        while not isinstance(await client.next(), StreamEnd):
            pass
        assert await client.error_code(replay_me) == "INVALID_MESSAGE_INDEX"  # replayed
        proto.prompt_frame("skipped")  # message_1 never sent
        assert await client.error_code(proto.prompt_frame("x")) == "INVALID_MESSAGE_INDEX"
        proto._next_message = 1
        tampered = json.loads(proto.prompt_frame("count to 2"))
        ct = bytearray.fromhex(tampered["payload"]["ciphertextHex"])
        ct[0] ^= 1
        tampered["payload"]["ciphertextHex"] = ct.hex()
        assert await client.error_code(json.dumps(tampered)) == "DECRYPTION_FAILED"
        proto._next_message = 1  # the host did not advance: message_1 is still due
        text, _, _ = await client.ask("count to 2")
        assert text == "1 2"
    finally:
        await client.close()


async def test_context_limit(net, host):
    job_id = await open_job(net, host.address)
    client = await Client.session(net, host, job_id)
    try:
        await client.ws.send(client.proto.prompt_frame("word " * 9000))
        with pytest.raises(ContextLimitError) as info:
            await client.next()
        assert (info.value.prompt_tokens, info.value.context_window_size) == (9002, 8192)
    finally:
        await client.close()


async def test_host_survives_1000_malformed_frames(net, host):
    job_id = await open_job(net, host.address)
    proto = encrypted(net, host, job_id)
    bad = await Client.connect(host, proto)
    cycle: list[tuple[str | bytes, str]] = [
        ("not json", "INVALID_JSON"),
        (b"\x00\xff\xfe binary garbage", "INVALID_JSON"),
        ("[1,2,3]", "INVALID_MESSAGE"),
        ('{"type": "teleport"}', "UNKNOWN_MESSAGE_TYPE"),
        ('{"type": "encrypted_session_init", "payload": {}}', "INVALID_MESSAGE"),
        ('{"type": "encrypted_message", "payload": {"nonceHex": "zz"}}', "INVALID_MESSAGE"),
        ('{"type": "uploadVectors", "session_id": "1"}', "NOT_SUPPORTED"),
        ('{"type": "prompt", "prompt": "no session yet"}', "SESSION_NOT_INITIALIZED"),
    ]
    once: list[tuple[str | bytes, str]] = [
        ("[" * 100_000, "INVALID_JSON"),  # deep nesting: a segfault for a naive parser
        ('{"type": "prompt", "prompt": "' + "x" * MAX_FRAME_BYTES + '"}', "FRAME_TOO_LARGE"),
    ]
    frames = [cycle[i % len(cycle)] for i in range(1000 - len(once))] + once
    try:
        for frame, _ in frames:
            await bad.ws.send(frame)
        codes = [json.loads(await asyncio.wait_for(bad.ws.recv(), 20))["code"] for _ in frames]
        assert codes == [code for _, code in frames]
        await bad.ws.send('{"type": "stream_cancel"}')  # nothing streams: no answer
        # the same connection still works, and so does the next client
        await bad.init()
        text, _, _ = await bad.ask("count to 3")
        assert text == "1 2 3"
    finally:
        await bad.close()
    other = await Client.session(net, host, await open_job(net, host.address))
    try:
        assert (await other.ask("count to 2"))[0] == "1 2"
    finally:
        await other.close()


async def test_giant_frame_closes_only_its_connection(net, host):
    client = await Client.connect(host, encrypted(net, host, 1))
    with pytest.raises(websockets.ConnectionClosed) as info:
        await client.ws.send("x" * (2 * MAX_FRAME_BYTES + 1))
        await client.ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009  # message too big
    async with aiohttp.ClientSession() as http, http.get(host.api_url + "/health") as r:
        assert r.status == 200


# ---------------------------------------------------------------- billing and settlement


async def test_proofs_checkpoint_and_settlement(net, host):
    job_id = await open_job(net, host.address)
    client = await Client.session(net, host, job_id)
    try:
        text, end, _ = await client.ask("count to 1200")
        assert end.tokens_used == 1200 and text.endswith(" 1199 1200")
        # a claim of 1000 (1200 less a 100 reserve, rounded to the checkpoint) came due at
        # 1100 tokens; the rate limit (2000 tokens/s) needs a second of chain time
        await net.advance_time(2)
        job = await wait_for_job(net, job_id, lambda j: j.tokens_used == 1000)
        assert job.tokens_used == 1000
        await net.advance_time(2)
        await client.ws.send(client.proto.checkpoint_request_frame(id="final"))
        answer = await client.next()
        assert isinstance(answer, CheckpointSubmitted)
        assert (answer.id, answer.tokens_claimed, answer.total_tokens) == ("final", 200, 1200)
        assert answer.checkpoint_index == 1
        job = await read_job(net, job_id)
        assert (job.tokens_used, job.last_proof_hash) == (1200, answer.proof_hash)
        assert [n.tokens_claimed for n in client.notices] == [1000, 200]
    finally:
        await client.close()
    await net.advance_time(31)  # past the dispute window: the host completes
    job = await wait_for_job(net, job_id, lambda j: j.status != SessionState.ACTIVE)
    assert job.status == SessionState.COMPLETED
    assert (job.tokens_used, job.withdrawn_by_host, job.refunded_to_user) == (
        1200,
        2400,
        1_000_000 - 2400,
    )
    assert await host_net_credit(net, job_id) == 2160  # 90% of 1200 tokens at 2 micro-USDC
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{host.api_url}/v1/checkpoints/{job_id}") as r,
    ):
        index = await r.json()
    assert index["hostAddress"] == host.address
    assert [c["tokenRange"] for c in index["checkpoints"]] == [[0, 1000], [1000, 1200]]
    assert index["checkpoints"][1]["proofHash"] == answer.proof_hash
    canonical = json.dumps(index["checkpoints"], separators=(",", ":"), sort_keys=True)
    signer = Account.recover_message(
        encode_defunct(canonical.encode()), signature=index["checkpointsSignature"]
    )
    assert signer == host.address
    # upstream's reader: both signatures strings, or the node's hostSignature
    assert (index["messagesSignature"], index["hostSignature"]) == (
        "",
        index["checkpointsSignature"],
    )


async def test_first_checkpoint_is_padded_to_the_proof_interval(net, host):
    job_id = await open_job(net, host.address, proof_interval=500)
    client = await Client.session(net, host, job_id)
    _, end, _ = await client.ask("My name is Ada.")
    assert end.tokens_used == 13
    await client.close()  # gas-free end: the host bills the minimum and settles
    await net.advance_time(31)
    job = await wait_for_job(net, job_id, lambda j: j.status != SessionState.ACTIVE)
    assert (job.status, job.tokens_used, job.withdrawn_by_host) == (
        SessionState.COMPLETED,
        500,
        1000,
    )


async def test_reconnect_during_the_dispute_window_resumes(net, host):
    job_id = await open_job(net, host.address)
    first = await Client.session(net, host, job_id)
    await first.ask("count to 150")
    await first.close()
    second = await Client.session(net, host, job_id)  # back before the host settled
    try:
        await net.advance_time(31)
        text, end, _ = await second.ask("count to 3")
        assert (text, end.tokens_used) == ("1 2 3", 3)
        job = await read_job(net, job_id)
        assert job.status == SessionState.ACTIVE  # not settled while a client is connected
    finally:
        await second.close()
    job = await wait_for_job(net, job_id, lambda j: j.status != SessionState.ACTIVE)
    assert (job.status, job.tokens_used) == (SessionState.COMPLETED, 1000)


async def test_withdraw_earnings_on_request(net, host):
    job_id = await open_job(net, host.address)
    client = await Client.session(net, host, job_id)
    await client.ask("count to 20")
    await client.close()
    await net.advance_time(31)
    await wait_for_job(net, job_id, lambda j: j.status != SessionState.ACTIVE)
    usdc = net.addresses.usdc_token
    async with FabstirSDK(net.sdk_config()) as sdk:
        hm, pm = sdk.get_host_manager(), sdk.get_payment_manager()
        earned = await hm.get_host_earnings(usdc, host.address)
        wallet = await pm.get_token_balance(usdc, host.address)
        env = {**os.environ, "FABSTIR_HOST_PRIVATE_KEY": net.accounts[HOST].private_key}
        argv = [sys.executable, "-m", "fabstir_sdk.host", "withdraw", "--usdc"]
        out = await asyncio.to_thread(
            subprocess.run,
            [*argv, "--manifest", str(net.manifest_path)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        report = json.loads(out.stdout)
        assert (report["withdrawn"], report["token"]) == (earned, usdc)
        assert earned >= 1800  # this test's session alone: 1000 tokens billed, 90% of 2000
        assert await hm.get_host_earnings(usdc, host.address) == 0
        assert await pm.get_token_balance(usdc, host.address) == wallet + earned
        assert net.accounts[HOST].private_key[2:] not in out.stdout + out.stderr


async def test_ack_names_the_client(net, host):
    job_id = await open_job(net, host.address)
    proto = encrypted(net, host, job_id)
    client = await Client.connect(host, proto)
    try:
        ack = await client.init()
        assert isinstance(ack, SessionInitAck)
        assert (ack.session_id, ack.job_id, ack.chain_id, ack.client_address) == (
            str(job_id),
            job_id,
            net.chain_id,
            net.accounts[USER].address,
        )
    finally:
        await client.close()
