"""``fabstir devnet up``: a devnet in the foreground until Ctrl-C or SIGTERM;
``fabstir devnet install``: put the pinned anvil where the devnet finds it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from ..chain.units import ETH_DECIMALS, USDC_DECIMALS, format_units
from ..devnet._anvil import anvil_cache_dir, pinned_anvil_version
from ..devnet._balances import AccountBalances
from ..devnet._net import Devnet
from ._args import Commands, port_number
from ._signals import stop_signals

__all__ = ["add", "devnet_up", "run_up", "summary"]


def add(commands: Commands) -> None:
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
    up.set_defaults(handler=run_up)
    add_install_action(actions)


async def run_up(args: argparse.Namespace) -> int:
    return await devnet_up(
        port=args.port, block_time=args.block_time, state_dir=args.state_dir, as_json=args.json
    )


FAB_DECIMALS = 18


def summary(net: Devnet, balances: Sequence[AccountBalances] = ()) -> dict[str, Any]:
    """What ``devnet up`` prints, as data: the --json output (balances in base units, as
    read from the chain)."""
    held: list[AccountBalances | None] = [*balances] or [None] * len(net.accounts)
    return {
        "rpc_url": net.rpc_url,
        "chain_id": net.chain_id,
        "contracts": net.addresses.model_dump(),
        "manifest": str(net.manifest_path),
        "models": net.models,
        "anvil_pid": net.anvil.pid,
        "log": str(net.anvil.log_path),
        # anvil's well-known test keys, printed on purpose (anvil prints them too)
        "accounts": [
            {
                "address": a.address,
                "private_key": a.private_key,
                **({"balances": dataclasses.asdict(b)} if b is not None else {}),
            }
            for a, b in zip(net.accounts, held, strict=True)
        ],
    }


def _print_text(info: dict[str, Any], out: TextIO) -> None:
    lines = [
        "Fabstir devnet is running",
        f"  RPC URL    {info['rpc_url']}",
        f"  chain id   {info['chain_id']}",
        f"  manifest   {info['manifest']}",
        f"  anvil      pid {info['anvil_pid']}, log {info['log']}",
        "",
        "Contracts",
        *(f"  {name:<16} {address}" for name, address in info["contracts"].items()),
        "",
        "Approved models",
        *(f"  {model}" for model in info["models"]),
        "",
        "Test accounts, with what they hold now; account 0 deployed and is the treasury.",
        "These are anvil's public test keys: never send real funds to them.",
        *(_account_line(i, a) for i, a in enumerate(info["accounts"])),
        "",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), file=out, flush=True)


def _account_line(index: int, account: dict[str, Any]) -> str:
    line = f"  [{index}] {account['address']}  {account['private_key']}"
    held = account.get("balances")
    if held:
        line += (
            f"  {format_units(held['eth'], ETH_DECIMALS)} ETH, "
            f"{format_units(held['usdc'], USDC_DECIMALS)} USDC, "
            f"{format_units(held['fab'], FAB_DECIMALS)} FAB"
        )
    return line


def add_install_action(actions: Commands) -> None:
    """Register ``fabstir devnet install`` (the run imports nothing heavy either)."""
    install = actions.add_parser(
        "install",
        help="install the pinned anvil from npm into your cache directory",
        description=(
            f"Install anvil {pinned_anvil_version()} (the npm package @foundry-rs/anvil, at "
            "the version and integrity hashes fabstir-sdk is tested with) with npm into "
            f"{anvil_cache_dir()}, where the devnet finds it from any directory. Needs "
            "Node.js and npm. FABSTIR_ANVIL, a node_modules copy and an anvil on PATH still "
            "come first."
        ),
    )
    install.add_argument(
        "--force", action="store_true", help="install again even if it is already there"
    )
    install.set_defaults(handler=_run_install)


async def _run_install(args: argparse.Namespace) -> int:
    from ..devnet._anvil import find_anvil
    from ..devnet._anvil_install import install_anvil

    installed = await install_anvil(force=args.force)
    used = find_anvil()
    if used != installed:
        print(f"The devnet uses {used} first (FABSTIR_ANVIL, node_modules or PATH).")
    return 0


async def devnet_up(
    *, port: int | None, block_time: float | None, state_dir: Path, as_json: bool
) -> int:
    """Start, print, wait for SIGINT/SIGTERM, stop. Returns the exit code."""
    with stop_signals() as stop:
        async with Devnet.start(block_time=block_time, port=port, state_dir=state_dir) as net:
            info = summary(net, await net.balances())
            if as_json:
                print(json.dumps(info), flush=True)
            else:
                _print_text(info, sys.stdout)
            await stop.wait()
    if not as_json:
        print("Devnet stopped.", flush=True)
    return 0
