"""Request checks and error mapping of the chat API and proxy (no devnet needed)."""

from __future__ import annotations

import pytest

from fabstir_sdk import ValidationError
from fabstir_sdk._chat_request import ChatRequest, parse_request
from fabstir_sdk.errors import (
    ContextLimitError,
    DelegateNotAuthorizedError,
    HostError,
    HostUnreachableError,
    InsufficientBalanceError,
    NoHostAvailableError,
    PriceAboveMaximumError,
    SessionClosedError,
    StreamTimeoutError,
)
from fabstir_sdk.protocol import ChatMessage
from fabstir_sdk.proxy._errors import openai_error

M = "fabstir/builtin:toy-1.gguf"


def test_a_full_request_is_parsed():
    body = {
        "model": M,
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "count "}, {"type": "text", "text": "to 3"}],
            },
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 7,
        "temperature": 1,
        "top_p": 0.5,  # ignored
        "user": "someone",  # ignored
    }
    assert parse_request(body) == ChatRequest(
        model=M,
        messages=(
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="count to 3"),
        ),
        stream=True,
        include_usage=True,
        max_tokens=7,
        temperature=1.0,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": ""}, "'model' must be a non-empty string"),
        ({"messages": "hi"}, "'messages' must be a non-empty list"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content must be text"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "must be text"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "the last message must be"),
        ({"messages": [{"role": "user", "content": ""}]}, "the last message must be"),
        ({"tools": [{"type": "function"}]}, "'tools' is not supported"),
        ({"n": 3}, "'n' must be 1"),
        ({"stream": "yes"}, "'stream' must be true or false"),
        ({"stream_options": {"include_usage": 1}}, "include_usage' must be true or false"),
        ({"max_tokens": 0}, "'max_tokens' must be a positive integer"),
        ({"max_tokens": True}, "'max_tokens' must be a positive integer"),
        ({"temperature": 2.5}, "'temperature' must be a number from 0 to 2"),
        ({"temperature": "hot"}, "'temperature' must be a number from 0 to 2"),
    ],
)
def test_bad_requests_are_refused(change, message):
    body = {"model": M, "messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_request(body)
    with pytest.raises(ValidationError, match="JSON object"):
        parse_request([body])


@pytest.mark.parametrize(
    ("exc", "status", "kind", "code"),
    [
        (
            NoHostAvailableError("none", {"missing_model": 2}),
            404,
            "invalid_request_error",
            "model_not_found",
        ),
        (
            NoHostAvailableError("none", {"too_expensive": 1}),
            503,
            "server_error",
            "no_host_available",
        ),
        (PriceAboveMaximumError(3000, 2000), 503, "server_error", "price_above_maximum"),
        (InsufficientBalanceError(10, 1, "USDC"), 402, "insufficient_quota", "insufficient_funds"),
        (ValidationError("bad"), 400, "invalid_request_error", None),
        (
            DelegateNotAuthorizedError("0x" + "11" * 20, "0x" + "22" * 20),
            403,
            "permission_error",
            "delegate_not_authorized",
        ),
        (
            ContextLimitError("TOKEN_LIMIT_EXCEEDED", "long"),
            400,
            "invalid_request_error",
            "context_length_exceeded",
        ),
        (
            HostError("DEPOSIT_EXHAUSTED", "used up"),
            429,
            "insufficient_quota",
            "insufficient_quota",
        ),
        (HostError("INFERENCE_FAILED", "oops"), 502, "server_error", "inference_failed"),
        (StreamTimeoutError("slow"), 504, "server_error", "host_timeout"),
        (SessionClosedError("closed"), 503, "server_error", "shutting_down"),
        (HostUnreachableError("gone"), 502, "server_error", "host_unavailable"),
    ],
)
def test_errors_map_to_openai_statuses(exc, status, kind, code):
    got_status, body = openai_error(exc)
    assert (got_status, body["error"]["type"], body["error"]["code"]) == (status, kind, code)
    assert body["error"]["message"] == str(exc)


def test_an_unexpected_error_does_not_leak_its_text():
    status, body = openai_error(RuntimeError("secret detail"))
    assert status == 500 and "secret" not in body["error"]["message"]
