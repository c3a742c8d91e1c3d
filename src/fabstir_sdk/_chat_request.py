"""An OpenAI chat request (``/v1/chat/completions``), checked before anything is paid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .errors import ValidationError
from .protocol import ChatMessage

__all__ = ["ChatRequest", "parse_request"]

_ROLES: dict[str, Literal["system", "user", "assistant"]] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
}
_UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "audio", "prediction")


@dataclass(frozen=True)
class ChatRequest:
    """A checked ``/v1/chat/completions`` request."""

    model: str
    messages: tuple[ChatMessage, ...]
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    temperature: float | None = None


def parse_request(body: Any) -> ChatRequest:
    """Check an OpenAI chat request (a JSON object); :class:`ValidationError` says what is wrong.

    Parameters we cannot honour (tools, ``n`` > 1) are refused; sampling knobs the hosts do
    not take (``top_p``, ``user``, ...) are ignored, as OpenAI-compatible servers do.
    """
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ValidationError("'model' must be a non-empty string")
    for name in _UNSUPPORTED:
        if body.get(name) is not None:
            raise ValidationError(f"'{name}' is not supported by Fabstir hosts")
    if body.get("n") not in (None, 1):
        raise ValidationError("'n' must be 1: a session answers one completion at a time")
    messages = _messages(body.get("messages"))
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise ValidationError("'stream' must be true or false")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ValidationError("'stream_options' must be an object")
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise ValidationError("'stream_options.include_usage' must be true or false")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise ValidationError("'max_tokens' must be a positive integer")
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 2
    ):
        raise ValidationError("'temperature' must be a number from 0 to 2")
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        temperature=None if temperature is None else float(temperature),
    )


def _messages(raw: Any) -> tuple[ChatMessage, ...]:
    if not isinstance(raw, list) or not raw:
        raise ValidationError("'messages' must be a non-empty list")
    out = []
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise ValidationError(f"messages[{i}] must be an object")
        role = _ROLES.get(str(message.get("role")))
        if role is None:
            raise ValidationError(
                f"messages[{i}].role {message.get('role')!r} is not supported "
                "(system, developer, user or assistant)"
            )
        out.append(ChatMessage(role=role, content=_text(message.get("content"), i)))
    if out[-1].role != "user" or not out[-1].content:
        raise ValidationError("the last message must be a non-empty user message")
    return tuple(out)


def _text(content: Any, i: int) -> str:
    """A message's text: a string, or OpenAI's list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return "".join(p["text"] for p in content)
    raise ValidationError(f"messages[{i}].content must be text (a string or text parts)")
