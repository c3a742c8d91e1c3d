"""The reference host node: what ``fabstir host run`` runs.

It speaks the upstream host protocol on one port (HTTP and the ``/v1/ws`` WebSocket),
serves models through a :class:`Backend` (the built-in toy model or any OpenAI-compatible
server), checks every session on chain before serving it, bills through proofs of work and
settles when the client leaves. Importing :mod:`fabstir_sdk` does not import this package.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._backends import Backend, BackendError, BuiltinBackend, Generation, OpenAIBackend
    from ._checkpoints import (
        Checkpoint,
        CheckpointRefs,
        CheckpointWriter,
        S5Checkpoints,
        UnstoredCheckpoints,
    )
    from ._config import HostConfig
    from ._keys import HOST_E2EE_MESSAGE, E2EEKey
    from ._ledger import MIN_CLAIM, Ledger
    from ._node import HostNode, make_backend

_WHERE = {
    "Backend": "_backends",
    "BackendError": "_backends",
    "BuiltinBackend": "_backends",
    "Generation": "_backends",
    "OpenAIBackend": "_backends",
    "Checkpoint": "_checkpoints",
    "CheckpointRefs": "_checkpoints",
    "CheckpointWriter": "_checkpoints",
    "S5Checkpoints": "_checkpoints",
    "UnstoredCheckpoints": "_checkpoints",
    "HostConfig": "_config",
    "E2EEKey": "_keys",
    "HOST_E2EE_MESSAGE": "_keys",
    "MIN_CLAIM": "_ledger",
    "Ledger": "_ledger",
    "HostNode": "_node",
    "make_backend": "_node",
}


def __getattr__(name: str) -> Any:
    """Load the server on first use: ``fabstir --help`` parses host arguments without it."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)


__all__ = [
    "HOST_E2EE_MESSAGE",
    "MIN_CLAIM",
    "Backend",
    "BackendError",
    "BuiltinBackend",
    "Checkpoint",
    "CheckpointRefs",
    "CheckpointWriter",
    "E2EEKey",
    "Generation",
    "HostConfig",
    "HostNode",
    "Ledger",
    "OpenAIBackend",
    "S5Checkpoints",
    "UnstoredCheckpoints",
    "make_backend",
]
