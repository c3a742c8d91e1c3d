"""The ``openai`` backend against a tiny OpenAI-compatible server started here, on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from fabstir_sdk.errors import HostError
from fabstir_sdk.host import BackendError, Generation, OpenAIBackend
from fabstir_sdk.protocol import ChatMessage, StreamEnd

from .host_helpers import Client, open_job

pytestmark = pytest.mark.integration

ACCOUNT = 7


class FakeOpenAI:
    """``POST /v1/chat/completions`` streaming a scripted answer word by word (SSE).

    The answer names the turn and echoes the last user message; ``usage`` reports one more
    completion token than pieces sent, as real servers may (a piece can hold two tokens).
    A prompt of ``"fail"`` gets a 500.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def answer(messages: list[dict[str, str]]) -> list[str]:
        turn = sum(1 for m in messages if m["role"] == "user")
        return ["Turn", f" {turn}:", " you", " said", f" {messages[-1]['content']}"]

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        if body["messages"][-1]["content"] == "fail":
            return web.json_response({"error": {"message": "model crashed"}}, status=500)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        pieces = self.answer(body["messages"])[: body["max_tokens"]]

        async def send(obj: object) -> None:
            await response.write(b"data: " + json.dumps(obj).encode() + b"\n\n")

        await response.write(b": keep-alive comment\n\n")
        for piece in pieces:
            await send({"choices": [{"index": 0, "delta": {"content": piece}}]})
        await send({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        await send(
            {
                "choices": [],
                "usage": {"prompt_tokens": 11, "completion_tokens": len(pieces) + 1},
            }
        )
        await response.write(b"data: [DONE]\n\n")
        return response


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    yield server
    await server.stop()


async def test_backend_streams_an_openai_compatible_server(fake_openai):
    backend = OpenAIBackend(fake_openai.url + "/v1", "fake-model", api_key="sk-test")
    try:
        result = Generation()
        messages = [ChatMessage(role="user", content="hello")]
        pieces = [
            p async for p in backend.stream(messages, max_tokens=64, temperature=0.2, result=result)
        ]
        assert pieces == ["Turn", " 1:", " you", " said", " hello"]
        assert (result.finish_reason, result.prompt_tokens, result.completion_tokens) == (
            "stop",
            11,
            6,
        )
        (sent,) = fake_openai.requests
        assert sent == {
            "model": "fake-model",
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 64,
            "temperature": 0.2,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with pytest.raises(BackendError, match="answered 500"):
            fail = [ChatMessage(role="user", content="fail")]
            async for _ in backend.stream(fail, max_tokens=8, temperature=0, result=Generation()):
                pass
        assert "sk-test" not in repr(backend)
    finally:
        await backend.aclose()
    unreachable = OpenAIBackend("http://127.0.0.1:9", "m")  # discard port: nothing listens
    try:
        with pytest.raises(BackendError, match="failed: ConnectError"):
            async for _ in unreachable.stream(
                [ChatMessage(role="user", content="x")],
                max_tokens=1,
                temperature=0,
                result=Generation(),
            ):
                pass
    finally:
        await unreachable.aclose()


async def test_host_serves_sessions_through_the_openai_backend(devnet, fake_openai):
    host = await devnet.start_host(
        account=ACCOUNT,
        backend="openai",
        openai_base_url=fake_openai.url,
        openai_model="fake-model",
    )
    try:
        job_id = await open_job(devnet, host.address)
        client = await Client.session(devnet, host, job_id)
        text, end, chunks = await client.ask("hello")
        assert text == "Turn 1: you said hello"
        assert [c.text for c in chunks[:-1]] == ["Turn", " 1:", " you", " said", " hello"]
        # billed by the server's count (6), which is more than the pieces streamed (5)
        assert (end.tokens_used, end.finish_reason) == (6, "stop")
        assert end.usage is not None
        assert (end.usage.prompt_tokens, end.usage.completion_tokens) == (11, 6)
        text, _, _ = await client.ask("again")
        assert text == "Turn 2: you said again"
        assert fake_openai.requests[-1]["messages"] == [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "Turn 1: you said hello"},
            {"role": "user", "content": "again"},
        ]
        await client.ws.send(client.proto.prompt_frame("fail"))
        with pytest.raises(HostError) as info:
            await client.next()
        assert info.value.code == "INFERENCE_FAILED"
        # the client's core ends the answer at the error and only counts the stream_end
        # that follows: read that frame raw
        end = StreamEnd.model_validate_json(await client.ws.recv())
        assert (end.reason, end.tokens_used) == ("error", 0)
        await client.close()
    finally:
        await host.stop()
