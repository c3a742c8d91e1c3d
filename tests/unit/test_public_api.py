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
    """The managers, Session and kin are exported lazily: eth-account loads on first use."""
    code = (
        "import sys, fabstir_sdk; "
        "print(sorted(m for m in ('web3', 'libp2p', 'trio', 'eth_account', 'websockets') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lazy_exports_are_what_their_modules_export():
    """The lazy lists in fabstir_sdk/__init__.py mirror managers.__all__ and the signer
    names by hand (deriving them would import the managers and end the light import): a name
    added to one list and not the other is caught here."""
    import fabstir_sdk.chain.signer
    import fabstir_sdk.managers

    lazy = fabstir_sdk._LAZY
    signers = fabstir_sdk._LAZY_SIGNERS
    assert sorted(lazy) == fabstir_sdk.managers.__all__
    assert signers <= set(fabstir_sdk.chain.signer.__all__)
    assert (lazy | signers) <= set(fabstir_sdk.__all__)
    for name in sorted(lazy | signers):
        assert getattr(fabstir_sdk, name).__name__ == name


def test_version_comes_from_one_place():
    from importlib.metadata import version

    from fabstir_sdk._version import __version__

    assert fabstir_sdk.__version__ is __version__
    assert version("fabstir-sdk") == __version__  # hatch reads _version.py for the metadata


def test_every_error_lives_in_errors_and_is_exported():
    """Every exception class any fabstir_sdk module defines or re-exports (private control-flow
    ones aside) is defined in fabstir_sdk.errors and exported from fabstir_sdk."""
    import pkgutil

    import fabstir_sdk.errors

    found = {}
    for info in pkgutil.walk_packages(fabstir_sdk.__path__, "fabstir_sdk."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, Exception)
                and not name.startswith("_")
                and value.__module__.startswith("fabstir_sdk")
            ):
                found[name] = value
    assert found  # the walk did see the package
    elsewhere = {n for n, c in found.items() if getattr(fabstir_sdk.errors, n, None) is not c}
    assert elsewhere == set()
    assert sorted(set(found) - set(fabstir_sdk.__all__)) == []
    assert set(fabstir_sdk.errors.__all__) <= set(fabstir_sdk.__all__)


#: What users hold, exported from the package (issue 11 section 5).
HELD = [
    "AuthManager",
    "CostEstimate",
    "DiscoveryManager",
    "Failover",
    "FabstirSDK",
    "GasItem",
    "HostManager",
    "JsonRpcSigner",
    "ModelManager",
    "ModelProposal",
    "PaymentManager",
    "PromptStream",
    "RankedHost",
    "Session",
    "SessionManager",
    "Signer",
    "StorageManager",
    "TreasuryManager",
]


def test_every_exported_class_and_function_has_the_public_path():
    """docs/api/fabstir_sdk.md: what the package exports reads as fabstir_sdk.X."""
    values = {name: getattr(fabstir_sdk, name) for name in fabstir_sdk.__all__}
    elsewhere = {
        name: value.__module__
        for name, value in values.items()
        if (isinstance(value, type) or callable(value)) and value.__module__ != "fabstir_sdk"
    }
    assert elsewhere == {}


@pytest.mark.parametrize("name", HELD)
def test_what_users_hold_has_the_public_path(name):
    cls = getattr(fabstir_sdk, name)
    assert name in fabstir_sdk.__all__
    assert cls.__module__ == "fabstir_sdk"
    assert repr(cls) == f"<class 'fabstir_sdk.{name}'>"


def test_the_public_path_holds_however_a_class_is_reached():
    """Reached through its own module first (in a fresh process), a class still reads as
    fabstir_sdk.X: the managers package sets it when any manager is imported."""
    code = (
        "from fabstir_sdk.managers.session import Session; "
        "from fabstir_sdk.errors import InsufficientBalanceError as E; "
        "from fabstir_sdk.chain.signer import JsonRpcSigner; "
        "print(Session.__module__, E.__module__, JsonRpcSigner.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["fabstir_sdk", "fabstir_sdk", "fabstir_sdk"]


def test_no_two_public_classes_share_a_name():
    """StreamChunk and Pong were each two classes (a result and a wire frame)."""
    seen: dict[str, set[str]] = {}
    for package in PUBLIC:
        module = importlib.import_module(package)
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type):
                seen.setdefault(name, set()).add(f"{value.__module__}.{value.__qualname__}")
    # the same class re-exported is fine; two different classes under one name are not
    assert {n: sorted(w) for n, w in seen.items() if len(w) > 1} == {}
