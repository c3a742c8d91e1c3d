"""A devnet that forks a live chain: its deployed contracts, not a fresh deployment.

Which contracts: the ``addresses`` given, else a ``manifest``, else the manifest shipped for
that chain id (``contracts/deployments``: Base Sepolia). Every address must hold code on the
fork, and the approved models are read from the fork's ModelRegistry, so ``net.models`` and
``net.sdk_config()`` describe the chain as it is.

A forked chain's tokens are its own, so the test accounts hold none of them: anvil only gives
them ETH. :func:`fund_accounts` writes their balances of the chain's USDC and FAB straight into
the token contracts' storage, at the slot found by probing (``anvil_setStorageAt`` a marker,
ask ``balanceOf``): a host can stake and a user can pay, as on a fresh devnet. The reference
host's built-in toy model is approved on the fork too (as the registry's owner, impersonated),
so ``net.start_host()`` needs no real model on any chain.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from .._resources import contracts_path
from ..chain.abi import Contract
from ..chain.rpc import JsonRpcClient, unreachable_reason
from ..chain.transport import redact_url
from ..config import ContractAddresses, SDKConfig
from ..errors import ConfigError, DevnetError, RpcError
from ._balances import eth_call, uint
from ._deploy import DEVNET_MODELS, PLACEHOLDER_SHA256, Deployment, DevnetModel

__all__ = [
    "approve_builtin_model",
    "fork_deployment",
    "fund_accounts",
    "reachable",
    "shipped_manifest",
]

#: Whole tokens each test account holds on a fork: what a fresh devnet mints them.
WHOLE_USDC, WHOLE_FAB = 1_000_000, 100_000

#: Where ERC-20s keep ``balanceOf``: a mapping at a low slot (OpenZeppelin: 0; Circle's
#: FiatToken: 9), or OpenZeppelin 5's upgradeable ERC-20 namespace (ERC-7201).
_OZ_ERC20_NAMESPACE = 0x52C63247E1F47DB19D5CE0460030C497F067CA4CEBF71BA98EEADABE20BACE00
_CANDIDATE_SLOTS = (*range(64), _OZ_ERC20_NAMESPACE)
_MARKER = 0xFAB5_7120_0000_0000_1357  # a balance no real account holds
_OWNER_GAS_MONEY = 10**18  # what the impersonated registry owner spends on one approval


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


async def reachable(url: str) -> None:
    """Raise a one-line :class:`DevnetError` if the chain to fork does not answer at ``url``."""
    rpc = JsonRpcClient(url, timeout=10.0)
    try:
        await rpc.call("eth_chainId")
    except RpcError as exc:
        cause = exc.__cause__
        why = unreachable_reason(cause) if cause is not None else str(exc)
        raise DevnetError(f"cannot fork {redact_url(url)}: {why}") from None
    finally:
        await rpc.aclose()


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
    await approve_builtin_model(rpc, addresses)
    config = SDKConfig(rpc_url=rpc.url, chain_id=chain_id, contract_addresses=addresses)
    models = await _approved_models(config)
    return Deployment(
        addresses, models, deployer or "", transactions=0, seconds=time.perf_counter() - started
    )


async def approve_builtin_model(rpc: JsonRpcClient, addresses: ContractAddresses) -> bool:
    """Approve the reference host's built-in toy model on the fork, as its ModelRegistry's
    owner (impersonated), so ``net.start_host()`` serves it on any chain as on a fresh
    devnet. False when it was approved already or the registry has no owner."""
    toy = DEVNET_MODELS[-1]
    registry = Contract("ModelRegistry", addresses.model_registry)
    try:
        approved, owner = await rpc.batch(
            [eth_call(registry, "isModelApproved", toy.model_id), eth_call(registry, "owner")]
        )
    except RpcError:  # not our registry's interface: leave its models as they are
        return False
    owner_address = to_checksum_address("0x" + str(owner)[-40:])
    if uint(approved) or int(owner_address, 16) == 0:
        return False
    held = uint(await rpc.call("eth_getBalance", owner_address, "latest"))
    call = registry.call(
        "addTrustedModel", toy.repo, toy.file, bytes.fromhex(PLACEHOLDER_SHA256[2:])
    )
    await rpc.call("anvil_impersonateAccount", owner_address)
    try:
        if held < _OWNER_GAS_MONEY:  # a multisig or a contract may hold no ETH for gas
            await rpc.call("anvil_setBalance", owner_address, hex(_OWNER_GAS_MONEY))
        sent = await rpc.call(
            "eth_sendTransaction",
            {"from": owner_address, "to": call.to, "data": "0x" + call.data.hex()},
        )
        receipt = None
        for _ in range(1200):  # mined at once by default; within a minute of interval mining
            receipt = await rpc.call("eth_getTransactionReceipt", sent)
            if receipt:
                break
            await asyncio.sleep(0.05)
    finally:
        await rpc.call("anvil_stopImpersonatingAccount", owner_address)
    if not receipt or int(receipt["status"], 16) != 1:
        raise DevnetError(f"could not approve {toy.spec} on the fork's ModelRegistry")
    return True


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


async def fund_accounts(
    rpc: JsonRpcClient, addresses: ContractAddresses, accounts: Sequence[str]
) -> dict[str, int]:
    """Give every account the fork's USDC and FAB (what a fresh devnet mints them); returns
    the amount per account in base units, by token address. Their balances are set, not
    added to, so every test starts from the same numbers on any chain."""
    funded: dict[str, int] = {}
    for token, whole in ((addresses.usdc_token, WHOLE_USDC), (addresses.fab_token, WHOLE_FAB)):
        erc20 = Contract("TestUSDC", token)  # any ERC-20: decimals, balanceOf
        (decimals_word,) = await rpc.batch([eth_call(erc20, "decimals")])
        decimals = uint(str(decimals_word))
        amount = whole * 10**decimals
        key_of = await _balance_slot(rpc, erc20, accounts[0])
        await rpc.batch(
            [("anvil_setStorageAt", (token, key_of(a), _word(amount))) for a in accounts]
        )
        held = await rpc.batch([eth_call(erc20, "balanceOf", a) for a in accounts])
        if any(uint(h) != amount for h in held):
            raise DevnetError(f"could not fund the test accounts with the token at {token}")
        funded[token] = amount
    return funded


async def _balance_slot(rpc: JsonRpcClient, erc20: Contract, probe: str) -> Callable[[str], str]:
    """``key(address)``: the storage key of ``address``'s balance in ``erc20``, found by
    writing a marker at each candidate key and asking ``balanceOf``; each probe is undone."""
    layouts = [
        partial(_balance_key, slot=slot, vyper=vyper)
        for slot in _CANDIDATE_SLOTS
        for vyper in (False, True)
    ]
    # One request at a time: anvil answers a batch's calls concurrently, in no fixed order.
    # Each key's old value is read only when probed: on a fork of a remote chain every
    # first read of a slot is a round trip to it, and common layouts are found first.
    for layout in layouts:
        key = layout(probe)
        original = await rpc.call("eth_getStorageAt", erc20.address, key, "latest")
        await rpc.call("anvil_setStorageAt", erc20.address, key, _word(_MARKER))
        (held_word,) = await rpc.batch([eth_call(erc20, "balanceOf", probe)])
        held = str(held_word)
        await rpc.call("anvil_setStorageAt", erc20.address, key, _word(int(original, 16)))
        if uint(held) == _MARKER:
            return layout
    raise DevnetError(
        f"cannot fund the test accounts with the token at {erc20.address}: its balances are "
        "not stored where ERC-20 tokens keep them (tried slots 0-63 and the ERC-7201 one)"
    )


def _balance_key(address: str, *, slot: int, vyper: bool) -> str:
    """The storage key of ``mapping(address => uint)`` at ``slot``, entry ``address``
    (Solidity hashes key then slot; Vyper slot then key)."""
    parts = (slot.to_bytes(32, "big"), _pad(address))
    return "0x" + keccak(b"".join(parts if vyper else parts[::-1])).hex()


def _pad(address: str) -> bytes:
    return bytes.fromhex(address[2:]).rjust(32, b"\0")


def _word(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()
