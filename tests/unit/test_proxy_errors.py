"""docs/proxy.md's error table, row by row: the status, OpenAI ``type`` and ``code`` the
proxy answers for each error (proxy/_errors.py, a pure function: no server needed)."""

from __future__ import annotations

import pytest

from fabstir_sdk import (
    ContextLimitError,
    DelegateNotAuthorizedError,
    HostError,
    HostNotActiveError,
    HostUnreachableError,
    InsufficientAllowanceError,
    InsufficientBalanceError,
    NoHostAvailableError,
    PriceAboveMaximumError,
    SessionClosedError,
    StreamTimeoutError,
    ValidationError,
)
from fabstir_sdk.proxy._errors import openai_error

ADDRESS = "0x" + "ab" * 20


@pytest.mark.parametrize(
    ("exc", "status", "kind", "code"),
    [
        (ValidationError("bad"), 400, "invalid_request_error", None),
        (HostNotActiveError("inactive"), 400, "invalid_request_error", None),
        (
            ContextLimitError("TOKEN_LIMIT_EXCEEDED", "too long"),
            400,
            "invalid_request_error",
            "context_length_exceeded",
        ),
        (InsufficientBalanceError(5, 2, "USDC"), 402, "insufficient_quota", "insufficient_funds"),
        (
            InsufficientAllowanceError(5, 2, "USDC"),
            402,
            "insufficient_quota",
            "insufficient_funds",
        ),
        (
            DelegateNotAuthorizedError(ADDRESS, ADDRESS),
            403,
            "permission_error",
            "delegate_not_authorized",
        ),
        (
            NoHostAvailableError("none", {"missing_model": 2}),
            404,
            "invalid_request_error",
            "model_not_found",
        ),
        (
            HostError("DEPOSIT_EXHAUSTED", "used up"),
            429,
            "insufficient_quota",
            "insufficient_quota",
        ),
        (HostError("INFERENCE_FAILED", "crashed"), 502, "server_error", "inference_failed"),
        (HostUnreachableError("gone"), 502, "server_error", "host_unavailable"),
        (NoHostAvailableError("none", {"unhealthy": 1}), 503, "server_error", "no_host_available"),
        (PriceAboveMaximumError(3000, 2000), 503, "server_error", "price_above_maximum"),
        (SessionClosedError("closed"), 503, "server_error", "shutting_down"),
        (StreamTimeoutError("slow"), 504, "server_error", "host_timeout"),
    ],
)
def test_each_error_row(exc, status, kind, code):
    got_status, body = openai_error(exc)
    assert (got_status, body["error"]["type"], body["error"]["code"]) == (status, kind, code)
    assert body["error"]["message"] == str(exc)
