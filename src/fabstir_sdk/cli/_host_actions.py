"""``fabstir host register|update|price|unregister|status``: a host's life on chain.

Each action is one :class:`~fabstir_sdk.managers.host.HostManager` call with the host's
wallet, a key or a signer service (see :mod:`fabstir_sdk.cli.host` for where it comes
from), and prints one JSON line; a contract refusal is a typed error, reported before any
transaction.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError

if TYPE_CHECKING:
    from ..managers.host import HostManager
    from ..sdk import FabstirSDK

__all__ = ["add_operator_commands"]


def _metadata(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError("--metadata must be a JSON object") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--metadata must be a JSON object")
    return value


def add_operator_commands(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the operator actions to ``fabstir host``."""
    from ._args import add_chain_arguments

    register = actions.add_parser(
        "register",
        help="stake the FAB minimum and register this host",
        description="Approve and stake the FAB minimum, then register with models and prices.",
    )
    add_chain_arguments(register, signer=True)
    register.add_argument("--api-url", required=True, help="the URL clients connect to")
    register.add_argument(
        "--model", action="append", required=True, help="model to serve, 'repo:file' (repeat)"
    )
    register.add_argument(
        "--price-stable", type=int, required=True, metavar="N", help="USDC units per 1000 tokens"
    )
    register.add_argument(
        "--price-native", type=int, required=True, metavar="N", help="wei per 1000 tokens"
    )
    register.add_argument("--metadata", type=_metadata, help="a JSON object (e.g. publicKey)")
    register.set_defaults(handler=_register)

    update = actions.add_parser(
        "update",
        help="change the API URL, metadata or served models",
        description="Change any of the API URL, the metadata and the served models.",
    )
    add_chain_arguments(update, signer=True)
    update.add_argument("--api-url", help="the new URL clients connect to")
    update.add_argument("--metadata", type=_metadata, help="the new metadata, a JSON object")
    update.add_argument("--model", action="append", help="the new list of served models (repeat)")
    update.set_defaults(handler=_update)

    price = actions.add_parser(
        "price",
        help="set or clear this host's price for one model and token",
        description="Set (--set N) or clear (--clear) the minimum price per 1000 tokens for a "
        "served model, in ETH (default), USDC (--usdc) or another ERC-20 (--token).",
    )
    add_chain_arguments(price, signer=True)
    price.add_argument("--model", required=True, help="a served model, 'repo:file'")
    which = price.add_mutually_exclusive_group()
    which.add_argument("--usdc", action="store_true", help="the configured USDC")
    which.add_argument("--token", help="an ERC-20 address")
    what = price.add_mutually_exclusive_group(required=True)
    what.add_argument("--set", type=int, metavar="N", help="base units per 1000 tokens")
    what.add_argument("--clear", action="store_true", help="back to the host's default")
    price.set_defaults(handler=_price)

    unregister = actions.add_parser(
        "unregister",
        help="leave the market; the FAB stake comes back",
        description="Unregister this host; the whole stake is returned in the same transaction.",
    )
    add_chain_arguments(unregister, signer=True)
    unregister.set_defaults(handler=_unregister)

    status = actions.add_parser(
        "status",
        help="this host's registry entry, prices and earnings",
        description="The registry entry, the price of each served model in ETH and USDC, "
        "and the earnings not yet withdrawn (of --address, else of the key's host).",
    )
    add_chain_arguments(status, signer=True)
    status.add_argument("--address", help="any host's address (no key needed)")
    status.set_defaults(handler=_status)


@asynccontextmanager
async def _hosts(args: argparse.Namespace, *, key: bool = True) -> AsyncIterator[FabstirSDK]:
    from ..sdk import FabstirSDK
    from ._args import sdk_config, wallet

    async with FabstirSDK(sdk_config(args)) as sdk:
        if not key:
            yield sdk
            return
        async with wallet(args) as signer:
            await sdk.authenticate(signer)
            yield sdk


def _print(value: dict[str, Any]) -> int:
    print(json.dumps(value), flush=True)
    return 0


async def _register(args: argparse.Namespace) -> int:
    async with _hosts(args) as sdk:
        hm = sdk.get_host_manager()
        tx = await hm.register_host(
            args.api_url,
            args.model,
            min_price_per_token_native=args.price_native,
            min_price_per_token_stable=args.price_stable,
            metadata=args.metadata,
        )
        info = await hm.get_host_info(sdk.get_auth_manager().get_user_address())
        return _print({"registered": info.address, "stake": str(info.stake), "tx_hash": tx})


async def _update(args: argparse.Namespace) -> int:
    if args.api_url is None and args.metadata is None and not args.model:
        raise ValidationError("say what to update: --api-url, --metadata and/or --model")
    async with _hosts(args) as sdk:
        hm = sdk.get_host_manager()
        txs: dict[str, str] = {}
        if args.api_url is not None:
            txs["api_url"] = await hm.update_api_url(args.api_url)
        if args.metadata is not None:
            txs["metadata"] = await hm.update_metadata(args.metadata)
        if args.model:
            txs["models"] = await hm.update_supported_models(args.model)
        return _print({"updated": sorted(txs), "tx_hashes": txs})


async def _price(args: argparse.Namespace) -> int:
    async with _hosts(args) as sdk:
        hm = sdk.get_host_manager()
        token = sdk.config.contract_addresses.usdc_token if args.usdc else args.token
        if args.clear:
            tx = await hm.clear_model_pricing(args.model, token)
        else:
            tx = await hm.set_model_pricing(args.model, token, args.set)
        price = await hm.get_model_pricing(args.model, token)
        return _print({"model": args.model, "token": token or "ETH", "price": price, "tx_hash": tx})


async def _unregister(args: argparse.Namespace) -> int:
    async with _hosts(args) as sdk:
        hm = sdk.get_host_manager()
        address = sdk.get_auth_manager().get_user_address()
        stake = (await hm.get_host_info(address)).stake
        tx = await hm.unregister_host()
        return _print({"unregistered": address, "stake_returned": str(stake), "tx_hash": tx})


async def _status(args: argparse.Namespace) -> int:
    async with _hosts(args, key=args.address is None) as sdk:
        hm = sdk.get_host_manager()
        address = args.address or sdk.get_auth_manager().get_user_address()
        return _print(await _status_of(hm, address, sdk.config.contract_addresses.usdc_token))


async def _status_of(hm: HostManager, address: str, usdc: str) -> dict[str, Any]:
    info = await hm.get_host_info(address)
    prices = {
        model: {
            "native": await hm.get_model_pricing(model, None, info.address),
            "usdc": await hm.get_model_pricing(model, usdc, info.address),
        }
        for model in info.models
    }
    return {
        "address": info.address,
        "active": info.is_active,
        "api_url": info.api_url,
        "stake": str(info.stake),
        "metadata": info.metadata,
        "prices": prices,
        "earnings": {
            "ETH": str(await hm.get_host_earnings(None, info.address)),
            "USDC": str(await hm.get_host_earnings(usdc, info.address)),
        },
    }
