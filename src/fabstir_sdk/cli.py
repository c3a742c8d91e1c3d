"""The ``fabstir`` command.

Each subcommand registers its arguments in an ``_add_<name>`` function and runs as one async
function; the heavy imports happen inside it, so ``fabstir --help`` stays instant. A new
subcommand is one ``_add_`` function plus a line in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

from ._version import __version__
from .errors import FabstirError
from .runner import run

__all__ = ["build_parser", "main", "port_number"]

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line too, naming the --help that explains (subcommands
    inherit the class)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 meaning any free one."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, not {port}")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fabstir",
        description="Fabstir decentralized LLM inference market: SDK tools.",
    )
    parser.add_argument("--version", action="version", version=f"fabstir-sdk {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show debug logs, and the traceback of an error"
    )
    commands = cast(  # of _Parser: the _add_ functions only need ArgumentParser's API
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", metavar="COMMAND", required=True),
    )
    _add_demo(commands)
    _add_chat(commands)
    _add_devnet(commands)
    _add_s5(commands)
    _add_host(commands)
    _add_proxy(commands)
    return parser


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="the whole story on a local devnet: find a host, pay, chat, settle",
        description=(
            "Start a devnet (anvil, contracts, S5 portal) and a reference host with the "
            "built-in model; as a user, find the host, open a USDC session, stream two "
            "prompts, complete, and print the split read back from the chain, the "
            "conversation read back from S5 and a timing table."
        ),
    )
    demo.add_argument(
        "--payments",
        action="store_true",
        help="instead, the payment walkthrough of docs/payments.md (no host process)",
    )
    demo.set_defaults(handler=_run_demo)


async def _run_demo(args: argparse.Namespace) -> int:
    from .demo import payment_walkthrough, session_demo

    if args.payments:
        await payment_walkthrough()
    else:
        await session_demo()
    return 0


def _add_chat(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .host._cli import add_chain_arguments  # argparse only

    chat = commands.add_parser(
        "chat",
        allow_abbrev=False,  # --host is no short --host-address: it means "listen on" elsewhere
        help="chat with a host: pay for a session, one line per prompt, settle on exit",
        description=(
            "Open a paid, end-to-end encrypted session for MODEL (with --host-address, or the best "
            "registered host), send each stdin line as a prompt and stream the answer to "
            "stdout. /quit or the end of input leaves and settles."
        ),
    )
    chat.add_argument("--model", required=True, help="the model, 'repo:file'")
    chat.add_argument(
        "--host-address",
        metavar="ADDRESS",
        help="the compute host's wallet address (default: the best registered host)",
    )
    add_chain_arguments(chat, key_env="FABSTIR_PRIVATE_KEY", role="user")
    chat.add_argument(
        "--payment",
        choices=["usdc", "eth", "deposit"],
        default="usdc",
        help="escrow USDC (default) or ETH, or use your pre-funded deposit",
    )
    chat.add_argument(
        "--deposit", default="1", help="escrow, in USDC or ETH (default 1; unused by deposit)"
    )
    chat.add_argument(
        "--max-price",
        type=int,
        metavar="N",
        help="refuse hosts above N base units per 1000 tokens",
    )
    chat.add_argument(
        "--on-exit",
        choices=["complete", "end"],
        default="complete",
        help="complete: settle now (you pay gas, refund now); end: the host settles (no gas)",
    )
    chat.add_argument(
        "--expected-tokens",
        type=int,
        default=0,
        metavar="N",
        help="tokens you expect to use, for the cost shown before paying (default: the minimum)",
    )
    chat.add_argument("--yes", action="store_true", help="pay without asking after the estimate")
    chat.add_argument("--s5-portal-url", help="keep the conversation on this S5 portal")
    chat.add_argument(
        "--storage-dir", type=Path, help="keep the conversation in the embedded S5 store here"
    )
    chat.set_defaults(handler=_run_chat)


async def _run_chat(args: argparse.Namespace) -> int:
    from ._chat import chat
    from .host._cli import private_key, sdk_config

    return await chat(
        sdk_config(args),
        private_key(args),
        model=args.model,
        host=args.host_address,
        payment=args.payment,
        deposit=args.deposit,
        max_price_per_token=args.max_price,
        on_exit=args.on_exit,
        expected_tokens=args.expected_tokens,
        yes=args.yes,
    )


def _add_devnet(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    devnet = commands.add_parser(
        "devnet",
        help="a local chain with the Fabstir contracts",
        description="A local chain (anvil on 127.0.0.1) with the Fabstir contracts deployed.",
    )
    actions = devnet.add_subparsers(dest="devnet_command", metavar="ACTION", required=True)
    up = actions.add_parser(
        "up",
        help="start a devnet and keep it running until Ctrl-C",
        description=(
            "Start anvil, deploy the contracts, approve the devnet models, fund ten test "
            "accounts, print the RPC URL, addresses and test keys, and run until Ctrl-C or "
            "SIGTERM."
        ),
    )
    up.add_argument("--port", type=port_number, default=None, help="RPC port (default: a free one)")
    up.add_argument(
        "--block-time",
        type=float,
        default=None,
        metavar="S",
        help="mine a block every S seconds (default: mine each transaction at once)",
    )
    up.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".devnet"),
        metavar="D",
        help="where anvil.log and deployments/<chain_id>.json go (default: ./.devnet)",
    )
    up.add_argument("--json", action="store_true", help="print the details as one JSON line")
    up.set_defaults(handler=_run_devnet_up)
    from .devnet._cli import add_install_action  # argparse only

    add_install_action(actions)


async def _run_devnet_up(args: argparse.Namespace) -> int:
    from .devnet._cli import devnet_up

    return await devnet_up(
        port=args.port, block_time=args.block_time, state_dir=args.state_dir, as_json=args.json
    )


def _add_s5(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s5 = commands.add_parser(
        "s5",
        help="S5 storage tools (a local portal)",
        description="S5 storage: run a local portal over the embedded store.",
    )
    actions = s5.add_subparsers(dest="s5_command", metavar="ACTION", required=True)
    serve = actions.add_parser(
        "serve",
        help="run a local S5 portal until Ctrl-C",
        description=(
            "Serve the S5 portal HTTP API (accounts, upload, download, registry) over an "
            "embedded store. Listens on 127.0.0.1 unless --host says otherwise; every data call "
            "needs an account token."
        ),
    )
    # --host is the address a server listens on, in every command (a compute host: --host-address)
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=port_number, default=5050, help="port (default 5050; 0: any free)"
    )
    serve.add_argument(
        "--dir",
        type=Path,
        default=None,
        metavar="D",
        help="where the data lives (default: the user data dir's fabstir-sdk/s5-portal)",
    )
    serve.add_argument(
        "--max-upload",
        type=int,
        default=None,
        metavar="BYTES",
        help="largest upload accepted (default 512 MiB)",
    )
    serve.add_argument(
        "--invite-token",
        default=None,
        metavar="T",
        help="require this Bearer token to register an account (default: open registration)",
    )
    serve.add_argument(
        "--public-url",
        default=None,
        metavar="URL",
        help="the URL clients use, if not http://HOST:PORT (account challenges bind to it)",
    )
    serve.add_argument("--json", action="store_true", help="print the details as one JSON line")
    serve.set_defaults(handler=_run_s5_serve)


async def _run_s5_serve(args: argparse.Namespace) -> int:
    from .s5.server import DEFAULT_MAX_UPLOAD, serve

    root = args.dir
    if root is None:
        import platformdirs

        root = Path(platformdirs.user_data_path("fabstir-sdk")) / "s5-portal"
    return await serve(
        root,
        host=args.host,
        port=args.port,
        public_url=args.public_url,
        max_upload=args.max_upload or DEFAULT_MAX_UPLOAD,
        invite_token=args.invite_token,
        as_json=args.json,
    )


def _add_host(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .host._cli import add_host_commands  # argparse only: the server loads in run

    add_host_commands(commands)


def _add_proxy(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .proxy._cli import add_proxy_command  # argparse only: the server loads in run

    add_proxy_command(commands)


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


if __name__ == "__main__":
    sys.exit(main())
