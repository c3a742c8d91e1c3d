"""Deploy our contracts on a devnet, wire them, approve the devnet models, fund the accounts.

Speed comes from batching: every transaction is signed locally with an explicit nonce and a
whole phase goes out in one JSON-RPC request. Phase 1 deploys the seven contracts (their
addresses follow from the deployer's nonces, so constructors can name each other); phase 2
wires them, approves models and mints tokens. Nothing depends on a receipt until a phase ends.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from ..chain.abi import Contract, encode_constructor
from ..chain.model_id import model_id
from ..chain.revert import decode_revert
from ..chain.rpc import JsonRpcClient, RpcFailure
from ..config import ContractAddresses
from ..errors import DevnetError
from ._accounts import DevAccount

__all__ = [
    "DEVNET_MODELS",
    "DISPUTE_WINDOW",
    "FAB_PER_ACCOUNT",
    "FEE_BASIS_POINTS",
    "PLACEHOLDER_SHA256",
    "USDC_PER_ACCOUNT",
    "Deployment",
    "DevnetModel",
    "deploy",
    "write_manifest",
]

#: What every devnet account holds after deployment, in base units.
USDC_PER_ACCOUNT = 1_000_000 * 10**6
FAB_PER_ACCOUNT = 100_000 * 10**18
FEE_BASIS_POINTS = 1000  # 10% of the proven value goes to the treasury
DISPUTE_WINDOW = 30  # seconds before a host may complete a session

#: The model hash the devnet registers: sha256 of b"fabstir devnet placeholder". No weights are
#: downloaded, so there is no real file to hash; hosts on the devnet must not verify it.
PLACEHOLDER_SHA256 = "0x" + hashlib.sha256(b"fabstir devnet placeholder").hexdigest()

_DEPLOY_GAS = 12_000_000  # above any constructor within EIP-170's 24 KiB; only gas used is paid
_GAS_HEADROOM = 1.3


@dataclass(frozen=True, slots=True)
class DevnetModel:
    """A model the devnet approves in the ModelRegistry."""

    repo: str
    file: str

    @property
    def spec(self) -> str:
        """``"repo:file"``, the form every ``model`` argument of the SDK accepts."""
        return f"{self.repo}:{self.file}"

    @property
    def model_id(self) -> str:
        return model_id(self.spec)


DEVNET_MODELS: tuple[DevnetModel, ...] = (
    DevnetModel("CohereForAI/TinyVicuna-1B-32k-GGUF", "tiny-vicuna-1b.q4_k_m.gguf"),
    DevnetModel("bartowski/Llama-3.2-1B-Instruct-GGUF", "Llama-3.2-1B-Instruct-Q4_K_M.gguf"),
    DevnetModel("fabstir/builtin", "toy-1.gguf"),  # the reference host's built-in toy model
)


@dataclass(frozen=True, slots=True)
class Deployment:
    """What :func:`deploy` produced."""

    addresses: ContractAddresses
    models: tuple[DevnetModel, ...]
    deployer: str  #: "" on a fork whose manifest does not say
    transactions: int
    seconds: float
    #: The block the marketplace was created in (0: not known, as on a fork).
    block: int = 0


@dataclass(frozen=True, slots=True)
class _Tx:
    label: str
    to: str | None  # None: contract creation
    data: bytes


def _create_address(sender: str, nonce: int) -> str:
    """The CREATE address: keccak256(rlp([sender, nonce]))[12:]."""
    if nonce == 0:
        encoded_nonce = b"\x80"
    elif nonce < 0x80:
        encoded_nonce = bytes([nonce])
    else:
        raw = nonce.to_bytes((nonce.bit_length() + 7) // 8, "big")
        encoded_nonce = bytes([0x80 + len(raw)]) + raw
    payload = b"\x94" + bytes.fromhex(sender[2:]) + encoded_nonce
    return to_checksum_address(keccak(bytes([0xC0 + len(payload)]) + payload)[12:])


def _creation(name: str, *args: Any) -> _Tx:
    return _Tx(f"deploy {name}", None, encode_constructor(name, args))


def _call(name: str, address: str, function: str, *args: Any) -> _Tx:
    return _Tx(f"{name}.{function}", address, Contract(name, address).call(function, *args).data)


class _Sender:
    """Signs the deployer's transactions with consecutive nonces and sends them in batches."""

    def __init__(self, rpc: JsonRpcClient, deployer: DevAccount, chain_id: int) -> None:
        from eth_account import Account

        self._rpc = rpc
        self._account = Account.from_key(deployer.private_key)
        self.address = deployer.address
        self._chain_id = chain_id
        self.nonce = 0
        self.gas_price = 0
        self.sent = 0

    async def prepare(self) -> None:
        nonce, gas_price = await self._rpc.batch(
            [("eth_getTransactionCount", (self.address, "pending")), ("eth_gasPrice", ())]
        )
        self.nonce, self.gas_price = int(nonce, 16), 2 * int(gas_price, 16)

    async def run(
        self, txs: Sequence[_Tx], *, estimate: bool, within: float
    ) -> list[dict[str, Any]]:
        """Send ``txs`` in order and return their receipts; any failure names its step."""
        gas = [_DEPLOY_GAS] * len(txs)
        if estimate:
            estimates = await self._rpc.batch(
                [("eth_estimateGas", (self._params(tx),)) for tx in txs],
                labels=[tx.label for tx in txs],
            )
            gas = [int(int(e, 16) * _GAS_HEADROOM) for e in estimates]
        raw = []
        for tx, limit in zip(txs, gas, strict=True):
            signed = self._account.sign_transaction(
                {
                    **self._params(tx),
                    "gas": limit,
                    "gasPrice": self.gas_price,
                    "nonce": self.nonce,
                    "chainId": self._chain_id,
                }
            )
            raw.append("0x" + bytes(signed.raw_transaction).hex())
            self.nonce += 1
        hashes = await self._rpc.batch(
            [("eth_sendRawTransaction", (r,)) for r in raw], labels=[tx.label for tx in txs]
        )
        self.sent += len(txs)
        receipts = await self._receipts(hashes, within)
        for tx, receipt in zip(txs, receipts, strict=True):
            if int(receipt["status"], 16) != 1:
                raise DevnetError(f"{tx.label} failed in block {int(receipt['blockNumber'], 16)}")
        return receipts

    def _params(self, tx: _Tx) -> dict[str, Any]:
        params: dict[str, Any] = {"from": self.address, "data": "0x" + tx.data.hex(), "value": 0}
        if tx.to is not None:
            params["to"] = tx.to
        return params

    async def _receipts(self, hashes: Sequence[str], within: float) -> list[dict[str, Any]]:
        """Mine blocks (``evm_mine``) until every receipt is there.

        Anvil's automine is off meanwhile (see :func:`deploy`), so every transaction of the
        burst is in the pool before a block is built.
        """
        deadline = time.monotonic() + within
        while True:
            receipts = await self._rpc.batch([("eth_getTransactionReceipt", (h,)) for h in hashes])
            if all(receipts):
                return receipts
            if time.monotonic() >= deadline:
                missing = sum(1 for r in receipts if not r)
                raise DevnetError(f"{missing} deployment transactions unmined after {within:g} s")
            await self._rpc.call("evm_mine")


