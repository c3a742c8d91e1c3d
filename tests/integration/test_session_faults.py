"""Client-side faults of a session: a host's error frames (both wire shapes), a host that
closes mid-answer or cannot be reached. Each is a typed error, and what was said so far is
kept in S5 (the devnet's local portal, over HTTP).

The exotic cases come from a tiny scripted host on loopback that speaks the real protocol
(E2EE through :class:`~fabstir_sdk.protocol.HostSession`) and is registered on chain like
any host; the context-window refusal comes from the reference host process.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import AsyncIterator

import coincurve
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve

from fabstir_sdk import (
    ContextLimitError,
    FabstirSDK,
    HostError,
    HostOverclaimError,
    HostUnreachableError,
    SessionState,
    SessionTimeouts,
    StreamNotOpenError,
    StreamTimeoutError,
    ValidationError,
)
from fabstir_sdk.devnet import Devnet, RunningHost
from fabstir_sdk.protocol import (
    ChatMessage,
    Connected,
    EncryptedMessage,
    EncryptedSessionInit,
    HostSession,
    PongFrame,
    SessionInitAck,
    StreamCancel,
    StreamEnd,
    parse_client_message,
)
from fabstir_sdk.protocol._crypto import open_aead

from .host_helpers import BUILTIN, PRICE

pytestmark = pytest.mark.integration

USER, SCRIPTED, REAL, SLOW = 1, 5, 6, 8
#: The slow_start host's wait before each first token (s): 25x the 0.2 s deadline it meets.
SLOW_START = 5.0
PIECES = ["The", " answer", " is"]  # what the scripted host says before it fails
PROVEN = 500  # tokens the "prove" host claims before it refuses the init


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start(with_s5=True) as devnet:
        yield devnet


class ScriptedHost:
    """A registered host whose answers follow ``self.mode``:

    - ``"ok"``: the prompt's words back, then ``encrypted_response`` and ``stream_end``;
    - ``"coded"``: three chunks, ``{type: error, code, message, id}``, ``stream_end(error)``;
    - ``"bare"``: three chunks, then ``{type: error, error: "<text>"}`` and nothing else;
    - ``"close"``: three chunks, then the WebSocket is closed (a normal close frame);
    - ``"stall"``: three chunks, then nothing at all (the connection stays open);
    - ``"keepalive"``: no token at all, only what is not progress, again and again until the
      answer is cancelled: pongs, ``session_status``, empty chunks, ``encrypted_response``;
    - ``"prove"``: before it acknowledges an init, it proves ``PROVEN`` tokens on the job
      (on chain, with its own key), then refuses the init with an error frame.
    """

    def __init__(self, address: str, key: bytes, chain_id: int) -> None:
        self.address = address
        self.key = key
        self.chain_id = chain_id
        self.mode = "ok"
        self.server: Server | None = None
        self.net: Devnet | None = None
        self.keepalives = 0
        self.prompts: list[bytes] = []  # each prompt's plaintext, as the host opened it

    @property
    def public_key(self) -> str:
        return coincurve.PrivateKey(self.key).public_key.format(compressed=True).hex()

    async def start(self) -> str:
        self.server = await serve(self.handle, "127.0.0.1", 0)
        port = next(iter(self.server.sockets)).getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def handle(self, ws: ServerConnection) -> None:
        await ws.send(Connected().to_json())
        session: HostSession | None = None
        session_key = b""
        chatter: asyncio.Task[None] | None = None
        async for frame in ws:
            message = parse_client_message(frame)
            if isinstance(message, StreamCancel) and chatter is not None:
                chatter.cancel()
                chatter = None
                assert session is not None
                end = StreamEnd(reason="cancelled", tokens_used=0, session_id=session.session_id)
                await ws.send(end.to_json())
            elif isinstance(message, EncryptedSessionInit) and self.mode == "prove":
                _, opened = HostSession.accept(message, host_private_key=self.key)
                await self.prove(opened.job_id)
                refusal = {"type": "error", "code": "INTERNAL_ERROR", "message": "try later"}
                await ws.send(json.dumps(refusal))
            elif isinstance(message, EncryptedMessage) and self.mode == "keepalive":
                assert session is not None
                session.open_message(message)
                chatter = asyncio.create_task(self.chatter(ws, session, message.id))
            elif isinstance(message, EncryptedSessionInit):
                session, opened = HostSession.accept(message, host_private_key=self.key)
                session_key = bytes.fromhex(opened.data.session_key_hex)
                ack = SessionInitAck(
                    session_id=opened.session_id,
                    job_id=opened.job_id,
                    chain_id=self.chain_id,
                    client_address=opened.client_address,
                    id=message.id,
                )
                await ws.send(ack.to_json())
            elif isinstance(message, EncryptedMessage):
                assert session is not None
                sealed = message.payload
                plaintext = open_aead(
                    session_key,
                    bytes.fromhex(sealed.nonce_hex),
                    bytes.fromhex(sealed.ciphertext_hex),
                    bytes.fromhex(sealed.aad_hex),
                )
                self.prompts.append(plaintext)
                await self.answer(ws, session, message)

    async def chatter(self, ws: ServerConnection, session: HostSession, cid: object) -> None:
        """Anything but a token, until cancelled (a buggy or hostile host)."""
        status = {"type": "session_status", "session_id": session.session_id, "status": "busy"}
        while True:
            await ws.send(PongFrame().to_json())
            await ws.send(json.dumps(status))
            await ws.send(session.chunk_frame("", tokens=0, id=cid))  # type: ignore[arg-type]
            await ws.send(session.response_frame("stop", id=cid))  # type: ignore[arg-type]
            self.keepalives += 1
            await asyncio.sleep(0.02)

    async def prove(self, job_id: int) -> None:
        """Claim PROVEN tokens on the job with the host's own key."""
        assert self.net is not None
        await self.net.advance_time(2)  # the contract's rate limit
        async with FabstirSDK(self.net.sdk_config()) as me:
            await me.authenticate("0x" + self.key.hex())
            await me.get_host_manager().submit_proof_of_work(job_id, PROVEN, b"\5" * 32, "", "")

    async def answer(self, ws: ServerConnection, session: HostSession, m: EncryptedMessage) -> None:
        request = session.open_message(m)
        sid, cid = session.session_id, m.id
        pieces = PIECES if self.mode != "ok" else [f" {w}" for w in request.prompt.split()]
        for piece in pieces:
            await ws.send(session.chunk_frame(piece, id=cid))
        if self.mode == "ok":
            await ws.send(session.chunk_frame("", tokens=0, final=True, id=cid))
            await ws.send(session.response_frame("stop", id=cid))
            end = StreamEnd(reason="complete", tokens_used=len(pieces), session_id=sid, id=cid)
            await ws.send(end.to_json())
        elif self.mode == "coded":
            error = {"type": "error", "code": "INFERENCE_FAILED", "message": "model crashed"}
            await ws.send(json.dumps({**error, "session_id": sid, "id": cid}))
            session.reset_response()
            end = StreamEnd(reason="error", tokens_used=3, session_id=sid, id=cid)
            await ws.send(end.to_json())
        elif self.mode == "bare":
            session.reset_response()
            await ws.send(json.dumps({"type": "error", "error": "CUDA out of memory"}))
        elif self.mode == "close":
            await ws.close()
        else:
            session.reset_response()  # a stalled answer: the next one starts afresh


