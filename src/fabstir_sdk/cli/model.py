"""``fabstir model list|status|propose|vote|execute|withdraw|withdraw-fees``: the model
marketplace's governance on the ModelRegistry, one ModelManager call per action.

Each action prints one JSON line (FAB amounts as strings of base units, 18 decimals); a
proposal at the wrong stage is refused with a typed error before any transaction. The key
comes from ``--key-env`` (default ``FABSTIR_PRIVATE_KEY``) or ``--key-file``, or stays in a
signer service (``--signer-url``); ``list`` and ``status`` need none.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ._args import Commands, add_chain_arguments, private_key, sdk_config, wallet

if TYPE_CHECKING:
    from ..managers.model import ModelProposal
    from ..sdk import FabstirSDK

__all__ = ["add"]

_KEY_ENV = "FABSTIR_PRIVATE_KEY"


def add(commands: Commands) -> None:
    model = commands.add_parser(
        "model",
        help="the model marketplace: list models, propose one, vote, execute, withdraw",
        description="Community governance of the ModelRegistry: a proposal (PROPOSAL_FEE FAB) "
        "is voted on with locked FAB for PROPOSAL_DURATION; once executed, a model with "
        "APPROVAL_THRESHOLD FAB for it (and more for than against) is approved for hosts "
        "and clients, and voters take their FAB back.",
    )
    actions = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    def action(name: str, text: str, *, handler: Any) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        add_chain_arguments(parser, key_env=_KEY_ENV, role="account", signer=True)
        parser.set_defaults(handler=handler)
        return parser

    action("list", "the registry's models and the open proposals", handler=_list)
    status = action(
        "status", "one model's registry entry, proposal and your votes", handler=_status
    )
    status.add_argument("--model", required=True, help="'repo:file' or a model id")
    status.add_argument("--address", help="whose votes to show (default: the key's, if set)")

    propose = action(
        "propose", "propose a model for a vote, paying the FAB proposal fee", handler=_propose
    )
    propose.add_argument("--repo", required=True, help="the Hugging Face repository")
    propose.add_argument("--file", required=True, help="the weights' file name in it")
    propose.add_argument("--sha256", required=True, help="the weights' SHA-256, 64 hex digits")

    vote = action("vote", "lock FAB for (or --against) a proposal", handler=_vote)
    vote.add_argument("--model", required=True, help="'repo:file' or a model id")
    vote.add_argument("--amount", required=True, help="FAB to lock, e.g. 50000 or 0.5")
    vote.add_argument("--against", action="store_true", help="vote against it")

    execute = action("execute", "close a proposal whose vote is over", handler=_execute)
    execute.add_argument("--model", required=True, help="'repo:file' or a model id")

    withdraw = action("withdraw", "take back your FAB from an executed proposal", handler=_withdraw)
    withdraw.add_argument("--model", required=True, help="'repo:file' or a model id")

    fees = action(
        "withdraw-fees", "owner only: withdraw the fees of rejected proposals", handler=_fees
    )
    fees.add_argument("--amount", help="FAB to withdraw (default: all of them)")


@asynccontextmanager
async def _sdk(args: argparse.Namespace, *, key: bool = True) -> AsyncIterator[FabstirSDK]:
    from ..sdk import FabstirSDK

    async with FabstirSDK(sdk_config(args)) as sdk:
        if not key:
            yield sdk
            return
        async with wallet(args) as signer:  # a key, or a signer service (--signer-url)
            await sdk.authenticate(signer)
            yield sdk


def _print(value: dict[str, Any]) -> int:
    print(json.dumps(value), flush=True)
    return 0


def _shown(p: ModelProposal) -> dict[str, Any]:
    return {
        **p.model_dump(),
        "votes_for": str(p.votes_for),
        "votes_against": str(p.votes_against),
    }


def _fab(text: str) -> int:
    from ..chain.units import to_base_units

    return to_base_units(text, 18, what="--amount")


async def _list(args: argparse.Namespace) -> int:
    async with _sdk(args, key=False) as sdk:
        mm = sdk.get_model_manager()
        models = [m.model_dump() for m in await mm.list_models()]
        return _print(
            {"models": models, "proposals": [_shown(p) for p in await mm.list_proposals()]}
        )


async def _status(args: argparse.Namespace) -> int:
    from ..chain.model_id import model_id
    from ..errors import NotFoundError

    mid = model_id(args.model)
    async with _sdk(args, key=False) as sdk:
        mm = sdk.get_model_manager()
        try:
            entry: dict[str, Any] | None = (await mm.get_model(mid)).model_dump()
        except NotFoundError:
            entry = None
        try:
            proposal: dict[str, Any] | None = _shown(await mm.get_proposal(mid))
        except NotFoundError:
            proposal = None
        shown: dict[str, Any] = {"model_id": mid, "model": entry, "proposal": proposal}
        voter = args.address or args.signer_address
        if voter is None and (args.key_file is not None or _has_key(args)):
            voter = (await sdk.authenticate(private_key(args))).user_address
        if voter is not None and proposal is not None:
            shown["votes"] = {"address": voter, "amount": str(await mm.get_votes(mid, voter))}
        return _print(shown)


def _has_key(args: argparse.Namespace) -> bool:
    return bool(os.environ.get(args.key_env, "").strip())


async def _propose(args: argparse.Namespace) -> int:
    async with _sdk(args) as sdk:
        mm = sdk.get_model_manager()
        tx = await mm.propose_model(args.repo, args.file, args.sha256)
        proposal = await mm.get_proposal(mm.get_model_id(args.repo, args.file))
        return _print({"proposed": proposal.model_id, "end_time": proposal.end_time, "tx_hash": tx})


async def _vote(args: argparse.Namespace) -> int:
    amount = _fab(args.amount)
    async with _sdk(args) as sdk:
        mm = sdk.get_model_manager()
        tx = await mm.vote_on_proposal(args.model, args.amount, support=not args.against)
        proposal = await mm.get_proposal(args.model)
        return _print(
            {
                "model_id": proposal.model_id,
                "support": not args.against,
                "amount": str(amount),
                "votes_for": str(proposal.votes_for),
                "votes_against": str(proposal.votes_against),
                "end_time": proposal.end_time,
                "extension_count": proposal.extension_count,
                "tx_hash": tx,
            }
        )


async def _execute(args: argparse.Namespace) -> int:
    async with _sdk(args) as sdk:
        mm = sdk.get_model_manager()
        tx = await mm.execute_proposal(args.model)
        proposal = await mm.get_proposal(args.model)
        approved = await mm.is_model_approved(proposal.model_id)
        return _print({"model_id": proposal.model_id, "approved": approved, "tx_hash": tx})


async def _withdraw(args: argparse.Namespace) -> int:
    async with _sdk(args) as sdk:
        mm = sdk.get_model_manager()
        amount = await mm.get_votes(args.model)
        tx = await mm.withdraw_votes(args.model)
        return _print({"model": args.model, "withdrawn": str(amount), "tx_hash": tx})


async def _fees(args: argparse.Namespace) -> int:
    amount = _fab(args.amount) if args.amount is not None else None
    async with _sdk(args) as sdk:
        mm = sdk.get_model_manager()
        kept = await mm.get_rejected_fees()
        tx = await mm.withdraw_rejected_fees(amount)
        return _print({"withdrawn": str(kept if amount is None else amount), "tx_hash": tx})