async def deploy(
    rpc: JsonRpcClient,
    deployer: DevAccount,
    recipients: Sequence[str],
    *,
    chain_id: int,
    models: Sequence[DevnetModel] = DEVNET_MODELS,
    within: float = 60.0,
) -> Deployment:
    """Deploy, wire, approve ``models`` and fund ``recipients`` with USDC and FAB, each phase
    mined within ``within`` seconds.

    ``deployer`` owns every contract and is the marketplace's treasury. Anvil's automine
    is paused meanwhile: a transaction that reaches the pool while automine builds a block
    can be filed as not executable although its nonce is next, and then no block ever takes
    it (foundry-rs/foundry#10122); each burst is sent whole and then mined.

    Automine is turned back on however the deployment ends. If that fails after the
    deployment failed, the deployment's error is raised with the restore's failure as a
    note (the first error is the one that explains); after a deployment that succeeded, the
    restore's failure is raised.
    """
    automine = bool(await rpc.call("anvil_getAutomine"))
    if automine:
        await rpc.call("evm_setAutomine", False)
    try:
        deployment = await _deploy(
            rpc, deployer, recipients, chain_id=chain_id, models=models, within=within
        )
    except BaseException as exc:
        if automine:
            try:
                await rpc.call("evm_setAutomine", True)
            except Exception as restore:
                exc.add_note(f"turning anvil's automine back on failed too: {restore!r}")
        raise
    if automine:
        await rpc.call("evm_setAutomine", True)
    return deployment


