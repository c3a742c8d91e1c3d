"""ModelManager: the approved models of the ModelRegistry."""

from __future__ import annotations

from ..chain.client import Read
from ..chain.model_id import model_id as to_model_id
from ..errors import NotFoundError
from ..models import ModelInfo
from ._context import Context

__all__ = ["ModelManager"]


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