@pytest.fixture(scope="module")
async def scripted(net) -> AsyncIterator[ScriptedHost]:
    account = net.accounts[SCRIPTED]
    host = ScriptedHost(
        account.address, bytes.fromhex(account.private_key.removeprefix("0x")), net.chain_id
    )
    host.net = net
    url = await host.start()
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(account.private_key)
        await sdk.get_host_manager().register_host(
            url,
            [BUILTIN],
            min_price_per_token_native=10**12,
            min_price_per_token_stable=PRICE,
            metadata={"publicKey": host.public_key},
        )
    yield host
    await host.stop()


@pytest.fixture(scope="module")
async def small(net) -> AsyncIterator[RunningHost]:
    """The reference host with a 64-token context window."""
    running = await net.start_host(account=REAL, context_window=64, chain_poll=0.1)
    yield running
    await running.stop()


@pytest.fixture(scope="module")
async def slow_start(net) -> AsyncIterator[RunningHost]:
    """The reference host waiting SLOW_START s before each first token: far longer than a
    first-token deadline below, so that deadline passes first on any machine, and the
    cancel reaches the host while it is still waiting (the wait is cancellable)."""
    running = await net.start_host(account=SLOW, first_token_delay=SLOW_START, chain_poll=0.1)
    yield running
    await running.stop()


