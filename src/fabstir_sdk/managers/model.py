"""ModelManager: the approved models of the ModelRegistry, and proposing and voting on new ones."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..chain.client import Read, tx_hash
from ..chain.model_id import model_id as to_model_id
from ..chain.units import Amount, to_base_units
from ..errors import (
    InsufficientBalanceError,
    NoEarningsError,
    NotFoundError,
    ProposalStateError,
    ValidationError,
)
from ..models import ModelInfo
from ._context import Context

__all__ = ["ModelManager", "ModelProposal"]

_SHA256 = re.compile(r"(0x)?[0-9a-fA-F]{64}")
#: FAB, like every governance amount, has 18 decimals.
_FAB_DECIMALS = 18


class ModelProposal(BaseModel):
    """A community proposal as the registry holds it; FAB amounts in base units."""

    model_config = ConfigDict(frozen=True)

    model_id: str
    proposer: str
    repo: str
    file: str
    sha256: str
    votes_for: int
    votes_against: int
    proposal_time: int
    end_time: int
    extension_count: int
    executed: bool


@dataclass(frozen=True)
class _Stage:
    proposal: ModelProposal | None
    now: int  #: the latest block's timestamp
    extra: list[Any]

    def open(self, mid: str) -> ModelProposal:
        """The proposal, if it was made and not executed."""
        if self.proposal is None:
            raise NotFoundError(f"no proposal was made for model {mid}")
        if self.proposal.executed:
            raise ProposalStateError(f"the proposal of model {mid} was executed already")
        return self.proposal


def _proposal(mid: str, raw: Any) -> ModelProposal | None:
    _id, proposer, votes_for, against, time, executed, data, end, extensions = raw
    if time == 0:
        return None
    return ModelProposal(
        model_id=mid,
        proposer=proposer,
        repo=data[0],
        file=data[1],
        sha256="0x" + bytes(data[2]).hex(),
        votes_for=int(votes_for),
        votes_against=int(against),
        proposal_time=int(time),
        end_time=int(end),
        extension_count=int(extensions),
        executed=bool(executed),
    )


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class ModelManager:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def __repr__(self) -> str:
        return "ModelManager()"

    @staticmethod
    def get_model_id(repo: str, file: str) -> str:
        """``keccak256(repo + "/" + file)``, as the registry computes it."""
        return to_model_id(f"{repo}:{file}")

    async def is_model_approved(self, model: str) -> bool:
        mr = self._ctx.contract("model_registry")
        return bool(await self._ctx.client.read(mr.call("isModelApproved", to_model_id(model))))

    async def get_model(self, model: str) -> ModelInfo:
        """The registry entry of ``model``; NotFoundError if it was never added."""
        (info,) = await self._models([to_model_id(model)], missing_ok=False)
        return info

    async def list_models(self) -> list[ModelInfo]:
        """Every model in the registry, approved or not, read in one batch."""
        mr = self._ctx.contract("model_registry")
        ids = await self._ctx.client.read(mr.call("getAllModels"))
        return await self._models(["0x" + bytes(i).hex() for i in ids], missing_ok=True)

    # -- governance -----------------------------------------------------------------------
    #
    # Each write reads the proposal's stage first and refuses with a typed error before any
    # transaction (the FAB approval included); the contract's own checks ride in the gas
    # estimate after that, for the rare race.

    async def propose_model(self, repo: str, file: str, sha256: str) -> str:
        """Propose ``repo:file`` (weights pinned to ``sha256``) for a community vote, paying
        the registry's PROPOSAL_FEE in FAB (approved first when the allowance is short)."""
        for value, what in ((repo, "repo"), (file, "file")):
            if not isinstance(value, str) or not value.strip():
                raise ValidationError(f"{what} must be a non-empty string")
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256) or int(sha256, 16) == 0:
            raise ValidationError("sha256 must be 64 hex digits, not all zero")
        mid = self.get_model_id(repo, file)
        mr = self._ctx.contract("model_registry")
        stage = await self._stage(
            mid,
            Read.of(mr.call("PROPOSAL_FEE")),
            Read.of(mr.call("getModel", mid)),
            Read.of(mr.call("lastProposalExecutionTime", mid)),
            Read.of(mr.call("REPROPOSAL_COOLDOWN")),
        )
        fee, model, last, cooldown = stage.extra
        if model[5] != 0:  # registered at a time: the model exists
            raise ProposalStateError(f"model {repo}:{file} ({mid}) is in the registry already")
        if stage.proposal is not None and not stage.proposal.executed:
            raise ProposalStateError(
                f"model {mid} has an open proposal, voting until {_when(stage.proposal.end_time)}"
            )
        if last and stage.now < last + cooldown:
            raise ProposalStateError(
                f"model {mid} was last decided at {_when(last)}: it may be proposed again from "
                f"{_when(last + cooldown)}"
            )
        await self._lock_fab(int(fee))
        fn = mr.call("proposeModel", repo, file, bytes.fromhex(sha256.removeprefix("0x")))
        return tx_hash(await self._ctx.require_sender().send(fn))

    async def vote_on_proposal(self, model: str, amount: Amount, support: bool = True) -> str:
        """Lock ``amount`` FAB (human units) for or against the proposal of ``model``.

        A vote in the last EXTENSION_WINDOW before the end that brings the late votes to
        EXTENSION_THRESHOLD extends the vote by EXTENSION_DURATION (at most MAX_EXTENSIONS
        times): see :attr:`ModelProposal.end_time`."""
        if not isinstance(support, bool):
            raise ValidationError("support must be True or False")
        value = to_base_units(amount, _FAB_DECIMALS)  # refuses 0 and less
        mid = to_model_id(model)
        stage = await self._stage(mid)
        proposal = stage.open(mid)
        if stage.now >= proposal.end_time:
            raise ProposalStateError(
                f"the vote on model {mid} ended at {_when(proposal.end_time)}: execute it"
            )
        await self._lock_fab(value)
        mr = self._ctx.contract("model_registry")
        fn = mr.call("voteOnProposal", mid, value, support)
        return tx_hash(await self._ctx.require_sender().send(fn))

    async def execute_proposal(self, model: str) -> str:
        """Close a proposal whose vote is over (anyone may): the model is added if it won
        (APPROVAL_THRESHOLD FAB for it, and more for than against; the fee goes back to the
        proposer), else the fee is kept as a rejected fee."""
        mid = to_model_id(model)
        stage = await self._stage(mid)
        proposal = stage.open(mid)
        if stage.now < proposal.end_time:
            raise ProposalStateError(
                f"the vote on model {mid} runs until {_when(proposal.end_time)} "
                f"({proposal.end_time - stage.now} s from the latest block)"
            )
        fn = self._ctx.contract("model_registry").call("executeProposal", mid)
        return tx_hash(await self._ctx.require_sender().send(fn))

    async def withdraw_votes(self, model: str) -> str:
        """Take back the FAB this account voted with on an executed proposal."""
        mid = to_model_id(model)
        mr = self._ctx.contract("model_registry")
        me = self._ctx.require_sender().address
        stage = await self._stage(mid, Read.of(mr.call("votes", mid, me)))
        (locked,) = stage.extra
        if stage.proposal is None:
            raise NotFoundError(f"no proposal was made for model {mid}")
        if not stage.proposal.executed:
            raise ProposalStateError(
                f"the proposal of model {mid} is not executed yet (voting until "
                f"{_when(stage.proposal.end_time)}): votes come back after execute_proposal"
            )
        if not locked:
            raise ProposalStateError(f"{me} has no votes left on the proposal of model {mid}")
        fn = mr.call("withdrawVotes", mid)
        return tx_hash(await self._ctx.require_sender().send(fn))

    async def withdraw_rejected_fees(self, amount: int | None = None) -> str:
        """Owner only: withdraw ``amount`` base units of FAB kept from rejected proposals
        (None: all of them)."""
        if amount is not None and (
            isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0
        ):
            raise ValidationError("amount must be a positive int (FAB base units)")
        mr = self._ctx.contract("model_registry")
        me = self._ctx.require_sender().address
        owner, kept = await self._ctx.client.reads(
            Read.of(mr.call("owner")), Read.of(mr.call("accumulatedRejectedFees"))
        )
        if owner != me:
            raise ValidationError(f"only the registry's owner {owner} may withdraw rejected fees")
        if kept == 0:
            raise NoEarningsError("the registry keeps no fees of rejected proposals")
        if amount is None:
            amount = int(kept)
        elif amount > kept:
            unit = await self._ctx.unit(self._ctx.config.contract_addresses.fab_token)
            raise InsufficientBalanceError(
                amount, int(kept), "FAB", unit=unit, holder="the registry"
            )
        fn = mr.call("withdrawRejectedFees", amount)
        return tx_hash(await self._ctx.require_sender().send(fn))

    async def get_rejected_fees(self) -> int:
        """FAB (base units) the registry keeps from rejected proposals, for its owner."""
        mr = self._ctx.contract("model_registry")
        return int(await self._ctx.client.read(mr.call("accumulatedRejectedFees")))

    async def get_proposal(self, model: str) -> ModelProposal:
        """The proposal of ``model``; NotFoundError if none was ever made."""
        mid = to_model_id(model)
        mr = self._ctx.contract("model_registry")
        proposal = _proposal(mid, await self._ctx.client.read(mr.call("proposals", mid)))
        if proposal is None:
            raise NotFoundError(f"no proposal was made for model {mid}")
        return proposal

    async def list_proposals(self) -> list[ModelProposal]:
        """The proposals not executed yet (voting, or waiting for execute_proposal), in the
        order they were made, read in one batch."""
        mr = self._ctx.contract("model_registry")
        ids = [
            "0x" + bytes(i).hex()
            for i in await self._ctx.client.read(mr.call("getActiveProposals"))
        ]
        raws = await self._ctx.client.reads(*(Read.of(mr.call("proposals", i)) for i in ids))
        return [p for i, raw in zip(ids, raws, strict=True) if (p := _proposal(i, raw))]

    async def get_votes(self, model: str, address: str | None = None) -> int:
        """FAB (base units) ``address`` (default: this account) has locked on the proposal."""
        voter = self._ctx.require_address(address)
        mr = self._ctx.contract("model_registry")
        return int(await self._ctx.client.read(mr.call("votes", to_model_id(model), voter)))

    async def _stage(self, mid: str, *extra: Read) -> _Stage:
        """The proposal of ``mid`` (None if never made), the latest block's time and
        ``extra`` reads, in one batch."""
        self._ctx.require_sender()
        mr = self._ctx.contract("model_registry")
        raw, block, *rest = await self._ctx.client.reads(
            Read.of(mr.call("proposals", mid)),
            Read("eth_getBlockByNumber", ("latest", False), lambda b: b, "latest block"),
            *extra,
        )
        return _Stage(_proposal(mid, raw), int(block["timestamp"], 16), rest)

    async def _lock_fab(self, amount: int) -> None:
        """Refuse a short FAB balance before anything is sent; approve the registry for
        ``amount`` when its allowance is short."""
        sender = self._ctx.require_sender()
        mr = self._ctx.contract("model_registry")
        fab = self._ctx.erc20(self._ctx.config.contract_addresses.fab_token)
        balance, allowance = await self._ctx.client.reads(
            Read.of(fab.call("balanceOf", sender.address)),
            Read.of(fab.call("allowance", sender.address, mr.address)),
        )
        if balance < amount:
            unit = await self._ctx.unit(fab.address)
            raise InsufficientBalanceError(amount, balance, "FAB", unit=unit)
        if allowance < amount:
            await sender.send(fab.call("approve", mr.address, amount))

    async def _models(self, ids: list[str], *, missing_ok: bool) -> list[ModelInfo]:
        mr = self._ctx.contract("model_registry")
        reads = [
            read
            for mid in ids
            for read in (
                Read.of(mr.call("getModel", mid)),
                Read.of(mr.call("isModelApproved", mid)),
            )
        ]
        values = await self._ctx.client.reads(*reads)
        infos = []
        for mid, (entry, approved) in zip(
            ids, zip(values[::2], values[1::2], strict=True), strict=True
        ):
            repo, file, sha256, _tier, active, timestamp = entry
            if timestamp == 0 and not repo:
                if missing_ok:
                    continue
                raise NotFoundError(f"model {mid} is not in the registry")
            infos.append(
                ModelInfo(
                    model_id=mid,
                    repo=repo,
                    file=file,
                    sha256="0x" + bytes(sha256).hex(),
                    approved=bool(approved and active),
                )
            )
        return infos
