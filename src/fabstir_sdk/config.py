"""SDK configuration: the RPC endpoint, the chain and the contract addresses."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic import ValidationError as PydanticValidationError

from ._resources import contracts_path
from .chain.addresses import checksum_address
from .errors import ConfigError, FabstirError

__all__ = [
    "BASE_MAINNET_CHAIN_ID",
    "BASE_SEPOLIA_CHAIN_ID",
    "ContractAddresses",
    "SDKConfig",
    "SessionTimeouts",
]

BASE_SEPOLIA_CHAIN_ID = 84532
BASE_MAINNET_CHAIN_ID = 8453


class _ConfigModel(BaseModel):
    """Invalid configuration raises :class:`ConfigError`, like every other SDK error."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except PydanticValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"invalid {type(self).__name__}: {problems}") from None

    def __repr_args__(self) -> Any:
        """What ``repr()`` and ``str()`` show: every ``*_url`` field as ``redact_url`` shows it
        (an RPC provider's API key in the URL stays out of logs and tracebacks)."""
        from .chain.transport import redact_url  # imported late: `import fabstir_sdk` stays light

        for name, value in super().__repr_args__():
            if isinstance(name, str) and name.endswith("url") and isinstance(value, str):
                value = redact_url(value)
            yield name, value


class ContractAddresses(_ConfigModel):
    """The seven contracts the SDK uses, as EIP-55 checksummed addresses."""

    job_marketplace: str
    node_registry: str
    proof_system: str
    host_earnings: str
    model_registry: str
    usdc_token: str
    fab_token: str

    @field_validator("*", mode="before")
    @classmethod
    def _checksum(cls, value: object, info: ValidationInfo) -> str:
        return checksum_address(value, what=str(info.field_name))


class SessionTimeouts(_ConfigModel):
    """Deadlines of a session with a host, in seconds (``total=None``: no overall limit).

    ``first_token`` is generous because a host may load the model on the first prompt.
    """

    connect: float = Field(default=10.0, gt=0)
    first_token: float = Field(default=180.0, gt=0)
    idle: float = Field(default=60.0, gt=0)
    total: float | None = Field(default=None, gt=0)
    #: How long ``Session.complete()`` waits for the host's final proof to be on chain.
    settle: float = Field(default=60.0, gt=0)


