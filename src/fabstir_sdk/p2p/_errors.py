"""Turn what trio and py-libp2p raise into the SDK's typed errors.

trio wraps errors from nurseries in (nested) ExceptionGroups, and py-libp2p raises its own
classes or plain ``Exception``s with a message. Callers of the SDK see one
:class:`~fabstir_sdk.errors.P2PError` subclass instead, with the original chained.
"""

from __future__ import annotations

from ..errors import (
    FabstirError,
    P2PError,
    P2PNodeClosedError,
    P2PProtocolError,
    P2PTimeoutError,
    PeerUnreachableError,
)

__all__ = ["leaf", "translate"]

# Matched by class name so this module needs neither trio nor libp2p to import.
_TIMEOUT = {"TooSlowError"}
_UNREACHABLE = {
    "SwarmException",
    "SwarmDialAllFailedError",
    "OpenConnectionError",
    "ConnectionFailure",
    "HandshakeFailure",
    "SecurityUpgradeFailure",
    "MuxerUpgradeFailure",
    "NoiseFailure",
    "UpgradeFailure",
    "MuxedConnError",
}
_STREAM = {
    "StreamError",
    "StreamEOF",
    "StreamReset",
    "StreamClosed",
    "StreamFailure",
    "MuxedStreamError",
    "MuxedStreamEOF",
    "MuxedStreamReset",
    "MuxedStreamClosed",
    "MultiselectClientError",
    "ProtocolNotSupportedError",
    "IncompleteReadError",
    "ConnectionClosedError",
}
_CLOSED = {"RunFinishedError", "ClosedResourceError", "BrokenResourceError"}


def leaf(exc: BaseException) -> BaseException:
    """The most telling exception inside (nested) exception groups.

    A typed SDK error wins over anything else, then any non-cancellation error; a group of
    only cancellations yields its first one.
    """
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = [leaf(e) for e in exc.exceptions]
    for candidate in leaves:
        if isinstance(candidate, FabstirError):
            return candidate
    for candidate in leaves:
        if type(candidate).__name__ != "Cancelled":
            return candidate
    return leaves[0]


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def translate(exc: BaseException) -> FabstirError:
    """A :class:`FabstirError` for ``exc`` (returned, not raised; the cause is chained)."""
    inner = leaf(exc)
    if isinstance(inner, FabstirError):
        return inner
    names = _names(inner)
    message = str(inner) or type(inner).__name__
    error: P2PError
    if names & _TIMEOUT or isinstance(inner, TimeoutError):
        error = P2PTimeoutError(f"the peer did not answer in time ({message})")
    elif names & _UNREACHABLE or isinstance(inner, ConnectionError):
        error = PeerUnreachableError(f"cannot reach the peer: {message}")
    elif names & _STREAM:
        error = P2PProtocolError(f"the stream failed: {type(inner).__name__}: {message}")
    elif names & _CLOSED or type(inner).__name__ == "Cancelled":
        error = P2PNodeClosedError(f"the P2P node is not running ({type(inner).__name__})")
    else:
        error = P2PError(f"libp2p failed: {type(inner).__name__}: {message}")
    error.__cause__ = inner
    return error
