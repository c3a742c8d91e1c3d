"""Install commands in messages name the pip and fabstir of this environment."""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

from fabstir_sdk._install_hints import fabstir_command, pip_install

SCRIPTS = Path(sysconfig.get_path("scripts"))


def test_short_forms_when_path_finds_this_environment(monkeypatch):
    monkeypatch.setenv("PATH", str(SCRIPTS))
    assert pip_install("p2p") == "pip install 'fabstir-sdk[p2p]'"
    assert fabstir_command("devnet install") == "fabstir devnet install"


def test_full_paths_when_path_finds_another_environment(monkeypatch, tmp_path):
    other = tmp_path / "other-venv" / "bin"
    other.mkdir(parents=True)
    for name in ("pip", "fabstir"):
        (other / name).write_text("#!/bin/sh\n")
        (other / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(other))
    assert pip_install("testing") == f"{sys.executable} -m pip install 'fabstir-sdk[testing]'"
    assert fabstir_command("devnet install") == f"{SCRIPTS / 'fabstir'} devnet install"
