"""Where the packaged contract artifacts and deployment manifests live.

A wheel carries them under ``fabstir_sdk/_contracts``; an editable install reads them from the
repository's ``contracts/`` folder, so there is one copy in the tree.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["contracts_path"]

_PACKAGED = Path(__file__).parent / "_contracts"
_REPO = Path(__file__).resolve().parents[2] / "contracts"


def contracts_path(*parts: str) -> Path:
    """Path of ``contracts/<parts>`` in the installed package or the source tree."""
    base = _PACKAGED if _PACKAGED.is_dir() else _REPO
    return base.joinpath(*parts)
