"""Constants and helpers shared by the contract tests (the fixtures live in conftest.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ABI_DIR = REPO_ROOT / "contracts" / "abi"


def _upstream_abi_dir() -> Path:
    """shared/upstream-abi beside the checkout or beside any folder above it (a git worktree
    sits deeper than the main checkout); FABSTIR_UPSTREAM_ABI overrides."""
    explicit = os.environ.get("FABSTIR_UPSTREAM_ABI")
    if explicit:
        return Path(explicit)
    for folder in REPO_ROOT.parents:
        candidate = folder / "shared" / "upstream-abi"
        if candidate.is_dir():
            return candidate
    return REPO_ROOT.parent / "shared" / "upstream-abi"


#: The deployed upstream contracts' client ABIs (interface data, kept outside the repository).
UPSTREAM_ABI_DIR = _upstream_abi_dir()

FEE_BASIS_POINTS = 1000  # 10%
DISPUTE_WINDOW = 30  # seconds
ZERO = "0x0000000000000000000000000000000000000000"
USDC = 10**6
FAB = 10**18
ETHER = 10**18
MIN_STAKE = 1000 * FAB
USDC_PER_ACCOUNT = 1_000_000 * USDC
FAB_PER_ACCOUNT = 100_000 * FAB

# Account roles (anvil's default accounts).
DEPLOYER, USER, HOST, HOST2, OTHER, DELEGATE = 0, 1, 2, 3, 4, 5

MODELS = [
    ("CohereForAI/TinyVicuna-1B-32k-GGUF", "tiny-vicuna-1b.q4_k_m.gguf"),
    ("bartowski/Llama-3.2-1B-Instruct-GGUF", "Llama-3.2-1B-Instruct-Q4_K_M.gguf"),
    ("fabstir/builtin", "toy-1.gguf"),
]
MODEL_SHA = hashlib.sha256(b"fabstir contract tests").digest()

# Host minimum prices used by the `registered_host` fixture.
HOST_NATIVE_PRICE = 10**12  # 1 gwei per token (x1000)
HOST_STABLE_PRICE = 2000  # 2 micro-USDC per token (x1000)


def anvil_binary() -> Path | None:
    explicit = os.environ.get("FABSTIR_ANVIL")
    if explicit:
        return Path(explicit)
    # the npm platform package of the pinned anvil (anvil-linux-amd64, anvil-darwin-arm64, ...)
    for local in sorted((REPO_ROOT / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil*")):
        if local.is_file() and os.access(local, os.X_OK):
            return local
    found = shutil.which("anvil")
    return Path(found) if found else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_artifact(name: str) -> dict[str, Any]:
    return json.loads((ABI_DIR / f"{name}.json").read_text())


@dataclass
class Chain:
    """web3 handle, accounts and deployed contracts, plus helpers for exact tests."""

    w3: Any
    accounts: list[str]
    c: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ transactions

    def send(self, fn: Any, sender: int | str, value: int = 0) -> Any:
        """Transact ``fn`` from ``sender`` (an account index or address); assert success."""
        frm = self.accounts[sender] if isinstance(sender, int) else sender
        tx_hash = fn.transact({"from": frm, "value": value, "gasPrice": 0, "gas": 8_000_000})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)
        assert receipt["status"] == 1, f"transaction failed: {receipt}"
        return receipt

    def reverts(self, fn: Any, sender: int | str, reason: str, value: int = 0) -> None:
        """Assert ``fn`` reverts with revert string ``reason`` (or custom error ``reason()``)."""
        from web3.exceptions import ContractCustomError, ContractLogicError

        frm = self.accounts[sender] if isinstance(sender, int) else sender
        with pytest.raises((ContractLogicError, ContractCustomError)) as info:
            fn.call({"from": frm, "value": value, "gasPrice": 0})
        if reason.endswith(")"):
            selector = "0x" + self.w3.keccak(text=reason)[:4].hex().removeprefix("0x")
            assert str(info.value.data).startswith(selector), (reason, info.value)
        else:
            assert reason in str(info.value), (reason, str(info.value))
        # also prove the transaction itself fails on chain, not just the simulation
        tx_hash = fn.transact({"from": frm, "value": value, "gasPrice": 0, "gas": 8_000_000})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10)
        assert receipt["status"] == 0

    def events(self, receipt: Any, contract: str, event: str) -> list[Any]:
        from web3.logs import DISCARD

        return list(self.c[contract].events[event]().process_receipt(receipt, errors=DISCARD))

    def event(self, receipt: Any, contract: str, event: str) -> Any:
        found = self.events(receipt, contract, event)
        assert len(found) == 1, f"expected one {event}, got {found}"
        return found[0]["args"]

    # ----------------------------------------------------------------------- state

    def eth(self, who: int | str) -> int:
        address = self.accounts[who] if isinstance(who, int) else who
        return int(self.w3.eth.get_balance(address))

    def usdc(self, who: int | str) -> int:
        address = self.accounts[who] if isinstance(who, int) else who
        return int(self.c["TestUSDC"].functions.balanceOf(address).call())

    def fab(self, who: int | str) -> int:
        address = self.accounts[who] if isinstance(who, int) else who
        return int(self.c["FABToken"].functions.balanceOf(address).call())

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def advance(self, seconds: int) -> None:
        """Let ``seconds`` pass: the next block is mined ``seconds`` after the latest one."""
        self.w3.provider.make_request("evm_setNextBlockTimestamp", [self.now() + seconds])
        self.w3.provider.make_request("evm_mine", [])

    def set_next_timestamp(self, timestamp: int) -> None:
        self.w3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])

    def deploy(self, name: str, *args: Any, sender: int = DEPLOYER) -> Any:
        artifact = load_artifact(name)
        factory = self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        receipt = self.send(factory.constructor(*args), sender)
        return self.w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])

    @property
    def market(self) -> Any:
        return self.c["JobMarketplace"].functions

    @property
    def nodes(self) -> Any:
        return self.c["NodeRegistry"].functions

    @property
    def models(self) -> Any:
        return self.c["ModelRegistry"].functions

    def model_id(self, index: int = 0) -> bytes:
        repo, file = MODELS[index]
        return bytes(self.w3.keccak(f"{repo}/{file}".encode()))

    def session(self, job_id: int) -> dict[str, Any]:
        names = [
            o["name"]
            for o in self.c["JobMarketplace"].get_function_by_name("sessionJobs").abi["outputs"]
        ]
        return dict(zip(names, self.market.sessionJobs(job_id).call(), strict=True))


def register_host(
    chain: Chain,
    who: int = HOST,
    models: tuple[int, ...] = (0, 1),
    native: int = HOST_NATIVE_PRICE,
    stable: int = HOST_STABLE_PRICE,
    url: str = "http://127.0.0.1:8080",
) -> None:
    chain.send(
        chain.c["FABToken"].functions.approve(chain.c["NodeRegistry"].address, MIN_STAKE), who
    )
    chain.send(
        chain.nodes.registerNode(
            json.dumps({"publicKey": "02" + "11" * 32}),
            url,
            [chain.model_id(i) for i in models],
            native,
            stable,
        ),
        who,
    )


# ----------------------------------------------------------------------------- sessions

DEFAULT_INTERVAL = 1000
DEFAULT_DURATION = 3600
DEFAULT_TIMEOUT = 300
ETH_DEPOSIT = ETHER // 100  # 0.01 ETH
RATE = 1000 * 2  # default model rate limit (tokens/s) x burst factor

_proof_counter = iter(range(1, 10**9))


def job_id_of(chain: Chain, receipt: Any) -> int:
    return int(chain.event(receipt, "JobMarketplace", "SessionJobCreated")["jobId"])


def open_eth(
    chain: Chain,
    deposit: int = ETH_DEPOSIT,
    price: int = HOST_NATIVE_PRICE,
    *,
    sender: int | str = USER,
    host: int = HOST,
    model: int = 0,
    interval: int = DEFAULT_INTERVAL,
    duration: int = DEFAULT_DURATION,
    timeout: int = DEFAULT_TIMEOUT,
) -> int:
    fn = chain.market.createSessionJobForModel(
        chain.accounts[host], chain.model_id(model), price, duration, interval, timeout
    )
    return job_id_of(chain, chain.send(fn, sender, value=deposit))


def approve_usdc(chain: Chain, owner: int, amount: int) -> None:
    chain.send(
        chain.c["TestUSDC"].functions.approve(chain.c["JobMarketplace"].address, amount), owner
    )


def open_usdc(
    chain: Chain,
    deposit: int = USDC,
    price: int = HOST_STABLE_PRICE,
    *,
    sender: int = USER,
    host: int = HOST,
    model: int = 0,
    interval: int = DEFAULT_INTERVAL,
    duration: int = DEFAULT_DURATION,
    timeout: int = DEFAULT_TIMEOUT,
) -> int:
    approve_usdc(chain, sender, deposit)
    fn = chain.market.createSessionJobForModelWithToken(
        chain.accounts[host],
        chain.model_id(model),
        chain.c["TestUSDC"].address,
        deposit,
        price,
        duration,
        interval,
        timeout,
    )
    return job_id_of(chain, chain.send(fn, sender))


def proof_hash(label: str | None = None) -> bytes:
    text = label if label is not None else f"proof-{next(_proof_counter)}"
    return hashlib.sha256(text.encode()).digest()


def wait_for_rate(chain: Chain, job_id: int, tokens: int, rate: int = RATE) -> None:
    """Make the next block late enough for a proof of ``tokens`` under the rate limit."""
    last = chain.session(job_id)["lastProofTime"]
    needed = -(-tokens // rate)  # ceil
    chain.set_next_timestamp(max(chain.now() + 1, last + needed))


def prove(
    chain: Chain, job_id: int, tokens: int, *, host: int = HOST, digest: bytes | None = None
) -> Any:
    wait_for_rate(chain, job_id, tokens)
    fn = chain.market.submitProofOfWork(
        job_id, tokens, digest or proof_hash(), f"proof-cid-{job_id}", f"delta-cid-{job_id}"
    )
    return chain.send(fn, host)


def settlement(tokens: int, price: int, deposit: int) -> tuple[int, int, int, int]:
    """(hostPayment, treasuryFee, hostNet, refund) by the contract's integer formula."""
    host_payment = tokens * price // 1000
    fee = host_payment * FEE_BASIS_POINTS // 10_000
    return host_payment, fee, host_payment - fee, deposit - host_payment
