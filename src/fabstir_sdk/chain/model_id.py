"""Model identifiers: ``keccak256(repo + "/" + file)`` as a 0x-prefixed bytes32 hex string."""

from __future__ import annotations

import re
from functools import lru_cache

from eth_utils.crypto import keccak

from ..errors import ValidationError

__all__ = ["model_id", "split_model"]

_BYTES32 = re.compile(r"0x[0-9a-fA-F]{64}")


def split_model(model: str) -> tuple[str, str]:
    """``"repo:file"`` or ``"org/repo/file"`` -> ``(repo, file)``."""
    if ":" in model:
        repo, _, file = model.partition(":")
    else:
        repo, _, file = model.rpartition("/")
    if not repo or not file:
        raise ValidationError(
            f"model must be 'repo:file', 'repo/file' or a 0x bytes32 id, got {model!r}"
        )
    return repo, file


def model_id(model: str) -> str:
    """The on-chain id of ``model`` (``"repo:file"``, ``"repo/file"`` or an id already)."""
    if not isinstance(model, str):
        raise ValidationError(f"model must be a string, got {type(model).__name__}")
    return _model_id(model)


@lru_cache(maxsize=256)  # hashed again for every session otherwise
def _model_id(model: str) -> str:
    if _BYTES32.fullmatch(model):
        return model.lower()
    if model.startswith("0x") and ":" not in model and "/" not in model:
        raise ValidationError(f"model id must be 0x followed by 64 hex digits, got {model!r}")
    repo, file = split_model(model)
    return "0x" + keccak(f"{repo}/{file}".encode()).hex()
