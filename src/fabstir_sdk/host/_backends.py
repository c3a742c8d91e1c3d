"""Inference backends behind one small interface.

A backend turns a conversation into a stream of text pieces (:meth:`Backend.stream`) and
fills a :class:`Generation` with the finish reason and token counts as it goes. Two ship:
``builtin`` (the toy model, with pacing) and ``openai`` (any OpenAI-compatible server:
llama.cpp, vLLM, Ollama, ..., streamed through httpx).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from ..chain.transport import redact_url
from ..errors import BackendError, ProtocolError
from ..protocol import ChatMessage, load_json
from . import _toy

__all__ = [
    "Backend",
    "BackendError",
    "BuiltinBackend",
    "Generation",
    "OpenAIBackend",
]


@dataclass
class Generation:
    """What a stream produced, filled in while it runs and complete when it ends.

    ``completion_tokens`` counts the pieces streamed unless the backend reports its own
    count (an OpenAI-compatible server's ``usage``).
    """

    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Backend(ABC):
    """One model server. ``context_window`` bounds prompt plus answer, in tokens."""

    name: str = ""
    context_window: int = 8192

    @abstractmethod
    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Prompt tokens of ``messages`` (exact for builtin, an estimate for openai)."""

    @abstractmethod
    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        result: Generation,
    ) -> AsyncIterator[str]:
        """Stream the answer's pieces; ``result`` holds the outcome when it ends."""

    async def aclose(self) -> None:  # noqa: B027  (optional: most backends hold nothing)
        """Release connections."""


class BuiltinBackend(Backend):
    """The toy model (``_toy``), with pacing.

    ``token_delay`` seconds between tokens (0: as fast as possible, yielding to the event
    loop every ``yield_every`` tokens) and ``first_token_delay`` before the first.
    """

    name = "builtin"

    def __init__(
        self,
        *,
        token_delay: float = 0.0,
        first_token_delay: float = 0.0,
        context_window: int = 8192,
        yield_every: int = 32,
    ) -> None:
        if token_delay < 0 or first_token_delay < 0:
            raise ValueError("delays must be >= 0")
        self.token_delay = token_delay
        self.first_token_delay = first_token_delay
        self.context_window = context_window
        self._yield_every = max(1, yield_every)

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return _toy.count_tokens(messages)

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        result: Generation,
    ) -> AsyncIterator[str]:
        result.prompt_tokens = self.count_tokens(messages)
        result.finish_reason = "stop"
        if self.first_token_delay:
            await asyncio.sleep(self.first_token_delay)
        for produced, token in enumerate(_toy.reply_tokens(messages)):
            if produced == max_tokens:
                result.finish_reason = "length"
                break
            if produced and self.token_delay:
                await asyncio.sleep(self.token_delay)
            elif produced % self._yield_every == self._yield_every - 1:
                await asyncio.sleep(0)  # let the loop breathe when streaming flat out
            result.completion_tokens = produced + 1
            yield token


class OpenAIBackend(Backend):
    """Any OpenAI-compatible ``/v1/chat/completions`` server, streamed (SSE) through httpx."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        context_window: int = 8192,
        timeout: float = 300.0,
    ) -> None:
        import httpx

        base = base_url.rstrip("/")
        self.url = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
        self._shown = redact_url(self.url)  # for reprs and messages: no credentials
        self.model = model
        self.context_window = context_window
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=10.0), headers=headers
        )

    def __repr__(self) -> str:
        return f"OpenAIBackend(url={self._shown!r}, model={self.model!r})"

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """An estimate (about four characters a token); the server reports the truth."""
        return sum(len(m.content) // 4 + 4 for m in messages)

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float,
        result: Generation,
    ) -> AsyncIterator[str]:
        import httpx

        body = {
            "model": self.model,
            "messages": [m.to_wire() for m in messages],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        result.prompt_tokens = self.count_tokens(messages)
        pieces, usage = 0, None
        try:
            async with self._client.stream("POST", self.url, json=body) as response:
                if response.status_code >= 400:
                    detail = (await response.aread())[:200].decode("utf-8", "replace")
                    raise BackendError(f"model server answered {response.status_code}: {detail}")
                async for line in response.aiter_lines():
                    event = _sse_data(line)
                    if event is None:
                        continue
                    if event == "[DONE]":
                        break
                    chunk = _json(event)
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content") or choice.get("text")
                        if choice.get("finish_reason"):
                            result.finish_reason = str(choice["finish_reason"])
                        if text:
                            pieces += 1
                            result.completion_tokens = pieces
                            yield str(text)
        except httpx.HTTPError as exc:
            why = type(exc).__name__
            raise BackendError(f"model server at {self._shown} failed: {why}") from exc
        if isinstance(usage, dict):
            result.prompt_tokens = int(usage.get("prompt_tokens") or result.prompt_tokens)
            result.completion_tokens = int(usage.get("completion_tokens") or pieces)

    async def aclose(self) -> None:
        await self._client.aclose()


def _sse_data(line: str) -> str | None:
    if not line.startswith("data:"):
        return None
    return line[5:].strip()


def _json(text: str) -> dict[str, Any]:
    try:
        value = load_json(text)
    except ProtocolError:
        raise BackendError("model server sent an event that is not JSON") from None
    if not isinstance(value, dict):
        raise BackendError("model server sent an event that is not a JSON object")
    return value
