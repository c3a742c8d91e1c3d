"""``fabstir proxy``: serve the OpenAI API until SIGINT/SIGTERM, then settle every session."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..chain.addresses import checksum_address
from ..errors import ConfigError
from ._args import Commands, add_chain_arguments, port_number, sdk_config, wallet
from ._signals import stop_signals

__all__ = ["add", "proxy_serve"]


def add(commands: Commands) -> None:
    proxy = commands.add_parser(
        "proxy",
        help="an OpenAI-compatible API on localhost that pays hosts per session",
        description=(
            "Serve /v1/models and /v1/chat/completions (JSON and streaming) on 127.0.0.1. "
            "The first request for a model opens a paid session with the best host for it "
            "(escrowing --budget), later requests reuse it; Ctrl-C or SIGTERM completes "
            "every session, so you pay the proven tokens only."
        ),
    )
    add_chain_arguments(proxy, key_env="FABSTIR_PRIVATE_KEY", role="user", signer=True)
    proxy.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    proxy.add_argument(
        "--port", type=port_number, default=8000, help="port (default 8000; 0: any free)"
    )
    proxy.add_argument(
        "--budget",
        default="1",
        help="deposit escrowed for each model's session, in USDC or ETH (default 1)",
    )
    proxy.add_argument(
        "--max-price",
        type=int,
        metavar="N",
        help="never use hosts above N base units per 1000 tokens",
    )
    proxy.add_argument(
        "--payment",
        choices=["usdc", "eth", "deposit"],
        default="usdc",
        help="escrow USDC (default) or ETH, or use your pre-funded deposit",
    )
    proxy.add_argument(
        "--payer",
        metavar="ADDRESS",
        help="open sessions as the delegate of this wallet, which pays them (it called "
        "authorize_delegate for this key and approved the USDC); stopping ends them and "
        "the hosts settle",
    )
    proxy.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="require clients to send the API key held in this environment variable "
        "(needed to bind anything but loopback)",
    )
    proxy.add_argument("--s5-portal-url", help="keep the conversations on this S5 portal")
    proxy.add_argument(
        "--storage-dir", type=Path, help="keep the conversations in the embedded S5 store here"
    )
    proxy.add_argument("--json", action="store_true", help="print events as JSON lines")
    proxy.set_defaults(handler=proxy_serve)


async def proxy_serve(args: argparse.Namespace) -> int:
    from .._chat import settlement_summary
    from .._chat_api import Chat
    from ..proxy._server import ProxyServer
    from ..sdk import FabstirSDK

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env, "").strip()
        if not api_key:
            raise ConfigError(f"set {args.api_key_env} to the proxy's API key")
    config = sdk_config(args)
    payer = None if args.payer is None else checksum_address(args.payer, what="--payer")
    with stop_signals() as stop:
        async with wallet(args) as signer, FabstirSDK(config) as sdk:
            await sdk.authenticate(signer)
            chat = Chat(
                sdk,
                budget=args.budget,
                max_price_per_token=args.max_price,
                payment=args.payment,
                payer=payer,
            )
            server = ProxyServer(chat, host=args.host, port=args.port, api_key=api_key)
            await server.start()
            try:
                if args.json:
                    print(json.dumps({"event": "ready", "url": server.url}), flush=True)
                else:
                    print(
                        f"OpenAI-compatible API at {server.url} (OPENAI_BASE_URL)\n"
                        "Press Ctrl-C to stop and settle.",
                        flush=True,
                    )
                await stop.wait()
            finally:
                settlements = await server.stop()
            for s in settlements:
                if args.json:
                    print(json.dumps({"event": "settled", **s.model_dump()}), flush=True)
                else:
                    print(settlement_summary(s), file=sys.stderr, flush=True)
    return 0
