"""HostManager: registration, pricing, proofs and earnings, for host operators."""

from __future__ import annotations

import json
import re
from typing import Any

from ..chain.addresses import ZERO_ADDRESS, checksum_address
from ..chain.client import Read, tx_hash
from ..chain.model_id import model_id as to_model_id
from ..errors import (
    DuplicateModelError,
    HostAlreadyRegisteredError,
    HostNotActiveError,
    InsufficientBalanceError,
    ModelNotApprovedError,
    NoEarningsError,
    ValidationError,
)
from ..models import HostInfo
from ._context import Context

__all__ = ["HostManager"]

_BYTES32 = re.compile(r"0x[0-9a-fA-F]{64}")
MIN_PROVEN_TOKENS = 100


def _nonempty(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{what} must be a non-empty string")
    return value


def _price(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValidationError(f"{what} must be a positive int (base units per 1000 tokens)")
    return value


def host_info_from_chain(address: str, raw: Any) -> HostInfo:
    """A :class:`HostInfo` from ``getNodeFullInfo`` output (metadata JSON parsed leniently)."""
    operator, stake, active, metadata, api_url, models, min_native, min_stable = raw
    try:
        meta = json.loads(metadata) if metadata else {}
    except ValueError:
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    public_key = meta.get("publicKey")
    peer_id = meta.get("peerId")
    addrs = meta.get("p2pAddrs")
    return HostInfo(
        address=address,
        api_url=api_url,
        metadata=meta,
        models=["0x" + bytes(m).hex() for m in models],
        is_active=bool(active) and int(operator, 16) != 0,
        stake=int(stake),
        min_price_per_token_native=int(min_native),
        min_price_per_token_stable=int(min_stable),
        public_key=public_key if isinstance(public_key, str) else None,
        peer_id=peer_id if isinstance(peer_id, str) else None,
        p2p_addrs=[a for a in addrs if isinstance(a, str)] if isinstance(addrs, list) else [],
    )


def _model_ids(models: object) -> list[str]:
    if not isinstance(models, list) or not models:
        raise ValidationError("models must be a non-empty list")
    ids = [to_model_id(m) for m in models]
    if len(set(ids)) != len(ids):
        raise DuplicateModelError("the same model is listed twice")
    return ids


def _token(token: str | None) -> str:
    return ZERO_ADDRESS if token is None else checksum_address(token, what="token")


class HostManager:
    """What a compute host does on chain; reads work for any address."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def __repr__(self) -> str:
        return f"HostManager(address={self._ctx.address!r})"

    async def register_host(
        self,
        api_url: str,
        models: list[str],
        *,
        min_price_per_token_native: int,
        min_price_per_token_stable: int,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """Stake the FAB minimum (approving it first) and register with ``models``."""
        sender = self._ctx.require_sender()
        _nonempty(api_url, "api_url")
        ids = _model_ids(models)
        native = _price(min_price_per_token_native, "min_price_per_token_native")
        stable = _price(min_price_per_token_stable, "min_price_per_token_stable")
        meta = json.dumps(metadata or {}, separators=(",", ":"), sort_keys=True)
        nr = self._ctx.contract("node_registry")
        fab = self._ctx.erc20(self._ctx.config.contract_addresses.fab_token)
        mr = self._ctx.contract("model_registry")
        stake, balance, allowance, entry, *approved = await self._ctx.client.reads(
            Read.of(nr.call("MIN_STAKE")),
            Read.of(fab.call("balanceOf", sender.address)),
            Read.of(fab.call("allowance", sender.address, nr.address)),
            Read.of(nr.call("getNodeFullInfo", sender.address)),
            *[Read.of(mr.call("isModelApproved", mid)) for mid in ids],
        )
        # refused before the FAB approval, which would otherwise be sent for nothing
        if int(entry[0], 16) != 0:
            raise HostAlreadyRegisteredError(f"{sender.address} is already registered")
        for mid, ok in zip(ids, approved, strict=True):
            if not ok:
                raise ModelNotApprovedError(f"model {mid} is not approved in the ModelRegistry")
        if balance < stake:
            unit = await self._ctx.unit(fab.address)
            raise InsufficientBalanceError(stake, balance, "FAB", unit=unit)
        if allowance < stake:
            await sender.send(fab.call("approve", nr.address, stake))
        fn = nr.call("registerNode", meta, api_url, ids, native, stable)
        return tx_hash(await sender.send(fn))

    async def set_model_pricing(self, model: str, token: str | None, price: int) -> str:
        """Set this host's minimum price for ``model`` in ``token`` (None: ETH)."""
        token_address = ZERO_ADDRESS if token is None else checksum_address(token, what="token")
        fn = self._ctx.contract("node_registry").call(
            "setModelTokenPricing", to_model_id(model), token_address, _price(price, "price")
        )
        return tx_hash(await self._ctx.require_sender().send(fn))

    async def clear_model_pricing(self, model: str, token: str | None) -> str:
        """Drop this host's price for ``model`` in ``token`` (None: ETH): its default applies."""
        fn = self._ctx.contract("node_registry").call(
            "clearModelTokenPricing", to_model_id(model), _token(token)
        )
        return tx_hash(await self._ctx.require_sender().send(fn))

    async def get_model_pricing(
        self, model: str, token: str | None = None, address: str | None = None
    ) -> int:
        """The minimum price (per 1000 tokens) a session on ``model`` in ``token`` must pay."""
        host = self._ctx.require_address(address)
        nr = self._ctx.contract("node_registry")
        call = nr.call("getModelPricing", host, to_model_id(model), _token(token))
        return int(await self._ctx.client.read(call))

    async def update_supported_models(self, models: list[str]) -> str:
        """Replace the models this host serves (each must be approved in the ModelRegistry)."""
        fn = self._ctx.contract("node_registry").call("updateSupportedModels", _model_ids(models))
        return tx_hash(await self._ctx.require_sender().send(fn))

    async def update_api_url(self, url: str) -> str:
        fn = self._ctx.contract("node_registry").call("updateApiUrl", _nonempty(url, "url"))
        return tx_hash(await self._ctx.require_sender().send(fn))

    async def update_metadata(self, metadata: dict[str, Any]) -> str:
        if not isinstance(metadata, dict):
            raise ValidationError("metadata must be a dict")
        text = json.dumps(metadata, separators=(",", ":"), sort_keys=True)
        fn = self._ctx.contract("node_registry").call("updateMetadata", text)
        return tx_hash(await self._ctx.require_sender().send(fn))

    async def unregister_host(self) -> str:
        """Leave the market; the whole FAB stake comes back in the same transaction."""
        sender = self._ctx.require_sender()
        info = await self.get_host_info(sender.address)
        if not info.is_active:
            raise HostNotActiveError(f"host {sender.address} is not registered")
        fn = self._ctx.contract("node_registry").call("unregisterNode")
        return tx_hash(await sender.send(fn))

    async def get_host_info(self, address: str) -> HostInfo:
        """The host's registry entry; an unregistered address reads as inactive."""
        host = checksum_address(address, what="address")
        nr = self._ctx.contract("node_registry")
        raw = await self._ctx.client.read(nr.call("getNodeFullInfo", host))
        return host_info_from_chain(host, raw)

    async def submit_proof_of_work(
        self, job_id: int, tokens: int, proof_hash: str | bytes, proof_cid: str, delta_cid: str
    ) -> str:
        """Claim ``tokens`` of proven work on a session this account hosts."""
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < MIN_PROVEN_TOKENS:
            raise ValidationError(f"tokens must be an int >= {MIN_PROVEN_TOKENS}")
        if isinstance(proof_hash, str):
            if not _BYTES32.fullmatch(proof_hash):
                raise ValidationError("proof_hash must be 0x followed by 64 hex digits")
            digest = bytes.fromhex(proof_hash[2:])
        elif isinstance(proof_hash, bytes) and len(proof_hash) == 32:
            digest = proof_hash
        else:
            raise ValidationError("proof_hash must be 32 bytes")
        if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id <= 0:
            raise ValidationError("job_id must be a positive int")
        fn = self._ctx.contract("job_marketplace").call(
            "submitProofOfWork", job_id, tokens, digest, str(proof_cid), str(delta_cid)
        )
        return tx_hash(await self._ctx.require_sender().send(fn))

    async def get_host_earnings(self, token: str | None = None, address: str | None = None) -> int:
        """Earnings credited to the host and not yet withdrawn, in base units."""
        host = self._ctx.require_address(address)
        token_address = ZERO_ADDRESS if token is None else checksum_address(token, what="token")
        he = self._ctx.contract("host_earnings")
        return int(await self._ctx.client.read(he.call("getBalance", host, token_address)))

    async def withdraw_earnings(self, token: str | None = None) -> str:
        """Withdraw all of this host's earnings in ``token`` (None: ETH)."""
        sender = self._ctx.require_sender()
        if await self.get_host_earnings(token) == 0:
            raise NoEarningsError(f"no {token or 'ETH'} earnings to withdraw for {sender.address}")
        token_address = _token(token)
        fn = self._ctx.contract("host_earnings").call("withdrawAll", token_address)
        return tx_hash(await sender.send(fn))
