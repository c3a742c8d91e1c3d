"""Compiled contract artifacts (ABI + bytecode) committed under contracts/abi/."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from .._resources import contracts_path

__all__ = ["load_abi", "load_artifact"]


@cache
def load_artifact(name: str) -> dict[str, Any]:
    """The artifact ``{"contractName", "abi", "bytecode"}`` of contract ``name``.

    Test-only contracts live in ``contracts/abi/test/``; pass ``"test/<Name>"`` for those.
    """
    path = contracts_path("abi", f"{name}.json")
    with path.open() as fh:
        artifact: dict[str, Any] = json.load(fh)
    return artifact


def load_abi(name: str) -> list[dict[str, Any]]:
    """The ABI of contract ``name`` (see :func:`load_artifact`)."""
    abi: list[dict[str, Any]] = load_artifact(name)["abi"]
    return abi
