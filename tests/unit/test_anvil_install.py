"""``fabstir devnet install`` with a stand-in npm: what it runs, where the binary lands, and
that a failed install leaves nothing behind. (The real npm against the registry runs in
scripts/pip_user_check.sh, the CI job that is a pip user.)"""

from __future__ import annotations

import json
import os
import stat
import sys

import pytest

from fabstir_sdk import AnvilNotFoundError, DevnetError
from fabstir_sdk.cli import main
from fabstir_sdk.devnet import _anvil, find_anvil
from fabstir_sdk.devnet._anvil_install import install_anvil

# Records its arguments and the files it was given, then lays out what the npm package
# would: node_modules/@foundry-rs/<platform>/bin/anvil answering --version.
FAKE_NPM = """#!{python}
import json, os, pathlib, sys
record = {{"args": sys.argv[1:], "files": sorted(os.listdir("."))}}
pathlib.Path(os.environ["NPM_RECORD"]).write_text(json.dumps(record))
if os.environ.get("NPM_FAIL"):
    print("npm ERR! network unreachable", file=sys.stderr)
    sys.exit(1)
binary = pathlib.Path("node_modules/@foundry-rs/{package}/bin/anvil")
binary.parent.mkdir(parents=True)
binary.write_text("#!/bin/sh\\necho 'anvil Version: {version}'\\n")
binary.chmod(0o755)
"""


@pytest.fixture
def fake_npm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(
        FAKE_NPM.format(
            python=sys.executable,
            package=_anvil._npm_package(),
            version=_anvil.pinned_anvil_version(),
        )
    )
    npm.chmod(npm.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("NPM_RECORD", str(tmp_path / "npm.json"))
    monkeypatch.delenv(_anvil.ANVIL_ENV, raising=False)
    monkeypatch.setattr(_anvil, "_REPO_ROOT", tmp_path / "repo")
    monkeypatch.chdir(tmp_path)
    return tmp_path


async def test_installs_into_the_cache_where_find_anvil_looks(fake_npm):
    said: list[str] = []
    binary = await install_anvil(say=said.append)
    target = fake_npm / "cache" / "fabstir-sdk" / "anvil" / "1.7.1"
    assert binary == _anvil.npm_anvil(target) and os.access(binary, os.X_OK)
    assert find_anvil() == binary
    record = json.loads((fake_npm / "npm.json").read_text())
    assert record == {
        "args": [
            "ci",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--include=dev",
            "--include=optional",
        ],
        "files": ["package-lock.json", "package.json"],
    }
    assert said == [
        f"Installing anvil 1.7.1 (npm package @foundry-rs/anvil) into {target}",
        f"Installed: {binary}",
    ]
    assert sorted(p.name for p in target.parent.iterdir()) == [".1.7.1.lock", "1.7.1"]

    said.clear()
    (fake_npm / "npm.json").unlink()
    assert await install_anvil(say=said.append) == binary  # already there: npm not run
    assert said == [f"anvil 1.7.1 is already installed: {binary}"]
    assert not (fake_npm / "npm.json").exists()
    await install_anvil(force=True, say=said.append)
    assert (fake_npm / "npm.json").exists() and find_anvil() == binary


async def test_a_failed_npm_leaves_nothing_found(fake_npm, monkeypatch):
    monkeypatch.setenv("NPM_FAIL", "1")
    with pytest.raises(DevnetError) as caught:
        await install_anvil(say=lambda _: None)
    assert str(caught.value) == (
        "npm ci failed (exit 1) installing @foundry-rs/anvil 1.7.1:\nnpm ERR! network unreachable"
    )
    assert [p.name for p in _anvil.anvil_cache_dir().parent.iterdir()] == [".1.7.1.lock"]
    with pytest.raises(AnvilNotFoundError):
        find_anvil()


def test_without_npm_the_cli_says_what_to_install(fake_npm, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(fake_npm / "nothing"))
    assert main(["devnet", "install"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "fabstir: error: npm not found: `fabstir devnet install` uses npm to fetch the pinned "
        "anvil from the npm registry. Install Node.js (it includes npm: https://nodejs.org or "
        "your package manager) and run it again, or install Foundry (https://getfoundry.sh) "
        "so anvil is on PATH\n"
    )


def test_the_cli_says_when_another_anvil_comes_first(fake_npm, monkeypatch, capsys):
    assert main(["devnet", "install"]) == 0
    installed = _anvil.npm_anvil(_anvil.anvil_cache_dir())
    assert capsys.readouterr().out.splitlines()[-1] == f"Installed: {installed}"
    on_path = fake_npm / "bin" / "anvil"  # PATH is the fake npm's directory
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    assert main(["devnet", "install"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"anvil 1.7.1 is already installed: {installed}",
        f"The devnet uses {on_path} first (FABSTIR_ANVIL, node_modules or PATH).",
    ]