@pytest.fixture
async def sdk(net) -> AsyncIterator[FabstirSDK]:
    async with FabstirSDK(net.sdk_config()) as client:
        await client.authenticate(net.accounts[USER].private_key)
        yield client


async def stored(net: Devnet, conversation_id: str) -> list[tuple[str, str]]:
    """The conversation as S5 holds it, read through a fresh SDK (nothing cached)."""
    async with FabstirSDK(net.sdk_config()) as fresh:
        await fresh.authenticate(net.accounts[USER].private_key)
        storage = await fresh.get_storage_manager()
        conversation = await storage.load_conversation(conversation_id)
    return [(m.role, m.content) for m in conversation.messages]


async def test_coded_error_frame_mid_answer(net, scripted, sdk):
    """``{code, message}``: HostError with the code; the partial answer is kept; the
    stream_end that follows the error is not mistaken for the next answer's end."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=scripted.address, deposit="1")
    await session.send_prompt("hello there")
    scripted.mode = "coded"
    received: list[str] = []
    with pytest.raises(HostError) as info:
        async with session.stream("tell me") as stream:
            async for chunk in stream:
                received.append(chunk.text)
    assert type(info.value) is HostError
    assert (info.value.code, info.value.host_message) == ("INFERENCE_FAILED", "model crashed")
    assert info.value.session_id == session.session_id
    assert received == PIECES and stream.text == "The answer is"

    scripted.mode = "ok"
    reply = await session.send_prompt("go on please")
    assert reply.text == " go on please"
    assert session.tokens_reported == 2 + 3 + 3  # the failed answer's stream_end counted
    assert await stored(net, session.conversation_id) == [
        ("user", "hello there"),
        ("assistant", " hello there"),
        ("user", "tell me"),
        ("assistant", "The answer is"),
        ("user", "go on please"),
        ("assistant", " go on please"),
    ]
    await session.end()
    settlement = await sm.complete_session(session.session_id)
    assert (settlement.tokens_used, settlement.refund) == (0, 1_000_000)  # it proved nothing


async def test_bare_error_frame_mid_answer(net, scripted, sdk):
    """``{error: "<text>"}``: HostError with the generic code and the host's text."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=scripted.address, deposit="1")
    scripted.mode = "bare"
    with pytest.raises(HostError) as info:
        await session.send_prompt("what went wrong?")
    assert type(info.value) is HostError
    assert (info.value.code, info.value.host_message) == ("HOST_ERROR", "CUDA out of memory")
    assert str(info.value) == "host error HOST_ERROR: CUDA out of memory"
    assert await stored(net, session.conversation_id) == [
        ("user", "what went wrong?"),
        ("assistant", "The answer is"),
    ]
    scripted.mode = "ok"
    assert (await session.send_prompt("still here")).text == " still here"
    await session.end()


