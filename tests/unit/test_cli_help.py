"""The ``fabstir`` command as a user meets it: complete help for every subcommand, the
version, and errors that are one clear line (the traceback only with --debug)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from fabstir_sdk import __version__
from fabstir_sdk.cli import build_parser


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    """Every subcommand below ``parser``: its words, its parser and the one-line help its
    parent lists."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                words = (*path, name)
                found.append((words, sub, helps.get(name)))
                found += commands(sub, words)
    return found


ALL = [((), build_parser(), None), *commands(build_parser())]
LEAVES = sorted(
    words
    for words, parser, _ in ALL
    if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
)


def test_every_command_is_walked():
    names = {" ".join(words) for words, _, _ in ALL}
    assert {
        "",
        "demo",
        "devnet",
        "devnet up",
        "s5",
        "s5 serve",
        "host run",
        "host withdraw",
    } <= names


@pytest.mark.parametrize("words", [w for w, _, _ in ALL], ids=lambda w: " ".join(w) or "fabstir")
def test_help_is_complete(words, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*words, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {' '.join(('fabstir', *words))} ")
    (_, parser, summary) = next(c for c in ALL if c[0] == words)
    assert parser.description, "a description under the usage line"
    if words:
        assert summary, "a one-line help in the parent's list"
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            for choice in action.choices:
                # every subcommand is listed (argparse puts the help of a name longer than
                # 8 characters on the next line)
                assert f"    {choice} " in out or f"    {choice}\n" in out
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"fabstir {' '.join(words)}: {name} has no help"
        assert (action.option_strings or [action.dest])[-1] in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"fabstir-sdk {__version__}\n"


#: Runs ``fabstir_sdk.cli.main`` on each case in one fresh process (one import, not one per
#: case): what it returns or exits with, and what it wrote to stderr.
DRIVER = """
import contextlib, io, json, os, sys
from fabstir_sdk.cli import main

results = []
for argv, env in json.loads(sys.argv[1]):
    saved = dict(os.environ)
    os.environ.update(env)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    finally:
        os.environ.clear()
        os.environ.update(saved)
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def fabstir_runs(cases: list[tuple[list[str], dict[str, str]]]) -> list[tuple[int, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABSTIR_")}
    out = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", DRIVER, json.dumps(cases)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    return [tuple(r) for r in json.loads(out.splitlines()[-1])]


#: For every command that runs: arguments that fail, and the line that says why.
FAILURES = {
    ("chat",): (["--model", "a:b"], {}, "say which chain: --manifest PATH or --network"),
    ("demo",): ([], {"FABSTIR_ANVIL": "/nonexistent"}, "FABSTIR_ANVIL=/nonexistent is not an"),
    ("devnet", "install"): (
        [],
        {"PATH": "/nonexistent", "XDG_CACHE_HOME": "/nonexistent"},
        "npm not found: `fabstir devnet install` uses npm",
    ),
    ("devnet", "up"): ([], {"FABSTIR_ANVIL": "/nonexistent"}, "FABSTIR_ANVIL=/nonexistent is"),
    ("host", "run"): (
        ["--model", "a:b", "--network", "base-sepolia"],
        {},
        "set FABSTIR_HOST_PRIVATE_KEY to the host's private key (or use --key-file)",
    ),
    ("host", "withdraw"): (
        ["--manifest", "/nonexistent.json"],
        {},
        "cannot read manifest /nonexistent.json: [Errno 2] No such file or directory",
    ),
    ("host", "register"): (
        [
            "--api-url",
            "http://x",
            "--model",
            "a:b",
            "--price-stable",
            "1",
            "--price-native",
            "1",
            "--network",
            "base-sepolia",
        ],
        {},
        "set FABSTIR_HOST_PRIVATE_KEY to the host's private key (or use --key-file)",
    ),
    ("host", "update"): ([], {}, "say what to update: --api-url, --metadata and/or --model"),
    ("host", "price"): (
        ["--model", "a:b", "--set", "1", "--manifest", "/nonexistent.json"],
        {},
        "cannot read manifest /nonexistent.json: [Errno 2] No such file or directory",
    ),
    ("host", "unregister"): (
        ["--network", "base-sepolia"],
        {},
        "set FABSTIR_HOST_PRIVATE_KEY to the host's private key (or use --key-file)",
    ),
    ("host", "status"): ([], {}, "say which chain: --manifest PATH or --network"),
    ("model", "list"): ([], {}, "say which chain: --manifest PATH or --network"),
    ("model", "status"): (
        ["--model", "a:b", "--manifest", "/nonexistent.json"],
        {},
        "cannot read manifest /nonexistent.json: [Errno 2] No such file or directory",
    ),
    ("model", "propose"): (
        ["--repo", "r", "--file", "f", "--sha256", "00", "--network", "base-sepolia"],
        {},
        "set FABSTIR_PRIVATE_KEY to the account's private key (or use --key-file)",
    ),
    ("model", "vote"): (
        ["--model", "a:b", "--amount", "1.5.5", "--network", "base-sepolia"],
        {},
        "--amount '1.5.5' is not a number",
    ),
    ("model", "execute"): (
        ["--model", "a:b", "--network", "base-sepolia"],
        {},
        "set FABSTIR_PRIVATE_KEY to the account's private key (or use --key-file)",
    ),
    ("model", "withdraw"): (
        ["--model", "a:b"],
        {},
        "say which chain: --manifest PATH or --network",
    ),
    ("model", "withdraw-fees"): (
        ["--amount", "0", "--network", "base-sepolia"],
        {},
        "--amount must be positive, got '0'",
    ),
    ("proxy",): ([], {}, "say which chain: --manifest PATH or --network"),
    ("s5", "serve"): (
        ["--dir", "/proc/fabstir-cannot-be-here"],
        {},
        "cannot create the store at /proc/fabstir-cannot-be-here",
    ),
}


def test_every_command_has_a_failure_case():
    assert sorted(FAILURES) == LEAVES


#: Commands also checked with --debug: an SDK error raised in the handler, and an OSError.
DEBUGGED = [("host", "run"), ("s5", "serve")]


def test_errors_are_one_line_and_debug_shows_the_traceback():
    runs = [(words, False) for words in sorted(FAILURES)] + [(w, True) for w in DEBUGGED]
    results = fabstir_runs(
        [
            ([*(["--debug"] if debug else []), *words, *FAILURES[words][0]], FAILURES[words][1])
            for words, debug in runs
        ]
    )
    for (words, debug), (code, err) in zip(runs, results, strict=True):
        why = FAILURES[words][2]
        assert code == 1, (words, err)
        if debug:
            assert "Traceback (most recent call last)" in err and why in err, (words, err)
            continue
        # the error is the last line, and the only one (progress lines may come before it)
        errors = [line for line in err.splitlines() if "error" in line.lower()]
        assert errors == [err.splitlines()[-1]], (words, err)
        assert errors[0].startswith("fabstir: error: ") and why in errors[0], (words, err)
        assert "internal error" not in err and "Traceback" not in err, (words, err)


#: Mistakes argparse catches: what was typed, and the one line it prints.
USAGE = [
    ([], "fabstir: error: the following arguments are required: COMMAND (see fabstir --help)"),
    (
        ["s5", "serve", "--port", "70000"],
        "fabstir s5 serve: error: argument --port: a port is 0..65535, not 70000"
        " (see fabstir s5 serve --help)",
    ),
    (
        ["devnet", "up", "--port", "x"],
        "fabstir devnet up: error: argument --port: not a port number: 'x'"
        " (see fabstir devnet up --help)",
    ),
    (
        ["host"],
        "fabstir host: error: the following arguments are required: ACTION"
        " (see fabstir host --help)",
    ),
]


def test_usage_mistakes_are_one_line_too():
    results = fabstir_runs([(args, {}) for args, _ in USAGE])
    assert results == [(2, line + "\n") for _, line in USAGE]


def test_host_means_one_thing_in_every_command():
    """``--host`` is where a server listens, with the same help, wherever it appears; a
    compute host is ``--host-address`` (chat), and no abbreviation blurs the two."""
    listening = {}
    for words, parser, _ in ALL:
        for action in parser._actions:
            if "--host" in action.option_strings:
                listening[" ".join(words)] = (action.default, action.help)
    assert listening == {
        name: ("127.0.0.1", "address to listen on (default 127.0.0.1)")
        for name in ("host run", "proxy", "s5 serve")
    }
    args = build_parser().parse_args(["chat", "--model", "m", "--host-address", "0xabc"])
    assert args.host_address == "0xabc"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["chat", "--model", "m", "--host", "0xabc"])
