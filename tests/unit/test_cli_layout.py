"""The ``fabstir`` command's layout: a cli/ package above the subsystems, one loop for
SIGINT/SIGTERM, no import circle between the command line and what it runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import fabstir_sdk

SRC = Path(fabstir_sdk.__file__).parent


def test_the_subsystems_do_not_import_the_command_line():
    """Before: host/_cli.py and proxy/_cli.py imported fabstir_sdk.cli, which imported them."""
    code = (
        "import sys\n"
        "import fabstir_sdk, fabstir_sdk.devnet, fabstir_sdk.host._node, fabstir_sdk.host._chain\n"
        "import fabstir_sdk.proxy._server, fabstir_sdk.s5.server, fabstir_sdk._chat\n"
        "print(sorted(m for m in sys.modules if m.startswith('fabstir_sdk.cli')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_one_copy_of_the_signal_loop():
    """Every serving command waits with cli._signals.stop_signals (before: four copies)."""
    found = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if "add_signal_handler(signum, stop.set)" in path.read_text()
    )
    assert found == ["cli/_signals.py"]


def test_each_command_is_a_module():
    from fabstir_sdk.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert sorted(commands) == ["chat", "demo", "devnet", "host", "model", "proxy", "s5"]
    assert sorted(p.stem for p in (SRC / "cli").glob("*.py") if not p.stem.startswith("_")) == [
        "chat",
        "demo",
        "devnet",
        "host",
        "model",
        "proxy",
        "s5",
    ]
