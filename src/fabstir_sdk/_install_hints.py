"""Install commands that work where this copy of the SDK runs.

A message that tells a person what to install must name a command that works for them: the
``pip`` and ``fabstir`` of the environment this package is installed in, spelled as a path when
the ones on PATH belong to another environment (a virtual environment that is not activated).
``pip install 'fabstir-sdk[extra]'`` needs no index entry for fabstir-sdk itself: the installed
copy (from a wheel, an sdist or a checkout) satisfies it and pip adds only the extra's packages.
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

__all__ = ["fabstir_command", "pip_install"]

DIST = "fabstir-sdk"


def _ours(name: str) -> bool:
    """Whether ``name`` on PATH is the one in this environment's scripts directory."""
    found = shutil.which(name)
    scripts = sysconfig.get_path("scripts")
    if not found or not scripts:
        return False
    return Path(found).resolve().parent == Path(scripts).resolve()


def pip_install(extra: str) -> str:
    """The command that adds the ``extra`` (e.g. ``"p2p"``) to this installation."""
    pip = "pip" if _ours("pip") else f"{sys.executable} -m pip"
    return f"{pip} install '{DIST}[{extra}]'"


def fabstir_command(args: str) -> str:
    """The ``fabstir`` command line with ``args``, runnable from any directory."""
    if _ours("fabstir"):
        return f"fabstir {args}"
    script = Path(sysconfig.get_path("scripts")) / "fabstir"
    if script.is_file():
        return f"{script} {args}"
    return f"{sys.executable} -m fabstir_sdk {args}"
