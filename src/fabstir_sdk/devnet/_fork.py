"""A devnet that forks a live chain: its deployed contracts, not a fresh deployment.

Which contracts: the ``addresses`` given, else a ``manifest``, else the manifest shipped for
that chain id (``contracts/deployments``: Base Sepolia). Every address must hold code on the
fork, and the approved models are read from the fork's ModelRegistry, so ``net.models`` and
``net.sdk_config()`` describe the chain as it is.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .._resources import contracts_path
from ..chain.rpc import JsonRpcClient
from ..config import ContractAddresses, SDKConfig
from ..errors import ConfigError, DevnetError
from ._deploy import Deployment, DevnetModel

__all__ = ["fork_deployment", "shipped_manifest"]


def shipped_manifest(chain_id: int) -> Path | None:
    """The manifest this package ships for ``chain_id`` (with every address), if any."""
    for path in sorted(contracts_path("deployments").glob("*.json")):
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        contracts = manifest.get("contracts") or {}
        complete = all(contracts.get(f) for f in ContractAddresses.model_fields)
        if manifest.get("chain_id") == chain_id and complete:
            return path
    return None


def _from_manifest(path: Path, chain_id: int) -> tuple[ContractAddresses, str | None]:
    try:
        manifest: dict[str, Any] = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read deployment manifest {path}: {exc}") from None
    if manifest.get("chain_id") != chain_id:
        raise DevnetError(
            f"manifest {Path(path).name} is for chain {manifest.get('chain_id')}, "
            f"but the forked chain is {chain_id}"
        )
    config = SDKConfig.from_manifest(path, rpc_url="http://127.0.0.1")  # same checks
    return config.contract_addresses, manifest.get("deployer")


async def fork_deployment(
    rpc: JsonRpcClient,
    *,
    chain_id: int,
    addresses: ContractAddresses | None,
    manifest: str | Path | None,
) -> Deployment:
    """The deployment the fork already has, checked: every contract has code."""
    started = time.perf_counter()
    deployer: str | None = None
    if addresses is None:
        path = Path(manifest) if manifest is not None else shipped_manifest(chain_id)
        if path is None:
            raise DevnetError(
                f"no known Fabstir deployment on chain {chain_id}: pass addresses= "
                "(e.g. SDKConfig.base_sepolia().contract_addresses) or manifest="
            )
        addresses, deployer = _from_manifest(path, chain_id)
    fields = list(ContractAddresses.model_fields)
    codes = await rpc.batch(
        [("eth_getCode", (getattr(addresses, f), "latest")) for f in fields], labels=fields
    )
    empty = [
        f"{f} {getattr(addresses, f)}"
        for f, code in zip(fields, codes, strict=True)
        if code in ("0x", "", None)
    ]
    if empty:
        raise DevnetError(f"no contract on the forked chain at {', '.join(empty)}")
    config = SDKConfig(rpc_url=rpc.url, chain_id=chain_id, contract_addresses=addresses)
    models = await _approved_models(config)
    return Deployment(
        addresses, models, deployer or "", transactions=0, seconds=time.perf_counter() - started
    )


async def _approved_models(config: SDKConfig) -> tuple[DevnetModel, ...]:
    from ..chain.client import ChainClient  # eth-account: only when a fork starts
    from ..managers._context import Context
    from ..managers.model import ModelManager

    client = ChainClient.from_config(config)
    try:
        listed = await ModelManager(Context(config=config, client=client)).list_models()
    finally:
        await client.aclose()
    return tuple(DevnetModel(m.repo, m.file) for m in listed if m.approved)
