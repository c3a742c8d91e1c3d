"""The wheel users install: typed, with the ABIs and manifests the SDK reads, the CLI and the
pytest plugin entry points, and nothing that is only for our tests."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from fabstir_sdk import __version__

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",  # hatchling is a dev dependency: no download
            "--quiet",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("*.whl")
    return built


def test_wheel_contents(wheel):
    assert wheel.name == f"fabstir_sdk-{__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "fabstir_sdk/py.typed" in names
    assert {"fabstir_sdk/__init__.py", "fabstir_sdk/testing/__init__.py"} <= names
    abis = {f"fabstir_sdk/_contracts/abi/{p.name}" for p in (ROOT / "contracts/abi").glob("*.json")}
    shipped = {n for n in names if n.startswith("fabstir_sdk/_contracts/abi/")}
    assert abis and shipped == abis  # every run-time ABI, and not contracts/abi/test/
    manifests = {p.name for p in (ROOT / "contracts/deployments").glob("*.json")}
    assert {
        n.rsplit("/", 1)[1] for n in names if n.startswith("fabstir_sdk/_contracts/deployments/")
    } == manifests
    assert not [n for n in names if "/test/" in n or n.startswith(("tests/", "contracts/"))]
    assert not [n for n in names if n.endswith((".sol", ".pyc", ".ipynb"))]


def test_wheel_metadata(wheel):
    with zipfile.ZipFile(wheel) as zf:
        info = f"fabstir_sdk-{__version__}.dist-info"
        metadata = zf.read(f"{info}/METADATA").decode()
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    assert f"\nVersion: {__version__}\n" in metadata
    assert "Provides-Extra: testing" in metadata and "Provides-Extra: notebook" in metadata
    assert "Classifier: Typing :: Typed" in metadata
    assert "[console_scripts]\nfabstir = fabstir_sdk.cli:main" in entry_points
    assert "[pytest11]\nfabstir = fabstir_sdk.testing" in entry_points


def test_installed_wheel_reads_its_own_contracts(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", target, wheel],
        check=True,
        capture_output=True,
    )
    code = (
        f"import sys; sys.path.insert(0, {str(target)!r}); "
        "from fabstir_sdk import SDKConfig; from fabstir_sdk._resources import contracts_path; "
        "from fabstir_sdk.chain.artifacts import load_abi; "
        "print(contracts_path('abi', 'x.json').parent); "
        "print(len(load_abi('JobMarketplace')) > 0, SDKConfig.base_sepolia().chain_id)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout.splitlines()
    assert out == [str(target / "fabstir_sdk" / "_contracts" / "abi"), "True 84532"]


def test_changelog_describes_this_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    releases = re.findall(r"^## \[([^\]]+)\]", changelog, re.M)
    assert releases[0] == __version__  # the newest entry is the version we build
    assert "### Added" in changelog.split("## [", 2)[1]