async def test_host_closing_mid_answer(net, scripted, sdk):
    """A clean close mid-answer is HostUnreachableError at once (no deadline to wait
    for); the partial answer is kept; the session must be resumed to go on."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=scripted.address, deposit="1")
    scripted.mode = "close"
    received: list[str] = []
    with pytest.raises(HostUnreachableError):
        async with session.stream("are you there?") as stream:
            async for chunk in stream:
                received.append(chunk.text)
    assert received == PIECES and not session.connected
    with pytest.raises(HostUnreachableError):
        await session.send_prompt("hello?")  # never sent, so never stored
    assert await stored(net, session.conversation_id) == [
        ("user", "are you there?"),
        ("assistant", "The answer is"),
    ]
    scripted.mode = "ok"
    resumed = await sm.resume_session(session.session_id)  # history replayed from S5
    assert (await resumed.send_prompt("back again")).text == " back again"
    await resumed.end()
    settlement = await sm.complete_session(session.session_id)
    assert settlement.refund == 1_000_000


async def test_host_unreachable_on_resume_keeps_the_conversation(net, sdk):
    """The host's API goes away between connections: resume is HostUnreachableError, the
    conversation stays in S5 and the deposit comes back in full."""
    account = net.accounts[7]
    gone = ScriptedHost(
        account.address, bytes.fromhex(account.private_key.removeprefix("0x")), net.chain_id
    )
    url = await gone.start()
    async with FabstirSDK(net.sdk_config()) as operator:
        await operator.authenticate(net.accounts[7].private_key)
        await operator.get_host_manager().register_host(
            url,
            [BUILTIN],
            min_price_per_token_native=10**12,
            min_price_per_token_stable=PRICE,
            metadata={"publicKey": gone.public_key},
        )
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=gone.address, deposit="1")
    assert (await session.send_prompt("remember this")).text == " remember this"
    await session.end()
    await gone.stop()
    with pytest.raises(HostUnreachableError):
        await sm.resume_session(session.session_id)
    assert await stored(net, session.conversation_id) == [
        ("user", "remember this"),
        ("assistant", " remember this"),
    ]
    pm = sdk.get_payment_manager()
    before = await pm.get_token_balance(net.addresses.usdc_token)
    settlement = await sm.complete_session(session.session_id)
    assert (settlement.tokens_used, settlement.refund) == (0, 1_000_000)
    assert await pm.get_token_balance(net.addresses.usdc_token) == before + 1_000_000
    job = await pm.get_session_job(session.job_id)
    assert job.status is SessionState.COMPLETED


async def test_context_limit_from_the_reference_host(net, small, sdk):
    """The real host's TOKEN_LIMIT_EXCEEDED frame: ContextLimitError with its numbers,
    before any token; the prompt is kept, and the session goes on."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=small.address, deposit="1")
    long_prompt = " ".join(["word"] * 80)
    with pytest.raises(ContextLimitError) as info:
        await session.send_prompt(long_prompt)
    assert info.value.code == "TOKEN_LIMIT_EXCEEDED"
    assert (info.value.prompt_tokens, info.value.context_window_size) == (
        81,
        64,
    )  # 80 words and 1 for the role
    assert (await session.send_prompt("count to 3")).text == "1 2 3"
    assert await stored(net, session.conversation_id) == [
        ("user", long_prompt),
        ("user", "count to 3"),
        ("assistant", "1 2 3"),
    ]
    settlement = await session.complete()
    assert (settlement.tokens_used, settlement.host_payment) == (1000, 2000)


