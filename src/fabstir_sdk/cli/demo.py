"""``fabstir demo``: the whole story on a local devnet (or the payment walkthrough)."""

from __future__ import annotations

import argparse

from ._args import Commands

__all__ = ["add", "run"]


def add(commands: Commands) -> None:
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
    demo.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    from ..demo import payment_walkthrough, session_demo

    if args.payments:
        await payment_walkthrough()
    else:
        await session_demo()
    return 0