class SDKConfig(_ConfigModel):
    """Everything :class:`~fabstir_sdk.FabstirSDK` needs to know about its environment.

    ``chain_id`` is checked against the RPC endpoint at ``authenticate()``, so a config for
    Base Sepolia never signs transactions for another chain.
    """

    rpc_url: str
    chain_id: int = BASE_SEPOLIA_CHAIN_ID
    contract_addresses: ContractAddresses
    s5_portal_url: str | None = None
    #: The block the marketplace was deployed at (0: not known). Scans of its logs start
    #: there, not at the chain's first block: ``list_sessions()`` finds an agent's delegated
    #: jobs in ``SessionCreatedByDelegate`` logs, which on Base would otherwise mean asking
    #: for millions of blocks. A manifest's ``deployment_block`` sets it; the devnet's does.
    deployment_block: int = Field(default=0, ge=0)
    storage_dir: Path | None = None
    #: Seconds one S5 portal request may take (it is tried 4 times before
    #: StorageUnavailableError; a portal that answers slowly forever costs at most that).
    s5_timeout: float = Field(default=30.0, gt=0)
    #: Seconds to wait for a transaction receipt before TransactionTimeoutError.
    tx_timeout: float = Field(default=120.0, gt=0)
    #: Multiplier applied to eth_estimateGas (1.2 = 20% headroom).
    gas_headroom: float = Field(default=1.2, ge=1.0)
    #: Seconds a JSON-RPC request may take.
    rpc_timeout: float = Field(default=30.0, gt=0)
    #: Seconds to keep retrying reads (and resending the same signed transaction) while the
    #: RPC endpoint is unreachable, before RpcUnavailableError. 0 disables retries.
    rpc_retry_for: float = Field(default=10.0, ge=0)
    #: Deadlines of sessions with hosts (overridable per session).
    session_timeouts: SessionTimeouts = Field(default_factory=SessionTimeouts)
    #: When a session paid from the wallet in an ERC-20 finds the marketplace's allowance
    #: short, the SDK approves this much (whole tokens, e.g. "100" USDC; or the deposit if it
    #: is larger). It only ever raises a short allowance, so processes sharing one wallet do
    #: not undo each other's approvals, and later sessions need one transaction, not two.
    approval_budget: str = "100"

    @field_validator("approval_budget", mode="before")
    @classmethod
    def _budget(cls, value: object) -> str:
        from .chain.units import to_base_units

        if isinstance(value, Decimal | int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ValueError(f"must be a str, Decimal or int amount, got {type(value).__name__}")
        try:
            to_base_units(value, 18, what="approval_budget")
        except FabstirError as exc:
            raise ValueError(str(exc)) from None
        return value.strip()

    @classmethod
    def from_manifest(
        cls, path: str | Path, *, rpc_url: str | None = None, **overrides: Any
    ) -> SDKConfig:
        """Build a config from a deployment manifest (see contracts/deployments/).

        ``rpc_url`` defaults to the manifest's own (a devnet's manifest names its anvil).
        """
        try:
            manifest = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read deployment manifest {path}: {exc}") from exc
        addresses = dict(manifest.get("contracts", {}))
        addresses.update(overrides.pop("contract_addresses", {}) or {})
        missing = [f for f in ContractAddresses.model_fields if not addresses.get(f)]
        if missing:
            raise ConfigError(
                f"manifest {Path(path).name} has no address for {', '.join(missing)}: "
                "pass contract_addresses={...} to supply them"
            )
        rpc_url = rpc_url or manifest.get("rpc_url")
        if not rpc_url:
            raise ConfigError(f"manifest {Path(path).name} names no RPC endpoint: pass rpc_url=...")
        fields: dict[str, Any] = {
            "rpc_url": rpc_url,
            "chain_id": manifest["chain_id"],
            "deployment_block": manifest.get("deployment_block", 0),
            "contract_addresses": ContractAddresses(
                **{f: addresses[f] for f in ContractAddresses.model_fields}
            ),
        }
        fields.update(overrides)
        return cls(**fields)

    @classmethod
    def base_sepolia(cls, rpc_url: str = "https://sepolia.base.org", **overrides: Any) -> SDKConfig:
        """The contracts deployed on Base Sepolia; any field can be overridden."""
        return cls.from_manifest(
            contracts_path("deployments", "base-sepolia.json"), rpc_url=rpc_url, **overrides
        )

    @classmethod
    def opbnb_testnet(
        cls, rpc_url: str = "https://opbnb-testnet-rpc.bnbchain.org", **overrides: Any
    ) -> SDKConfig:
        """opBNB testnet (chain 5611, native BNB). Upstream publishes no contract addresses
        there: pass them as ``contract_addresses={...}``."""
        return cls.for_chain(5611, rpc_url=rpc_url, **overrides)

    @classmethod
    def for_chain(cls, chain_id: int, *, rpc_url: str | None = None, **overrides: Any) -> SDKConfig:
        """The preset of ``chain_id`` (see :mod:`fabstir_sdk.chains`): its manifest's
        addresses and its public RPC endpoint unless overridden."""
        from .chains import chain_preset

        preset = chain_preset(chain_id)
        return cls.from_manifest(
            contracts_path("deployments", preset.manifest),
            rpc_url=rpc_url or preset.rpc_url,
            **overrides,
        )

    @classmethod
    def base(cls, rpc_url: str = "https://mainnet.base.org", **overrides: Any) -> SDKConfig:
        """Base mainnet. No Fabstir contracts are published there yet: pass their addresses
        as ``contract_addresses={...}``."""
        return cls.from_manifest(
            contracts_path("deployments", "base.json"), rpc_url=rpc_url, **overrides
        )