@pytest.mark.parametrize(
    "timeouts",
    [SessionTimeouts(first_token=0.2), SessionTimeouts(first_token=60, total=0.2)],
    ids=["first_token", "total"],
)
async def test_first_token_deadline_cancels_the_answer_on_the_host(net, slow_start, sdk, timeouts):
    """StreamTimeoutError, and the host is told to stop (it would bill an answer nobody
    reads); its late stream_end is counted, not taken for the next answer's. The same when
    ``total`` is the deadline that passes first (sessions.md's deadline table)."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(
        model=BUILTIN, host=slow_start.address, deposit="1", timeouts=timeouts
    )
    with pytest.raises(StreamTimeoutError, match=r"no first token from the host in 0\.2 s"):
        await session.send_prompt("count to 3")
    session.timeouts = SessionTimeouts()
    # without the cancel the host would still be streaming: STREAM_IN_PROGRESS
    assert (await session.send_prompt("count to 4")).text == "1 2 3 4"
    assert session.tokens_reported == 4  # the cancelled answer ended before its first token
    assert await stored(net, session.conversation_id) == [
        ("user", "count to 3"),
        ("user", "count to 4"),
        ("assistant", "1 2 3 4"),
    ]
    await session.end()


async def test_idle_deadline_after_tokens_stopped(net, scripted, sdk):
    """Tokens flow, then the host goes silent with the connection open: the idle deadline
    (not the 60 s first-token one) raises, the partial answer is kept and the stalled
    answer is cancelled on the host."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(
        model=BUILTIN,
        host=scripted.address,
        deposit="1",
        # the idle deadline: far over the gap between the three chunks the host sends back
        # to back, on a busy machine too
        timeouts=SessionTimeouts(first_token=60, idle=2.0),
    )
    scripted.mode = "stall"
    received: list[str] = []
    with pytest.raises(StreamTimeoutError, match=r"^no token from the host in 2 s$"):
        async with session.stream("and then?") as stream:
            async for chunk in stream:
                received.append(chunk.text)
    assert received == PIECES and session.connected
    scripted.mode = "ok"
    assert (await session.send_prompt("hello again")).text == " hello again"
    assert await stored(net, session.conversation_id) == [
        ("user", "and then?"),
        ("assistant", "The answer is"),
        ("user", "hello again"),
        ("assistant", " hello again"),
    ]
    await session.end()


#: Longer than any deadline below: only a stream that ignores its deadlines reaches it.
HANG_GUARD = 60


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "send_prompt"])
async def test_keep_alives_do_not_hold_the_first_token_deadline(net, scripted, sdk, stream):
    """A host that sends pongs, session_status, empty chunks and response_done but never a
    token: the first-token deadline still passes (it measures tokens, not frames)."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(
        model=BUILTIN,
        host=scripted.address,
        deposit="1",
        timeouts=SessionTimeouts(first_token=0.5, idle=0.5),
    )
    scripted.mode = "keepalive"
    scripted.keepalives = 0

    async def ask() -> None:
        if stream:
            async with session.stream("anyone?") as s:
                async for _ in s:
                    pass
        else:
            await session.send_prompt("anyone?")

    with pytest.raises(StreamTimeoutError, match=r"^no first token from the host in 0\.5 s$"):
        await asyncio.wait_for(ask(), HANG_GUARD)
    assert scripted.keepalives > 0  # the host did keep the connection busy
    scripted.mode = "ok"
    assert (await session.send_prompt("hello again")).text == " hello again"
    await session.end()


async def test_a_stream_cannot_be_iterated_outside_async_with(net, scripted, sdk):
    """`async for` over session.stream() without `async with` is refused before anything is
    sent, so leaving it early cannot keep the session's turn: the next prompt goes."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=scripted.address, deposit="1")
    scripted.mode = "ok"
    with pytest.raises(StreamNotOpenError):
        async for _ in session.stream("one two three"):
            break
    reply = await asyncio.wait_for(session.send_prompt("still free"), HANG_GUARD)
    assert reply.text == " still free"
    assert await stored(net, session.conversation_id) == [
        ("user", "still free"),
        ("assistant", " still free"),
    ]
    await session.end()


