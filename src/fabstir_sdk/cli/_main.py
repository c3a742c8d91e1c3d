"""``fabstir``: the parser made of every command module, and the one way errors are shown.

A new command is a module here with ``add(commands)`` and its run function, plus a line in
:func:`build_parser`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

from .._version import __version__
from ..errors import FabstirError
from ..runner import run
from . import chat, demo, devnet, host, model, proxy, s5
from ._args import CommandParser

__all__ = ["build_parser", "main"]

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="fabstir",
        description="Fabstir decentralized LLM inference market: SDK tools.",
    )
    parser.add_argument("--version", action="version", version=f"fabstir-sdk {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show debug logs, and the traceback of an error"
    )
    commands = cast(  # of CommandParser: the commands' add() only need ArgumentParser's API
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", metavar="COMMAND", required=True),
    )
    demo.add(commands)
    chat.add(commands)
    devnet.add(commands)
    s5.add(commands)
    host.add(commands)
    model.add(commands)
    proxy.add(commands)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    # OSError: the machine said no (port in use, no permission, no such file), not a bug
    if not isinstance(exc, FabstirError | NotImplementedError | OSError):
        first = f"internal error: {type(exc).__name__}: {first}"
    more = " (--debug shows more)" if len(text) > 1 or first.startswith("internal") else ""
    return first + more


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 error, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        return run(handler(args))  # asyncio.run, with SIGTERM handled as Ctrl-C
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        else:
            print(f"fabstir: error: {_one_line(exc)}", file=sys.stderr)
        return 1
