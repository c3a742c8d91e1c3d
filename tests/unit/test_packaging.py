"""The wheel users install: typed, with the ABIs and manifests the SDK reads, the CLI and the
pytest plugin entry points, and nothing that is only for our tests."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from fabstir_sdk import __version__

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(source: Path, out: Path) -> Path:
    """The wheel pip builds from the source tree ``source``, in ``out``."""
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet"),
            "--no-build-isolation",  # hatchling is a dev dependency: no download
            *("--wheel-dir", str(out), str(source)),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(ROOT, tmp_path_factory.mktemp("wheel"))


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
    # what `fabstir devnet install` hands npm: the pinned anvil, with its integrity hashes
    npm = {n for n in names if n.startswith("fabstir_sdk/devnet/anvil_npm/")}
    assert npm == {
        "fabstir_sdk/devnet/anvil_npm/package.json",
        "fabstir_sdk/devnet/anvil_npm/package-lock.json",
    }
    assert "fabstir_sdk/__main__.py" in names


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> Path:
    """The sdist and wheel a release uploads, built as scripts/pip_user_check.sh builds them."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-d", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return out


def test_twine_accepts_the_sdist_and_the_wheel(dists):
    names = sorted(p.name for p in dists.iterdir())
    assert names == [
        f"fabstir_sdk-{__version__}-py3-none-any.whl",
        f"fabstir_sdk-{__version__}.tar.gz",
    ]
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *sorted(dists.iterdir())],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("PASSED") == 2, check.stdout


def test_the_sdist_builds_the_same_wheel(dists, wheel, tmp_path):
    (sdist,) = dists.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
        tar.extractall(tmp_path, filter="data")
    assert {"pyproject.toml", "README.md", "LICENSE", "PKG-INFO"} <= members
    assert not [m for m in members if m.startswith(("tests/", "node_modules/", "contracts/src"))]
    rebuilt = build_wheel(tmp_path / sdist.name.removesuffix(".tar.gz"), tmp_path / "wheel")
    assert set(zipfile.ZipFile(rebuilt).namelist()) == set(zipfile.ZipFile(wheel).namelist())


def test_wheel_metadata(wheel):
    with zipfile.ZipFile(wheel) as zf:
        info = f"fabstir_sdk-{__version__}.dist-info"
        metadata = zf.read(f"{info}/METADATA").decode()
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    assert f"\nVersion: {__version__}\n" in metadata
    assert "Provides-Extra: testing" in metadata and "Provides-Extra: notebook" in metadata
    assert "Classifier: Typing :: Typed" in metadata
    assert "Classifier: Development Status :: 3 - Alpha" in metadata
    assert "License-Expression: MIT" in metadata and "License-File: LICENSE" in metadata
    assert "Project-URL: Source, https://github.com/fabstir/fabstir-sdk" in metadata
    assert "Requires-Python: >=3.11" in metadata
    assert "Requires-Dist: pytest-asyncio>=1.5; extra == 'testing'" in metadata
    assert "Description-Content-Type: text/markdown" in metadata
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