async def test_failed_connect_says_what_was_charged(net, scripted, sdk):
    """The host proves tokens before refusing the init: the job is settled at once, the
    error says what it cost, and HostOverclaimError warns of the charge."""
    sm = await sdk.get_session_manager()
    pm = sdk.get_payment_manager()
    usdc = net.addresses.usdc_token
    before = await pm.get_token_balance(usdc)
    scripted.mode = "prove"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(HostError) as info:
            await sm.create_session(model=BUILTIN, host=scripted.address, deposit="1")
    scripted.mode = "ok"
    charged = PROVEN * PRICE // 1000  # PRICE is per 1000 tokens
    notes = "\n".join(info.value.__notes__)
    assert f"proved {PROVEN} tokens" in notes
    assert f"{charged} base units charged, {1_000_000 - charged} base units refunded" in notes
    overclaims = [w for w in caught if issubclass(w.category, HostOverclaimError)]
    assert len(overclaims) == 1 and f"proved {PROVEN} tokens" in str(overclaims[0].message)
    assert await pm.get_token_balance(usdc) == before - charged


async def test_stream_with_history_sends_exactly_that_history(net, scripted, sdk):
    """``stream(prompt, history=...)``: the prompt carries exactly those messages and the
    host starts from them; without ``history`` none go (the host's context goes on);
    ``history=[]`` sends an empty list (the host forgets). The plaintexts the host opened."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=scripted.address, deposit="1")
    scripted.mode = "ok"
    scripted.prompts.clear()
    history = [
        ChatMessage(role="system", content="Be brief."),
        {"role": "user", "content": "I am Ada."},  # a dict is taken as a ChatMessage
        ChatMessage(role="assistant", content="Hi Ada."),
    ]
    async with session.stream("Who am I?", history=history, max_tokens=7) as stream:
        assert [chunk.text async for chunk in stream] == [" Who", " am", " I?"]
    assert (await session.send_prompt("Thanks")).text == " Thanks"
    assert (await session.send_prompt("Again", history=[])).text == " Again"
    assert scripted.prompts == [
        b'{"prompt":"Who am I?","max_tokens":7,"temperature":0.7,"stream":true,"messages":'
        b'[{"role":"system","content":"Be brief."},{"role":"user","content":"I am Ada."},'
        b'{"role":"assistant","content":"Hi Ada."}]}',
        b'{"prompt":"Thanks","max_tokens":4000,"temperature":0.7,"stream":true}',
        b'{"prompt":"Again","max_tokens":4000,"temperature":0.7,"stream":true,"messages":[]}',
    ]
    # S5 keeps the exchanges, not the history given (that is the caller's)
    assert await stored(net, session.conversation_id) == [
        ("user", "Who am I?"),
        ("assistant", " Who am I?"),
        ("user", "Thanks"),
        ("assistant", " Thanks"),
        ("user", "Again"),
        ("assistant", " Again"),
    ]
    with pytest.raises(ValidationError, match=r"^history\[1\] must be a message: role system"):
        session.stream("Who?", history=[history[0], {"role": "tool", "content": "x"}])
    with pytest.raises(ValidationError, match=r"^history must be a list of messages$"):
        session.stream("Who?", history="I am Ada.")  # type: ignore[arg-type]
    assert len(scripted.prompts) == 3  # nothing was sent
    await session.end()


async def test_resume_replays_the_stored_history_with_the_next_prompt_only(net, scripted, sdk):
    """A resumed session sends the conversation from S5 with its first prompt, then none."""
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=scripted.address, deposit="1")
    scripted.mode = "ok"
    assert (await session.send_prompt("one two")).text == " one two"
    await session.end()
    scripted.prompts.clear()
    resumed = await sm.resume_session(session.session_id)
    assert (await resumed.send_prompt("three")).text == " three"
    assert (await resumed.send_prompt("four")).text == " four"
    assert scripted.prompts == [
        b'{"prompt":"three","max_tokens":4000,"temperature":0.7,"stream":true,"messages":'
        b'[{"role":"user","content":"one two"},{"role":"assistant","content":" one two"}]}',
        b'{"prompt":"four","max_tokens":4000,"temperature":0.7,"stream":true}',
    ]
    await resumed.end()
