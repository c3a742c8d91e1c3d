"""ModelManager: the approved models of the ModelRegistry."""

from __future__ import annotations

import asyncio

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
        return bool(await self._ctx.client.call(mr.functions.isModelApproved(to_model_id(model))))

    async def get_model(self, model: str) -> ModelInfo:
        """The registry entry of ``model``; NotFoundError if it was never added."""
        mid = to_model_id(model)
        mr = self._ctx.contract("model_registry")
        (repo, file, sha256, _tier, active, timestamp), approved = await asyncio.gather(
            self._ctx.client.call(mr.functions.getModel(mid)),
            self._ctx.client.call(mr.functions.isModelApproved(mid)),
        )
        if timestamp == 0 and not repo:
            raise NotFoundError(f"model {model} is not in the registry")
        return ModelInfo(
            model_id=mid,
            repo=repo,
            file=file,
            sha256="0x" + bytes(sha256).hex(),
            approved=bool(approved and active),
        )

    async def list_models(self) -> list[ModelInfo]:
        """Every model in the registry, approved or not."""
        mr = self._ctx.contract("model_registry")
        ids = await self._ctx.client.call(mr.functions.getAllModels())
        return list(await asyncio.gather(*(self.get_model("0x" + bytes(i).hex()) for i in ids)))
