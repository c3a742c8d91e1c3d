"""Presets for the chains Fabstir's contracts are deployed to (and may be).

One process may hold sessions on several chains at once: make one :class:`FabstirSDK` per
chain, from :meth:`SDKConfig.for_chain` (each checks its RPC's chain id at authenticate)::

    base = FabstirSDK(SDKConfig.for_chain(84532))
    bnb = FabstirSDK(SDKConfig.for_chain(5611, contract_addresses={...}))

Where the values come from: upstream's SDK (Fabstir/fabstir-llm-sdk,
``packages/sdk-core/src/config/ChainRegistry.ts``, ``environment.ts`` and
``types/chain.types.ts`` at ``ae342d6dc5b396bab0945d3d294a33bced599aef``, files last changed
in ``eda1144``, 2026-03-11): chain ids, native tokens, minimum deposits (in whole native
tokens), default RPC endpoints and explorers. Upstream publishes contract addresses only
for Base Sepolia (our contracts/deployments/base-sepolia.json records their sources); Base
mainnet and opBNB testnet addresses come from environment variables there, so the presets
have none and the caller passes ``contract_addresses``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .errors import ConfigError

__all__ = ["CHAINS", "ChainPreset", "chain_preset", "native_symbol"]


@dataclass(frozen=True, slots=True)
class ChainPreset:
    """What the SDK knows about one chain, whatever contracts are deployed to it."""

    chain_id: int
    name: str
    #: The native token's symbol (18 decimals on every chain here).
    native_token: str
    #: Upstream's minimum session deposit, in whole native tokens.
    min_deposit: Decimal
    rpc_url: str
    block_explorer: str
    #: The deployment manifest in contracts/deployments/.
    manifest: str
    testnet: bool


CHAINS: dict[int, ChainPreset] = {
    preset.chain_id: preset
    for preset in (
        ChainPreset(
            84532,
            "Base Sepolia",
            "ETH",
            Decimal("0.0001"),
            "https://sepolia.base.org",
            "https://sepolia.basescan.org",
            "base-sepolia.json",
            testnet=True,
        ),
        ChainPreset(
            8453,
            "Base",
            "ETH",
            Decimal("0.0001"),
            "https://mainnet.base.org",
            "https://basescan.org",
            "base.json",
            testnet=False,
        ),
        ChainPreset(
            5611,
            "opBNB Testnet",
            "BNB",
            Decimal("0.001"),
            "https://opbnb-testnet-rpc.bnbchain.org",
            "https://testnet.opbnbscan.com",
            "opbnb-testnet.json",
            testnet=True,
        ),
    )
}


def chain_preset(chain_id: int) -> ChainPreset:
    """The preset of ``chain_id``; :class:`ConfigError` names the known ones otherwise."""
    try:
        return CHAINS[chain_id]
    except KeyError:
        known = ", ".join(f"{p.chain_id} ({p.name})" for p in CHAINS.values())
        raise ConfigError(f"no preset for chain {chain_id}; known: {known}") from None


def native_symbol(chain_id: int) -> str:
    """The native token's symbol on ``chain_id`` (ETH on chains without a preset: devnets)."""
    preset = CHAINS.get(chain_id)
    return preset.native_token if preset else "ETH"
