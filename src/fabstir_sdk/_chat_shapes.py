"""OpenAI's chat shapes, as the in-process chat API returns them and ``fabstir proxy`` sends
them (``chat.completion``, ``chat.completion.chunk``, the model list)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionMessage",
    "Choice",
    "ChoiceDelta",
    "ChunkChoice",
    "CompletionUsage",
    "FabstirInfo",
    "ModelList",
    "ModelObject",
]


class _Shape(BaseModel):
    model_config = ConfigDict(frozen=True)


class ChatCompletionMessage(_Shape):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(_Shape):
    index: int = 0
    message: ChatCompletionMessage
    finish_reason: str
    logprobs: None = None


class CompletionUsage(_Shape):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FabstirInfo(_Shape):
    """Our extension (OpenAI clients ignore it): which paid session answered."""

    session_id: str
    host: str


class ChatCompletion(_Shape):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    system_fingerprint: None = None
    fabstir: FabstirInfo


class ChoiceDelta(_Shape):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(_Shape):
    index: int = 0
    delta: ChoiceDelta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(_Shape):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    system_fingerprint: None = None
    fabstir: FabstirInfo | None = None


class ModelObject(_Shape):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "fabstir"


class ModelList(_Shape):
    object: Literal["list"] = "list"
    data: list[ModelObject]
