"""The SDK and the host refuse contracts they do not speak, at authenticate / host start.

A JobMarketplace of the January 2026 shape (contracts/test/JanuaryMarketplace.sol), a missing
contract and a stale ModelRegistry are deployed or configured on the devnet; the one batched
probe of fabstir_sdk.chain.generation must name each problem in UnsupportedContractsError.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import decode
from eth_utils.address import to_checksum_address

from fabstir_sdk import ContractAddresses, FabstirSDK, RpcError, UnsupportedContractsError
from fabstir_sdk.chain.abi import encode_constructor
from fabstir_sdk.chain.generation import check_contracts
from fabstir_sdk.chain.rpc import JsonRpcClient
from fabstir_sdk.devnet import Devnet
from fabstir_sdk.host._chain import HostChain

from .rpc_proxy import RpcProxy

# The source-extracted call list of the selector test (tests/contracts is not a package).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contracts"))
import upstream_calls
from contract_helpers import UPSTREAM_ABI_DIR

USER, HOST = 1, 2
BUILTIN = "fabstir/builtin:toy-1.gguf"


async def _transact(rpc: JsonRpcClient, tx: dict[str, str]) -> dict[str, Any]:
    """Send ``tx`` from an unlocked devnet account and mine it now; its receipt."""
    sent = await rpc.call("eth_sendTransaction", tx)
    await rpc.call("evm_mine")  # the devnet mines on an interval: do not wait for the tick
    receipt: dict[str, Any] = await rpc.call("eth_getTransactionReceipt", sent)
    assert receipt["status"] == "0x1", receipt
    return receipt


async def _deploy(net: Devnet, name: str, *args: Any) -> str:
    """Deploy artifact ``name`` from the devnet's first (unlocked) account; its address."""
    rpc = JsonRpcClient(net.rpc_url)
    try:
        data = "0x" + encode_constructor(name, args).hex()
        receipt = await _transact(rpc, {"from": net.accounts[0].address, "data": data})
        return to_checksum_address(receipt["contractAddress"])
    finally:
        await rpc.aclose()


def _with(net: Devnet, **changes: str) -> ContractAddresses:
    return ContractAddresses(**{**net.addresses.model_dump(), **changes})


async def _january(net: Devnet) -> str:
    a = net.addresses
    return await _deploy(
        net, "test/JanuaryMarketplace", a.node_registry, a.host_earnings, a.proof_system
    )


async def test_the_devnet_contracts_pass_the_probe_in_one_batch(devnet: Devnet) -> None:
    proxy = await RpcProxy(devnet.rpc_url).start()
    try:
        async with FabstirSDK(devnet.sdk_config(rpc_url=proxy.url)) as sdk:
            started = time.perf_counter()
            result = await sdk.authenticate(devnet.accounts[USER].private_key)
            elapsed = time.perf_counter() - started
    finally:
        await proxy.stop()
    assert result.user_address == devnet.accounts[USER].address
    # the chain id as before, then the probe: one request of 12 eth_calls (no eth_getCode
    # unless something is wrong)
    assert proxy.requests == [["eth_chainId"], ["eth_call"] * 12]
    print(f"authenticate with the generation probe: {elapsed * 1000:.1f} ms")


async def test_a_january_marketplace_is_refused_at_authenticate_by_name(devnet: Devnet) -> None:
    old = await _january(devnet)
    config = devnet.sdk_config(contract_addresses=_with(devnet, job_marketplace=old))

    # What happened before the probe: reads fail late and obscurely.
    async with FabstirSDK(config) as sdk:
        with pytest.raises(RpcError, match="malformed return data"):
            await sdk.get_payment_manager().get_session_job(1)

    async with FabstirSDK(config) as sdk:
        with pytest.raises(UnsupportedContractsError) as info:
            await sdk.authenticate(devnet.accounts[USER].private_key)
        assert not sdk.get_auth_manager().is_authenticated()
    assert info.value.problems == [
        f"the JobMarketplace at {old} has no DEFAULT_PROOF_TIMEOUT(): an older JobMarketplace "
        "(January 2026: 5-argument createSessionJobForModel, 7-argument "
        "createSessionJobForModelWithToken, 17-field sessionJobs, signed submitProofOfWork)"
    ]
    assert info.value.generation == "Fabstir contracts of February 2026"
    assert str(info.value).startswith(
        "the configured contracts are not the Fabstir contracts of February 2026 this SDK speaks"
    )


