"""``fabstir proxy`` and ``sdk.chat`` driven by the real ``openai`` package against a host.

A private devnet with a long-lived host process, as in the host tests (no snapshot reverts:
a live host must never see a job id reused).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
from pathlib import Path

import aiohttp
import openai
import pytest

from fabstir_sdk import ConfigError, FabstirSDK, SessionState, ValidationError
from fabstir_sdk._chat_api import Chat
from fabstir_sdk.devnet import Devnet, RunningHost
from fabstir_sdk.host import _toy
from fabstir_sdk.protocol import ChatMessage
from fabstir_sdk.proxy import ProxyServer

from .cli_process import environ, fabstir
from .host_helpers import BUILTIN, PRICE, read_job

pytestmark = pytest.mark.integration

USER, HOST, CLI_USER = 1, 2, 3
ROOT = Path(__file__).resolve().parents[2]
NAME_ANSWER = "Nice to meet you, Ada. I will remember your name."


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start() as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def host(net) -> RunningHost:
    running = await net.start_host(account=HOST, models=[BUILTIN], chain_poll=0.1)
    yield running
    await running.stop()


@pytest.fixture
async def sdk(net, host):
    async with FabstirSDK(net.sdk_config()) as client:
        await client.authenticate(net.accounts[USER].private_key)
        yield client


@pytest.fixture
async def proxy(sdk):
    server = ProxyServer(Chat(sdk, budget="1"))
    await server.start()
    yield server
    await server.stop()


def client_for(server: ProxyServer, api_key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url, api_key=api_key, max_retries=0)


def prompt_tokens(*messages: tuple[str, str]) -> int:
    """What the toy host bills for a prompt with this context (its own tokenizer)."""
    return _toy.count_tokens([ChatMessage(role=r, content=c) for r, c in messages])  # type: ignore[arg-type]


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


async def test_models_and_a_conversation_through_the_openai_client(net, proxy):
    client = client_for(proxy)
    models = await client.models.list()
    assert sorted(m.id for m in models.data) == sorted(net.models)
    assert {m.object for m in models.data} == {"model"}

    first = await client.chat.completions.create(model=BUILTIN, messages=[user("count to 5")])
    assert first.object == "chat.completion" and first.id.startswith("chatcmpl-")
    assert first.model == BUILTIN
    assert len(first.choices) == 1
    assert first.choices[0].message.role == "assistant"
    assert first.choices[0].message.content == "1 2 3 4 5"
    assert first.choices[0].finish_reason == "stop"
    assert first.usage is not None
    assert first.usage.completion_tokens == 5
    assert first.usage.prompt_tokens == prompt_tokens(("user", "count to 5"))
    assert first.usage.total_tokens == first.usage.prompt_tokens + 5
    session_id = first.model_extra["fabstir"]["session_id"]
    assert first.model_extra["fabstir"]["host"] == proxy.chat.sessions[BUILTIN].host.address

    # a new conversation: the host's context is reset to it (else it would hold "count to 5")
    said = await client.chat.completions.create(model=BUILTIN, messages=[user("My name is Ada.")])
    assert said.choices[0].message.content == NAME_ANSWER
    # the next turn: the host already holds the history, only the question is sent
    history = [user("My name is Ada."), assistant(NAME_ANSWER), user("What is my name?")]
    slot = proxy.chat._slots[BUILTIN]
    assert slot.held == [
        ChatMessage(role="user", content="My name is Ada."),
        ChatMessage(role="assistant", content=NAME_ANSWER),
    ]
    asked = await client.chat.completions.create(model=BUILTIN, messages=history)
    assert asked.choices[0].message.content == "Your name is Ada."
    assert asked.usage is not None
    assert asked.usage.prompt_tokens == prompt_tokens(
        ("user", "My name is Ada."), ("assistant", NAME_ANSWER), ("user", "What is my name?")
    )
    # a new conversation forgets Ada; an edited one is replayed as the client wrote it
    fresh = await client.chat.completions.create(model=BUILTIN, messages=[user("What is my name?")])
    assert fresh.choices[0].message.content == "You have not told me your name yet."
    edited = [user("My name is Bob."), assistant("Hi Bob."), user("What is my name?")]
    bob = await client.chat.completions.create(model=BUILTIN, messages=edited)
    assert bob.choices[0].message.content == "Your name is Bob."
    # one paid session answered all of it
    ids = {r.model_extra["fabstir"]["session_id"] for r in (said, asked, fresh, bob)}
    assert ids == {session_id}
    assert list(proxy.chat.sessions) == [BUILTIN]


async def test_streaming_through_the_openai_client(proxy):
    client = client_for(proxy)
    stream = await client.chat.completions.create(
        model=BUILTIN,
        messages=[user("count to 10")],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "1 2 3 4 5 6 7 8 9 10"
    pieces = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert pieces == ["1", *[f" {n}" for n in range(2, 11)]]  # one chunk per host token
    assert [c.choices[0].finish_reason for c in chunks[:-1]] == [None] * 11 + ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.completion_tokens, chunks[-1].usage.prompt_tokens) == (
        10,
        prompt_tokens(("user", "count to 10")),
    )

    # the context carries on across streamed turns too
    stream = await client.chat.completions.create(
        model=BUILTIN,
        messages=[user("count to 10"), assistant(text), user("My name is Ada.")],
        stream=True,
    )
    said = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert said == NAME_ANSWER


async def test_sse_wire_format(proxy):
    body = {"model": BUILTIN, "messages": [user("count to 2")], "stream": True}
    async with (
        aiohttp.ClientSession() as http,
        http.post(proxy.url + "/chat/completions", json=body) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        raw = (await response.read()).decode()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    data = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert [d["choices"][0]["delta"] for d in data] == [
        {"role": "assistant", "content": ""},
        {"role": None, "content": "1"},
        {"role": None, "content": " 2"},
        {"role": None, "content": None},
    ]
    assert [d["choices"][0]["finish_reason"] for d in data] == [None, None, None, "stop"]


async def test_errors_are_openai_errors(net, sdk, proxy):
    client = client_for(proxy)
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(
            model="nobody/none:x.gguf", messages=[user("count to 2")]
        )
    assert info.value.status_code == 404 and info.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model=BUILTIN, messages=[])
    assert bad.value.status_code == 400 and "'messages'" in bad.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(
            model=BUILTIN, messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}]
        )
    assert "role 'tool' is not supported" in bad.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model=BUILTIN, messages=[user("hi")], n=2)
    assert bad.value.body == {
        "message": "'n' must be 1: a session answers one completion at a time",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(proxy.url + "/chat/completions", data=b"{not json") as r:
            assert r.status == 400
            assert (await r.json())["error"]["message"] == "the request body is not JSON"
        async with http.get(proxy.url + "/nothing") as r:
            assert r.status == 404 and (await r.json())["error"]["type"] == "invalid_request_error"
    assert proxy.chat.sessions == {}  # nothing was paid for

    # every host is above the price cap: refused before any transaction
    async with ProxyServer(Chat(sdk, max_price_per_token=PRICE - 1)) as capped:
        with pytest.raises(openai.InternalServerError) as info:
            await client_for(capped).chat.completions.create(
                model=BUILTIN, messages=[user("count to 2")]
            )
        assert info.value.status_code == 503 and info.value.code == "no_host_available"


async def test_api_key_and_binding(sdk):
    async with ProxyServer(Chat(sdk), api_key="s3cret") as server:
        with pytest.raises(openai.AuthenticationError):
            await client_for(server, "wrong").models.list()
        assert len((await client_for(server, "s3cret").models.list()).data) == 3
    with pytest.raises(ConfigError):
        ProxyServer(Chat(sdk), host="0.0.0.0")  # refused before binding


async def test_stop_completes_the_sessions(net, sdk):
    server = ProxyServer(Chat(sdk, budget="1"))
    await server.start()
    client = client_for(server)
    answers = []
    for prompt in ("count to 20", "count to 30"):
        answers.append(await client.chat.completions.create(model=BUILTIN, messages=[user(prompt)]))
    job_id = int(answers[0].model_extra["fabstir"]["session_id"])
    settlements = await server.stop()
    assert [s.job_id for s in settlements] == [job_id]
    (settlement,) = settlements
    assert settlement.tokens_used == 1000  # 50 reported, the first proof is padded to 1000
    assert (settlement.host_payment, settlement.refund) == (2000, 1_000_000 - 2000)
    job = await read_job(net, job_id)
    assert job.status is SessionState.COMPLETED
    with pytest.raises(openai.APIConnectionError):
        await client.models.list()  # the server is gone


async def test_in_process_chat_api(net, sdk):
    chat = sdk.chat
    assert sdk.chat is chat
    completion = await chat.completions.create(model=BUILTIN, messages=[user("count to 3")])
    assert completion.choices[0].message.content == "1 2 3"
    assert completion.usage.completion_tokens == 3
    async with await chat.completions.create(
        model=BUILTIN,
        messages=[user("count to 3"), assistant("1 2 3"), user("My name is Ada.")],
        stream=True,
    ) as stream:
        text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == NAME_ANSWER
    # leaving a stream early cancels the answer; the session goes on
    stream = await chat.completions.create(
        model=BUILTIN, messages=[user("count to 500")], stream=True
    )
    async with stream:
        async for chunk in stream:
            if chunk.choices[0].delta.content == " 3":
                break
    again = await chat.completions.create(model=BUILTIN, messages=[user("What is my name?")])
    assert again.choices[0].message.content == "You have not told me your name yet."
    with pytest.raises(ValidationError):
        await chat.completions.create(model=BUILTIN, messages=[assistant("no user message")])
    (settlement,) = await chat.aclose()
    assert settlement.job_id == int(completion.fabstir.session_id)
    assert settlement.tokens_used == 1000
    with pytest.raises(Exception, match="closed"):
        await chat.completions.create(model=BUILTIN, messages=[user("count to 3")])


async def test_cli_settles_on_sigterm(net, host, tmp_path):
    env = environ(FABSTIR_PRIVATE_KEY=net.accounts[CLI_USER].private_key)
    argv = ["proxy", "--manifest", str(net.manifest_path), "--port", "0", "--json"]
    argv += ["--storage-dir", str(tmp_path), "--budget", "2"]
    proc = await fabstir(*argv, env=env)
    try:
        assert proc.stdout is not None
        ready = json.loads(await proc.stdout.readline())
        assert ready["event"] == "ready" and ready["url"].startswith("http://127.0.0.1:")
        client = openai.AsyncOpenAI(base_url=ready["url"], api_key="unused", max_retries=0)
        reply = await client.chat.completions.create(model=BUILTIN, messages=[user("count to 4")])
        assert reply.choices[0].message.content == "1 2 3 4"
        proc.send_signal(signal.SIGTERM)
        settled = json.loads(await proc.stdout.readline())
        assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    job_id = int(reply.model_extra["fabstir"]["session_id"])
    assert settled["event"] == "settled" and settled["job_id"] == job_id
    assert (settled["tokens_used"], settled["host_payment"]) == (1000, 2000)
    assert settled["refund"] == 2_000_000 - 2000
    assert (await read_job(net, job_id)).status is SessionState.COMPLETED


async def test_docs_example_runs(proxy):
    """The first example of docs/proxy.md, as written (the synchronous openai client)."""
    text = (ROOT / "docs" / "proxy.md").read_text()
    code = text.split("```python\n")[1].split("```")[0]
    code = code.replace("http://127.0.0.1:8000/v1", proxy.url)
    out = io.StringIO()

    def run() -> None:
        with contextlib.redirect_stdout(out):
            exec(code, {})  # our own docs

    await asyncio.to_thread(run)
    assert out.getvalue() == "1 2 3 4 5\n1 2 3 4 5"


async def test_concurrent_conversations_share_the_session_in_turn(proxy):
    client = client_for(proxy)
    ada = [user("My name is Ada."), assistant(NAME_ANSWER), user("What is my name?")]
    bob = [user("My name is Bob."), assistant("Hi Bob."), user("What is my name?")]
    counted = [user("count to 10")]
    replies = await asyncio.gather(
        *(
            client.chat.completions.create(model=BUILTIN, messages=m, max_tokens=t)
            for m, t in ((ada, None), (bob, None), (counted, 3))
        )
    )
    assert [r.choices[0].message.content for r in replies] == [
        "Your name is Ada.",
        "Your name is Bob.",
        "1 2 3",
    ]
    assert [r.choices[0].finish_reason for r in replies] == ["stop", "stop", "length"]
    assert len({r.model_extra["fabstir"]["session_id"] for r in replies}) == 1


async def test_a_host_dying_mid_stream(net, sdk):
    """The error reaches the client as an SSE error event; the dead host's job is settled
    on stop with nothing proven: the whole deposit comes back. (Last: it kills a host.)"""
    cheap = 1000  # only this host is within the proxy's price cap
    victim = await net.start_host(
        account=4, models=[BUILTIN], price_per_token=cheap, token_delay=0.02, chain_poll=0.1
    )
    server = ProxyServer(Chat(sdk, budget="1", max_price_per_token=cheap))
    await server.start()
    client = client_for(server)
    try:
        # a client that leaves a stream early: the answer is cancelled on the host
        body = {"model": BUILTIN, "messages": [user("count to 300")], "stream": True}
        async with (
            aiohttp.ClientSession() as http,
            http.post(server.url + "/chat/completions", json=body) as response,
        ):
            assert (await response.content.readline()).startswith(b"data: {")
        session = server.chat.sessions[BUILTIN]
        assert session.host.address == victim.address
        again = await client.chat.completions.create(
            model=BUILTIN, messages=[user("count to 3")], max_tokens=3
        )
        assert again.choices[0].message.content == "1 2 3"
        assert server.chat.sessions[BUILTIN] is session
        assert 3 < session.tokens_reported < 100  # 300 would take 6 s: it was cut short

        stream = await client.chat.completions.create(
            model=BUILTIN, messages=[user("count to 300")], stream=True
        )
        got = []
        with pytest.raises(openai.APIError) as info:
            async for chunk in stream:
                got.append(chunk.choices[0].delta.content)
                if len(got) == 4:
                    victim.kill()
        assert got[:4] == ["", "1", " 2", " 3"]
        assert "the host closed the connection" in info.value.message
        assert server.chat.sessions == {}  # put aside: the next request would open another
        with pytest.raises(openai.InternalServerError) as unavailable:
            await client.chat.completions.create(model=BUILTIN, messages=[user("count to 2")])
        assert unavailable.value.status_code == 503
    finally:
        settlements = await server.stop()
        victim.kill()
    (settlement,) = settlements
    assert settlement.job_id == session.job_id
    assert (settlement.tokens_used, settlement.host_payment, settlement.refund) == (
        0,
        0,
        1_000_000,
    )
