import importlib
import subprocess
import sys
import types

import pytest

import fabstir_sdk

#: The package and every public subpackage: each says what it exports, sorted.
PUBLIC = [
    "fabstir_sdk",
    "fabstir_sdk.devnet",
    "fabstir_sdk.p2p",
    "fabstir_sdk.protocol",
    "fabstir_sdk.s5",
    "fabstir_sdk.testing",
]


@pytest.mark.parametrize("name", PUBLIC)
def test_all_is_sorted_and_complete(name):
    module = importlib.import_module(name)
    public = [
        n
        for n in dir(module)
        if (not n.startswith("_") or n == "__version__")
        and not isinstance(getattr(module, n), types.ModuleType)
        and n != "annotations"  # from __future__ import annotations
    ]
    assert module.__all__ == sorted(module.__all__)
    assert sorted(public) == module.__all__
    assert all(getattr(module, n) is not None for n in module.__all__)


def test_import_is_light():
    code = (
        "import sys, fabstir_sdk; "
        "print(sorted(m for m in ('web3', 'libp2p', 'trio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version_comes_from_one_place():
    from importlib.metadata import version

    from fabstir_sdk._version import __version__

    assert fabstir_sdk.__version__ is __version__
    assert version("fabstir-sdk") == __version__  # hatch reads _version.py for the metadata