async def test_the_stand_in_has_the_january_shape(devnet: Devnet) -> None:
    # The stand-in really answers as the old generation: 17 sessionJobs fields, the old
    # 5-argument creation accepted, the new 6-argument one unknown.
    from fabstir_sdk.chain.abi import Contract
    from fabstir_sdk.chain.model_id import model_id

    old = await _january(devnet)
    stand_in = Contract("test/JanuaryMarketplace", old)
    rpc = JsonRpcClient(devnet.rpc_url)
    host = devnet.accounts[HOST].address
    try:
        create = stand_in.call("createSessionJobForModel", host, model_id(BUILTIN), 2000, 60, 100)
        user = devnet.accounts[USER].address
        await _transact(rpc, {"from": user, "to": old, "data": "0x" + create.data.hex()})
        ours = Contract("JobMarketplace", old)
        raw = await rpc.call(
            "eth_call", {"to": old, "data": "0x" + ours.call("sessionJobs", 1).data.hex()}, "latest"
        )
        types = ["uint256", "address", "address", "address", *["uint256"] * 7, "uint8"]
        types += ["uint256", "uint256", "string", "bytes32", "string"]
        fields = decode(types, bytes.fromhex(raw[2:]))
        assert len(fields) == 17
        assert fields[:3] == (1, devnet.accounts[USER].address.lower(), host.lower())
        assert (fields[5], fields[7], fields[10], fields[14]) == (2000, 60, 100, "")
        new = ours.call("createSessionJobForModel", host, model_id(BUILTIN), 2000, 60, 100, 300)
        with pytest.raises(RpcError):
            await rpc.call("eth_call", {"to": old, "data": "0x" + new.data.hex()}, "latest")
    finally:
        await rpc.aclose()


async def test_a_missing_contract_and_a_stale_registry_are_named(devnet: Devnet) -> None:
    nobody = "0x00000000000000000000000000000000DeaDBeef"
    stale = await _deploy(devnet, "ModelRegistry", devnet.addresses.fab_token)
    addresses = _with(devnet, proof_system=nobody, model_registry=stale)
    config = devnet.sdk_config(contract_addresses=addresses)
    async with FabstirSDK(config) as sdk:
        with pytest.raises(UnsupportedContractsError) as info:
            await sdk.authenticate(devnet.accounts[USER].private_key)
    a = devnet.addresses
    assert info.value.problems == [
        f"no contract at the ProofSystem at {nobody}",
        f"the JobMarketplace at {a.job_marketplace} uses ProofSystem {a.proof_system}, "
        f"not the configured {nobody}",
        f"the NodeRegistry at {a.node_registry} uses ModelRegistry {a.model_registry}, "
        f"not the configured {stale}",
    ]


async def test_another_contract_in_a_slot_is_named(devnet: Devnet) -> None:
    # The USDC token configured as the HostEarnings: code, but none of its functions.
    a = devnet.addresses
    config = devnet.sdk_config(contract_addresses=_with(devnet, host_earnings=a.usdc_token))
    async with FabstirSDK(config) as sdk:
        with pytest.raises(UnsupportedContractsError) as info:
            await check_contracts(sdk.get_auth_manager()._ctx.client, _contract(sdk))
    assert info.value.problems == [
        f"the HostEarnings at {a.usdc_token} does not answer getBalance(address,address): "
        "not a HostEarnings of this generation",
        f"the JobMarketplace at {a.job_marketplace} uses HostEarnings {a.host_earnings}, "
        f"not the configured {a.usdc_token}",
    ]


def _contract(sdk: FabstirSDK) -> Any:
    return sdk.get_auth_manager()._ctx.contract


