"""``fabstir chat``: a paid session with a host, one stdin line per prompt."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._args import Commands, add_chain_arguments, sdk_config, wallet

__all__ = ["add", "run"]


def add(commands: Commands) -> None:
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
    add_chain_arguments(chat, key_env="FABSTIR_PRIVATE_KEY", role="user", signer=True)
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
        help="complete: settle now (you pay gas, refund now; the default); end: the host "
        "settles (no gas; the default with --payer)",
    )
    chat.add_argument(
        "--payer",
        metavar="ADDRESS",
        help="chat as this wallet's agent: it pays, from the USDC it approved, once it has "
        "authorised your address (authorize_delegate); the host settles on exit",
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
    chat.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    from .._chat import chat

    config = sdk_config(args)
    async with wallet(args) as signer:
        return await chat(
            config,
            signer,
            model=args.model,
            host=args.host_address,
            payment=args.payment,
            deposit=args.deposit,
            max_price_per_token=args.max_price,
            on_exit=args.on_exit,
            expected_tokens=args.expected_tokens,
            yes=args.yes,
            payer=args.payer,
        )
