"""SDK errors as OpenAI error bodies with HTTP status codes (sans-I/O).

OpenAI clients read ``{"error": {"message", "type", "param", "code"}}`` and pick their
exception class from the status, so each failure gets the status an OpenAI client expects:
bad input 400, unknown model 404, money 402/429, an agent its owner has not authorised 403,
host trouble 502/504, no host 503.
"""

from __future__ import annotations

from typing import Any

from ..errors import (
    ChainStateError,
    ContextLimitError,
    DelegateNotAuthorizedError,
    FabstirError,
    HostError,
    InsufficientAllowanceError,
    InsufficientBalanceError,
    NoHostAvailableError,
    PriceAboveMaximumError,
    ProtocolError,
    SessionClosedError,
    SessionError,
    StreamTimeoutError,
    ValidationError,
)

__all__ = ["error_body", "openai_error"]


def error_body(
    message: str, type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def openai_error(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` for ``exc``; anything not a FabstirError is an internal error."""
    if not isinstance(exc, FabstirError):
        return 500, error_body("internal error in the Fabstir proxy", "server_error")
    message = str(exc)
    if isinstance(exc, NoHostAvailableError):
        if set(exc.reasons) <= {"missing_model"}:
            return 404, error_body(message, "invalid_request_error", "model_not_found", "model")
        return 503, error_body(message, "server_error", "no_host_available")
    if isinstance(exc, PriceAboveMaximumError):
        return 503, error_body(message, "server_error", "price_above_maximum")
    if isinstance(exc, InsufficientBalanceError | InsufficientAllowanceError):
        return 402, error_body(message, "insufficient_quota", "insufficient_funds")
    if isinstance(exc, DelegateNotAuthorizedError):
        return 403, error_body(message, "permission_error", "delegate_not_authorized")
    if isinstance(exc, ValidationError | ChainStateError):
        return 400, error_body(message, "invalid_request_error")
    if isinstance(exc, ContextLimitError):
        return 400, error_body(message, "invalid_request_error", "context_length_exceeded")
    if isinstance(exc, HostError):
        if exc.code == "DEPOSIT_EXHAUSTED":
            return 429, error_body(message, "insufficient_quota", "insufficient_quota")
        return 502, error_body(message, "server_error", exc.code.lower())
    if isinstance(exc, StreamTimeoutError):
        return 504, error_body(message, "server_error", "host_timeout")
    if isinstance(exc, SessionClosedError):
        return 503, error_body(message, "server_error", "shutting_down")
    if isinstance(exc, SessionError | ProtocolError):
        return 502, error_body(message, "server_error", "host_unavailable")
    return 500, error_body(message, "server_error")
