"""``fabstir s5 serve``: a local S5 portal until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._args import Commands, port_number
from ._signals import stop_signals

__all__ = ["add", "run_serve", "serve"]


def add(commands: Commands) -> None:
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
    serve.set_defaults(handler=run_serve)


async def run_serve(args: argparse.Namespace) -> int:
    from ..s5.server import DEFAULT_MAX_UPLOAD

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


async def serve(
    root: Path,
    *,
    host: str,
    port: int,
    public_url: str | None,
    max_upload: int,
    invite_token: str | None,
    as_json: bool,
) -> int:
    """``fabstir s5 serve``: run the portal until SIGINT/SIGTERM; returns the exit code."""
    from ..s5.server import PortalServer  # aiohttp: only when serving

    with stop_signals() as stop:
        portal = PortalServer(
            root,
            host=host,
            port=port,
            public_url=public_url,
            max_upload=max_upload,
            invite_token=invite_token,
        )
        async with portal:
            info = {"url": portal.url, "dir": str(portal.store.root), "max_upload": max_upload}
            if as_json:
                print(json.dumps(info), flush=True)
            else:
                print(f"S5 portal on {portal.url}, data in {portal.store.root}", flush=True)
                print("Press Ctrl-C to stop.", flush=True)
            await stop.wait()
    return 0