async def test_the_host_refuses_a_january_marketplace_at_start(
    devnet: Devnet, tmp_path: Path
) -> None:
    old = await _january(devnet)
    config = devnet.sdk_config(contract_addresses=_with(devnet, job_marketplace=old))
    chain = HostChain(config)
    try:
        with pytest.raises(UnsupportedContractsError, match="has no DEFAULT_PROOF_TIMEOUT"):
            await chain.open(devnet.accounts[HOST].private_key, [BUILTIN])
    finally:
        await chain.aclose()

    # The real command: `fabstir host run` stops with the error, before serving anything.
    manifest = tmp_path / "january.json"
    manifest.write_text(
        json.dumps(
            {
                "chain_id": devnet.chain_id,
                "rpc_url": devnet.rpc_url,
                "contracts": _with(devnet, job_marketplace=old).model_dump(),
            }
        )
    )
    key = devnet.accounts[HOST].private_key
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fabstir_sdk.host", "run", "--manifest", str(manifest),
        "--model", BUILTIN, "--host", "127.0.0.1", "--port", "0", "--no-register",
        env={**os.environ, "FABSTIR_HOST_PRIVATE_KEY": key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 1, (out, err)
    text = err.decode()
    assert text.startswith("fabstir: error: the configured contracts are not the Fabstir "), text
    assert f"the JobMarketplace at {old} has no DEFAULT_PROOF_TIMEOUT()" in text
    assert out == b""


@pytest.mark.skipif(
    not UPSTREAM_ABI_DIR.is_dir(), reason=f"upstream ABIs not found at {UPSTREAM_ABI_DIR}"
)
async def test_calls_made_at_run_time_are_the_ones_the_selector_test_checks(
    devnet: Devnet, host: FabstirSDK, sdk_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The codec instrumented: every contract call a user's and a host's flow makes is among
    the calls tests/contracts/test_upstream_selectors.py extracts from the source (so the
    static extraction misses none of these) and is in the upstream ABIs."""
    import contextlib

    from fabstir_sdk import NoHostAvailableError
    from fabstir_sdk.chain.abi import Contract

    made: set[tuple[str, str]] = set()
    original = Contract.call

    def recording(self: Contract, fn: str, *args: Any) -> Any:
        call = original(self, fn, *args)
        made.add(("TestUSDC" if self.name == "FABToken" else self.name, call.signature))
        return call

    monkeypatch.setattr(Contract, "call", recording)
    user = await sdk_for(USER)  # authenticate: the generation probe
    usdc = devnet.addresses.usdc_token
    pm, hm = user.get_payment_manager(), host.get_host_manager()
    with contextlib.suppress(NoHostAvailableError):  # nobody answers at the host's URL
        await user.get_discovery_manager().find_hosts(required_models=[devnet.models[0]])
    await user.get_model_manager().list_models()
    await pm.approve_usdc(usdc, "1")
    job = await pm.create_usdc_session_job(
        devnet.accounts[HOST].address, usdc, "1", 2000, 3600, 1000, model=devnet.models[0]
    )
    await pm.deposit("0.01")
    await pm.withdraw("0.01")
    chain = HostChain(devnet.sdk_config())
    try:
        await chain.open(devnet.accounts[HOST].private_key, [devnet.models[0]])
        await chain.check_session(job.job_id, devnet.accounts[USER].address, {})
    except Exception as exc:  # MODEL_NOT_SERVED: the served map is empty on purpose
        assert "not served here" in str(exc)
    finally:
        await chain.aclose()
    await devnet.advance_time(60)
    await hm.submit_proof_of_work(job.job_id, 1000, os.urandom(32), "p", "d")
    await pm.complete_session_job(job.job_id, "c")
    await hm.get_host_earnings(usdc)
    await hm.withdraw_earnings(usdc)

    extracted, _ = upstream_calls.used_signatures()
    static = {("TestUSDC" if c == "FABToken" else c, s) for c, s in extracted}
    assert made - static == set()
    upstream = {
        (ours, upstream_calls.signature_of(e))
        for ours, file in upstream_calls.UPSTREAM_OF.items()
        for e in upstream_calls.load_abi_file(UPSTREAM_ABI_DIR / file)
        if e.get("type") == "function"
    }
    assert made - upstream == set()
    assert len(made) >= 25  # the flow really went through the codec
    print(f"{len(made)} distinct contract functions called at run time, all extracted")