async def _deploy(
    rpc: JsonRpcClient,
    deployer: DevAccount,
    recipients: Sequence[str],
    *,
    chain_id: int,
    models: Sequence[DevnetModel],
    within: float,
) -> Deployment:
    started = time.perf_counter()
    sender = _Sender(rpc, deployer, chain_id)
    try:
        await sender.prepare()
        names = [
            "TestUSDC",
            "FABToken",
            "ModelRegistry",
            "NodeRegistry",
            "ProofSystem",
            "HostEarnings",
            "JobMarketplace",
        ]
        at = {
            name: _create_address(sender.address, sender.nonce + i) for i, name in enumerate(names)
        }
        created = await sender.run(
            [
                _creation("TestUSDC"),
                _creation("FABToken"),
                _creation("ModelRegistry", at["FABToken"]),
                _creation("NodeRegistry", at["FABToken"], at["ModelRegistry"]),
                _creation("ProofSystem"),
                _creation("HostEarnings"),
                _creation(
                    "JobMarketplace",
                    at["NodeRegistry"],
                    at["HostEarnings"],
                    FEE_BASIS_POINTS,
                    DISPUTE_WINDOW,
                ),
            ],
            estimate=False,
            within=within,
        )
        for name, receipt in zip(names, created, strict=True):
            if to_checksum_address(receipt["contractAddress"]) != at[name]:
                raise DevnetError(f"{name} landed at {receipt['contractAddress']}, not {at[name]}")
        market = at["JobMarketplace"]
        wiring = [
            _call("ProofSystem", at["ProofSystem"], "setAuthorizedCaller", market, True),
            _call("HostEarnings", at["HostEarnings"], "setAuthorizedCaller", market, True),
            _call("JobMarketplace", market, "setProofSystem", at["ProofSystem"]),
            _call("JobMarketplace", market, "setUsdcAddress", at["TestUSDC"]),
            _call("NodeRegistry", at["NodeRegistry"], "initializeSlashing", sender.address),
        ]
        approvals = [
            _call(
                "ModelRegistry",
                at["ModelRegistry"],
                "addTrustedModel",
                m.repo,
                m.file,
                bytes.fromhex(PLACEHOLDER_SHA256[2:]),
            )
            for m in models
        ]
        funding = [
            _call(token, at[token], "mint", account, amount)
            for account in recipients
            for token, amount in (("TestUSDC", USDC_PER_ACCOUNT), ("FABToken", FAB_PER_ACCOUNT))
        ]
        await sender.run([*wiring, *approvals, *funding], estimate=True, within=within)
    except RpcFailure as exc:
        raise DevnetError(f"deployment failed at {_explain(exc)}") from None
    except FileNotFoundError as exc:
        raise DevnetError(
            f"contract artifact missing ({exc.filename}): compile with `make contracts`"
        ) from None
    addresses = ContractAddresses(
        job_marketplace=market,
        node_registry=at["NodeRegistry"],
        proof_system=at["ProofSystem"],
        host_earnings=at["HostEarnings"],
        model_registry=at["ModelRegistry"],
        usdc_token=at["TestUSDC"],
        fab_token=at["FABToken"],
    )
    return Deployment(
        addresses,
        tuple(models),
        sender.address,
        sender.sent,
        time.perf_counter() - started,
        block=int(created[names.index("JobMarketplace")]["blockNumber"], 16),
    )


def _explain(exc: RpcFailure) -> str:
    """``step: reason``, with the revert data decoded when the node sent it."""
    data = exc.data.get("data") if isinstance(exc.data, dict) else exc.data
    if isinstance(data, str) and data.startswith("0x") and len(data) >= 10:
        return f"{exc.what}: reverted: {decode_revert(bytes.fromhex(data[2:]))[0]}"
    return f"{exc.what}: {exc.node_message}"


def write_manifest(
    path: Path, deployment: Deployment, *, chain_id: int, rpc_url: str, source: str | None = None
) -> None:
    """The deployment as a manifest like contracts/deployments/*.json, plus rpc_url and models.

    Addresses only: a manifest never holds a private key.
    """
    manifest = {
        "chain_id": chain_id,
        "name": "devnet",
        "source": f"fabstir_sdk.devnet on {source or 'a local anvil'}",
        "rpc_url": rpc_url,
        "deployer": deployment.deployer,
        "deployment_block": deployment.block,
        "contracts": deployment.addresses.model_dump(),
        "models": [
            {"repo": m.repo, "file": m.file, "sha256": PLACEHOLDER_SHA256, "model_id": m.model_id}
            for m in deployment.models
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    partial.replace(path)  # readers never see half a file
