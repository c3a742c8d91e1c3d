"""A self-contained contract test bed: one anvil per test session, our contracts deployed from
contracts/abi, and every test isolated by ``evm_snapshot`` / ``evm_revert``.

Deliberately independent of ``fabstir_sdk`` (the contracts are tested on their own); it only
needs the anvil binary from ``npm ci`` and web3. Gas is free (base fee 0, gas price 0), so ETH
balances can be asserted to the wei without gas accounting.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from contract_helpers import (
    DEPLOYER,
    DISPUTE_WINDOW,
    FAB_PER_ACCOUNT,
    FEE_BASIS_POINTS,
    MODEL_SHA,
    MODELS,
    USDC_PER_ACCOUNT,
    Chain,
    anvil_binary,
    free_port,
    register_host,
)


@pytest.fixture(scope="session")
def _anvil() -> Iterator[str]:
    binary = anvil_binary()
    if binary is None:
        pytest.fail("anvil not found: run `npm ci` (or set FABSTIR_ANVIL)")
    port = free_port()
    proc = subprocess.Popen(
        [
            str(binary),
            "--host", "127.0.0.1", "--port", str(port), "--silent",
            "--accounts", "10", "--balance", "10000",
            "--block-base-fee-per-gas", "0", "--gas-price", "0",
            "--hardfork", "prague",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # only against a hang: a loaded machine starts late
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"anvil exited: {proc.stderr.read().decode() if proc.stderr else ''}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("anvil did not start within 60 s")
            time.sleep(0.02)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="session")
def _deployed(_anvil: str) -> Chain:
    from web3 import HTTPProvider, Web3

    w3 = Web3(HTTPProvider(_anvil, request_kwargs={"timeout": 30}))
    deadline = time.monotonic() + 60  # only against a hang
    while not w3.is_connected():
        if time.monotonic() > deadline:
            raise RuntimeError("anvil does not answer JSON-RPC")
        time.sleep(0.05)
    chain = Chain(w3=w3, accounts=list(w3.eth.accounts))
    deployer = chain.accounts[DEPLOYER]
    usdc = chain.deploy("TestUSDC")
    fab = chain.deploy("FABToken")
    model_registry = chain.deploy("ModelRegistry", fab.address)
    node_registry = chain.deploy("NodeRegistry", fab.address, model_registry.address)
    proof_system = chain.deploy("ProofSystem")
    host_earnings = chain.deploy("HostEarnings")
    market = chain.deploy(
        "JobMarketplace",
        node_registry.address,
        host_earnings.address,
        FEE_BASIS_POINTS,
        DISPUTE_WINDOW,
    )
    chain.c.update(
        TestUSDC=usdc,
        FABToken=fab,
        ModelRegistry=model_registry,
        NodeRegistry=node_registry,
        ProofSystem=proof_system,
        HostEarnings=host_earnings,
        JobMarketplace=market,
    )
    chain.send(proof_system.functions.setAuthorizedCaller(market.address, True), DEPLOYER)
    chain.send(host_earnings.functions.setAuthorizedCaller(market.address, True), DEPLOYER)
    chain.send(market.functions.setProofSystem(proof_system.address), DEPLOYER)
    chain.send(market.functions.setUsdcAddress(usdc.address), DEPLOYER)
    chain.send(node_registry.functions.initializeSlashing(deployer), DEPLOYER)
    for repo, file in MODELS:
        chain.send(model_registry.functions.addTrustedModel(repo, file, MODEL_SHA), DEPLOYER)
    for account in chain.accounts[1:]:
        chain.send(usdc.functions.mint(account, USDC_PER_ACCOUNT), DEPLOYER)
        chain.send(fab.functions.mint(account, FAB_PER_ACCOUNT), DEPLOYER)
    return chain


@pytest.fixture
def chain(_deployed: Chain) -> Iterator[Chain]:
    """The deployed chain; everything a test does is rolled back afterwards."""
    snapshot = _deployed.w3.provider.make_request("evm_snapshot", [])["result"]
    try:
        yield _deployed
    finally:
        reverted = _deployed.w3.provider.make_request("evm_revert", [snapshot])["result"]
        assert reverted, "evm_revert failed"


@pytest.fixture
def registered_host(chain: Chain) -> Chain:
    """`chain` with account HOST registered for models 0 and 1."""
    register_host(chain)
    return chain
