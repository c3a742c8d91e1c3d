"""ModelManager: the approved models of the ModelRegistry, and proposing and voting on new ones."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

from ..chain.client import Read, tx_hash
from ..chain.model_id import model_id as to_model_id
from ..chain.units import Amount, to_base_units
from ..errors import InsufficientBalanceError, NotFoundError, ValidationError
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

    async def propose_model(self, repo: str, file: str, sha256: str) -> str:
        """Propose ``repo:file`` (weights pinned to ``sha256``) for a community vote, paying
        the registry's PROPOSAL_FEE in FAB (approved first when the allowance is short)."""
        for value, what in ((repo, "repo"), (file, "file")):
            if not isinstance(value, str) or not value.strip():
                raise ValidationError(f"{what} must be a non-empty string")
        if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256) or int(sha256, 16) == 0:
            raise ValidationError("sha256 must be 64 hex digits, not all zero")
        mr = self._ctx.contract("model_registry")
        (fee,) = await self._ctx.client.reads(Read.of(mr.call("PROPOSAL_FEE")))
        await self._lock_fab(int(fee))
        fn = mr.call("proposeModel", repo, file, bytes.fromhex(sha256.removeprefix("0x")))
        return tx_hash(await self._ctx.require_sender().send(fn))

    async def vote_on_proposal(self, model: str, amount: Amount, support: bool = True) -> str:
        """Lock ``amount`` FAB (human units) for or against the proposal of ``model``."""
        if not isinstance(support, bool):
            raise ValidationError("support must be True or False")
        value = to_base_units(amount, _FAB_DECIMALS)
        await self._lock_fab(value)
        mr = self._ctx.contract("model_registry")
        fn = mr.call("voteOnProposal", to_model_id(model), value, support)
        return tx_hash(await self._ctx.require_sender().send(fn))

    async def execute_proposal(self, model: str) -> str:
        """Close a proposal whose vote is over: the model is added if it won."""
        fn = self._ctx.contract("model_registry").call("executeProposal", to_model_id(model))
        return tx_hash(await self._ctx.require_sender().send(fn))

    async def withdraw_votes(self, model: str) -> str:
        """Take back the FAB this account voted with on an executed proposal."""
        fn = self._ctx.contract("model_registry").call("withdrawVotes", to_model_id(model))
        return tx_hash(await self._ctx.require_sender().send(fn))

    async def withdraw_rejected_fees(self, amount: int) -> str:
        """Owner only: withdraw ``amount`` base units of FAB kept from rejected proposals."""
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise ValidationError("amount must be a positive int (FAB base units)")
        fn = self._ctx.contract("model_registry").call("withdrawRejectedFees", amount)
        return tx_hash(await self._ctx.require_sender().send(fn))

    async def get_proposal(self, model: str) -> ModelProposal:
        """The proposal of ``model``; NotFoundError if none was ever made."""
        mid = to_model_id(model)
        mr = self._ctx.contract("model_registry")
        raw = await self._ctx.client.read(mr.call("proposals", mid))
        _id, proposer, votes_for, against, time, executed, data, end, extensions = raw
        if time == 0:
            raise NotFoundError(f"no proposal was made for model {mid}")
        repo, file, sha256 = data[0], data[1], data[2]
        return ModelProposal(
            model_id=mid,
            proposer=proposer,
            repo=repo,
            file=file,
            sha256="0x" + bytes(sha256).hex(),
            votes_for=int(votes_for),
            votes_against=int(against),
            proposal_time=int(time),
            end_time=int(end),
            extension_count=int(extensions),
            executed=bool(executed),
        )

    async def get_votes(self, model: str, address: str | None = None) -> int:
        """FAB (base units) ``address`` (default: this account) has locked on the proposal."""
        voter = self._ctx.require_address(address)
        mr = self._ctx.contract("model_registry")
        return int(await self._ctx.client.read(mr.call("votes", to_model_id(model), voter)))

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
