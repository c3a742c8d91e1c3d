"""Devnet pieces that need no process and no network: finding anvil, accounts, models, CLI."""

from __future__ import annotations

import dataclasses
import json
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import rlp
from eth_utils.crypto import keccak

from fabstir_sdk import AnvilNotFoundError, ConfigError, ContractAddresses, ValidationError
from fabstir_sdk.cli import build_parser, main
from fabstir_sdk.devnet import (
    DEVNET_MODELS,
    PLACEHOLDER_SHA256,
    Deployment,
    DevAccount,
    Devnet,
    _anvil,
    find_anvil,
)
from fabstir_sdk.devnet._deploy import _create_address, write_manifest

ROOT = Path(__file__).resolve().parents[2]
KEY = "0x" + "ab" * 32
ADDR = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def _fake_binary(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def no_anvil(tmp_path, monkeypatch):
    """An environment where no anvil exists anywhere; tests then add one."""
    monkeypatch.delenv(_anvil.ANVIL_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    monkeypatch.setattr(_anvil, "_REPO_ROOT", tmp_path / "repo")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _npm_binary(base):
    return base / "node_modules" / "@foundry-rs" / _anvil._npm_package() / "bin" / "anvil"


def test_missing_anvil_names_the_install_command(no_anvil):
    with pytest.raises(AnvilNotFoundError) as caught:
        find_anvil()
    cache = no_anvil / "cache" / "fabstir-sdk" / "anvil" / "1.7.1"
    assert _anvil.anvil_cache_dir() == cache
    script = Path(sysconfig.get_path("scripts")) / "fabstir"  # not on this PATH: its full path
    assert str(caught.value) == (
        f"anvil not found: run `{script} devnet install` (it installs the pinned anvil 1.7.1 "
        f"from npm into {cache}); Foundry's anvil on PATH or FABSTIR_ANVIL=/path/to/anvil "
        "work too"
    )
    assert isinstance(caught.value, ConfigError)


def test_installed_copy_in_the_cache_is_found_from_anywhere(no_anvil, monkeypatch):
    cached = _fake_binary(_npm_binary(_anvil.anvil_cache_dir()))
    (no_anvil / "elsewhere").mkdir()
    monkeypatch.chdir(no_anvil / "elsewhere")
    assert find_anvil() == cached
    on_path = _fake_binary(no_anvil / "bin" / "anvil")  # Foundry's own install wins
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_anvil() == on_path


def test_checkout_node_modules_only_where_a_checkout_is(no_anvil, monkeypatch):
    binary = _fake_binary(_npm_binary(no_anvil / "repo"))
    (no_anvil / "elsewhere").mkdir()
    monkeypatch.chdir(no_anvil / "elsewhere")
    with pytest.raises(AnvilNotFoundError):
        find_anvil()  # an installed wheel: the directory above site-packages is no checkout
    (no_anvil / "repo" / "pyproject.toml").write_text("")
    assert find_anvil() == binary


def test_the_wheel_pins_the_repositorys_anvil():
    """The npm files `fabstir devnet install` uses name what package(-lock).json pin."""
    repo_pkg = json.loads((ROOT / "package.json").read_text())
    repo_lock = json.loads((ROOT / "package-lock.json").read_text())["packages"]
    ours = json.loads((_anvil.ANVIL_NPM_DIR / "package-lock.json").read_text())["packages"]
    version = repo_pkg["devDependencies"]["@foundry-rs/anvil"]
    assert (
        _anvil.pinned_anvil_version()
        == version
        == repo_lock[""]["devDependencies"]["@foundry-rs/anvil"]
    )
    foundry = {k: v for k, v in repo_lock.items() if k.startswith("node_modules/@foundry-rs/")}
    assert len(foundry) == 6 and {k: v for k, v in ours.items() if k} == foundry
    assert ours[""]["devDependencies"] == {"@foundry-rs/anvil": version}


def test_env_variable_wins(no_anvil, monkeypatch):
    _fake_binary(_npm_binary(no_anvil))
    chosen = _fake_binary(no_anvil / "custom" / "anvil")
    monkeypatch.setenv(_anvil.ANVIL_ENV, str(chosen))
    assert find_anvil() == chosen


def test_env_variable_must_be_executable(no_anvil, monkeypatch):
    monkeypatch.setenv(_anvil.ANVIL_ENV, str(no_anvil / "nowhere"))
    with pytest.raises(ConfigError, match="not an executable"):
        find_anvil()


def test_node_modules_found_from_a_subdirectory(no_anvil, monkeypatch):
    binary = _fake_binary(_npm_binary(no_anvil))
    (no_anvil / "a" / "b").mkdir(parents=True)
    monkeypatch.chdir(no_anvil / "a" / "b")
    assert find_anvil() == binary


def test_node_modules_of_the_checkout_when_cwd_has_none(no_anvil):
    binary = _fake_binary(_npm_binary(no_anvil / "repo"))
    (no_anvil / "repo" / "pyproject.toml").write_text("")
    assert find_anvil() == binary


def test_pinned_npm_copy_before_path(no_anvil, monkeypatch):
    on_path = _fake_binary(no_anvil / "bin" / "anvil")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_anvil() == on_path
    binary = _fake_binary(_npm_binary(no_anvil))
    assert find_anvil() == binary


def test_dev_account_hides_its_key():
    account = DevAccount(ADDR, KEY)
    for text in (repr(account), str(account), f"{account}", repr([account])):
        assert KEY not in text and KEY[2:] not in text
        assert ADDR in text
    assert account.private_key == KEY
    with pytest.raises(dataclasses.FrozenInstanceError):
        account.private_key = "0x00"  # type: ignore[misc]


def test_devnet_models():
    specs = [m.spec for m in DEVNET_MODELS]
    assert len(specs) >= 2 and "fabstir/builtin:toy-1.gguf" in specs
    for model in DEVNET_MODELS:
        assert model.spec == f"{model.repo}:{model.file}"
        assert model.model_id == "0x" + keccak(f"{model.repo}/{model.file}".encode()).hex()
    assert len(PLACEHOLDER_SHA256) == 66 and int(PLACEHOLDER_SHA256, 16) != 0


@pytest.mark.parametrize("nonce", [0, 1, 0x7F, 0x80, 255, 256, 70_000])
def test_create_address_matches_rlp(nonce):
    deployer = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    expected = keccak(rlp.encode([bytes.fromhex(deployer[2:]), nonce]))[12:]
    assert _create_address(deployer, nonce).lower() == "0x" + expected.hex()
    if nonce == 0:  # the address every anvil tutorial shows
        assert _create_address(deployer, 0) == "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def test_manifest_has_addresses_and_no_key(tmp_path):
    addresses = ContractAddresses(
        **{f: "0x" + f"{i + 1:040x}" for i, f in enumerate(ContractAddresses.model_fields)}
    )
    deployment = Deployment(addresses, DEVNET_MODELS, ADDR, transactions=35, seconds=0.1)
    path = tmp_path / "deployments" / "31337.json"
    write_manifest(path, deployment, chain_id=31337, rpc_url="http://127.0.0.1:1234")
    manifest = json.loads(path.read_text())
    assert manifest["chain_id"] == 31337 and manifest["name"] == "devnet"
    assert manifest["rpc_url"] == "http://127.0.0.1:1234"
    assert manifest["contracts"] == addresses.model_dump()
    assert [m["model_id"] for m in manifest["models"]] == [m.model_id for m in DEVNET_MODELS]
    assert "private" not in path.read_text().lower()
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"block_time": 0}, ValidationError),
        ({"block_time": -1.5}, ValidationError),
        ({"port": 70000}, ValidationError),
    ],
)
def test_start_refuses_bad_options_before_launching(kwargs, error):
    with pytest.raises(error):
        Devnet.start(**kwargs)


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "devnet" in out and "demo" in out


def test_devnet_up_options():
    args = build_parser().parse_args(
        ["devnet", "up", "--port", "9000", "--block-time", "0.5", "--state-dir", "x", "--json"]
    )
    assert (args.port, args.block_time, str(args.state_dir), args.json) == (9000, 0.5, "x", True)


def test_error_is_one_line_and_debug_shows_traceback(monkeypatch, capsys):
    async def broken(args):
        raise ConfigError("anvil not found: run `npm ci`\nsecond line")

    monkeypatch.setattr("fabstir_sdk.cli.devnet.run_up", broken)
    assert main(["devnet", "up"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fabstir: error: anvil not found")
    assert "Traceback" not in err
    assert main(["--debug", "devnet", "up"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_internal_errors_are_named(monkeypatch, capsys):
    async def broken(args):
        raise KeyError("x")

    monkeypatch.setattr("fabstir_sdk.cli.devnet.run_up", broken)
    assert main(["devnet", "up"]) == 1
    assert "internal error: KeyError" in capsys.readouterr().err


def test_import_devnet_is_cheap():
    code = (
        "import sys, fabstir_sdk.devnet; "
        "print(sorted(m for m in ('web3', 'eth_account') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
