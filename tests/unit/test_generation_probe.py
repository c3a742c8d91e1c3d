"""The generation probe's reading of answers (fabstir_sdk.chain.generation), without a node.

A fake JSON-RPC batch stands in for the node; the devnet tests
(tests/integration/test_contract_generation.py) run the probe against real contracts.
"""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import encode
from eth_utils.abi import function_signature_to_4byte_selector

from fabstir_sdk.chain.abi import Contract
from fabstir_sdk.chain.generation import check_contracts
from fabstir_sdk.chain.rpc import RpcFailure
from fabstir_sdk.errors import RpcError, UnsupportedContractsError

FIELDS = {
    "job_marketplace": ("JobMarketplace", "0x" + "11" * 20),
    "node_registry": ("NodeRegistry", "0x" + "22" * 20),
    "model_registry": ("ModelRegistry", "0x" + "33" * 20),
    "proof_system": ("ProofSystem", "0x" + "44" * 20),
    "host_earnings": ("HostEarnings", "0x" + "55" * 20),
    "usdc_token": ("TestUSDC", "0x" + "66" * 20),
    "fab_token": ("FABToken", "0x" + "77" * 20),
}
CONTRACTS = {field: Contract(name, address) for field, (name, address) in FIELDS.items()}
BY_ADDRESS = {c.address: field for field, c in CONTRACTS.items()}
#: What each probed function answers on a well-wired February deployment.
GOOD = {
    "DEFAULT_PROOF_TIMEOUT": encode(["uint256"], [300]),
    "nodeRegistry": encode(["address"], [CONTRACTS["node_registry"].address]),
    "hostEarnings": encode(["address"], [CONTRACTS["host_earnings"].address]),
    "proofSystem": encode(["address"], [CONTRACTS["proof_system"].address]),
    "modelTokenPricing": encode(["uint256"], [0]),
    "modelRegistry": encode(["address"], [CONTRACTS["model_registry"].address]),
    "fabToken": encode(["address"], [CONTRACTS["fab_token"].address]),
    "DEFAULT_RATE_LIMIT": encode(["uint256"], [1000]),
    "getBalance": encode(["uint256"], [0]),
    "verifiedProofs": encode(["bool"], [False]),
    "decimals": encode(["uint8"], [6]),
}


class FakeRpc:
    def __init__(self, answer: Any) -> None:
        self.answer = answer  # (contract field, selector hex) -> JSON result or RpcFailure
        self.batches: list[list[str]] = []

    async def batch(self, calls: list[tuple[str, Any]], **_: Any) -> list[Any]:
        self.batches.append([method for method, _ in calls])
        out = []
        for method, params in calls:
            if method == "eth_getCode":
                out.append("0x6080")
                continue
            to, data = params[0]["to"], params[0]["data"]
            out.append(self.answer(BY_ADDRESS[to], data))
        return out


class FakeClient:
    def __init__(self, rpc: FakeRpc) -> None:
        self.rpc = rpc


SIGNATURES = [
    "DEFAULT_PROOF_TIMEOUT()",
    "nodeRegistry()",
    "hostEarnings()",
    "proofSystem()",
    "modelTokenPricing(address,bytes32,address)",
    "modelRegistry()",
    "fabToken()",
    "DEFAULT_RATE_LIMIT()",
    "getBalance(address,address)",
    "verifiedProofs(bytes32)",
    "decimals()",
]
#: 0x-selector -> function name
NAMES = {
    "0x" + function_signature_to_4byte_selector(sig).hex(): sig.split("(")[0] for sig in SIGNATURES
}


def _good(_field: str, data: str) -> str:
    return "0x" + GOOD[NAMES[data[:10]]].hex()


async def _probe(answer: Any) -> FakeRpc:
    rpc = FakeRpc(answer)
    await check_contracts(FakeClient(rpc), CONTRACTS.__getitem__)  # type: ignore[arg-type]
    return rpc


async def test_a_well_wired_deployment_passes_in_one_batch() -> None:
    rpc = await _probe(_good)
    assert rpc.batches == [["eth_call"] * 12]


async def test_a_node_failure_is_not_mistaken_for_a_missing_function() -> None:
    # A rate limit or an internal error says nothing about the contract: it propagates.
    def flaky(field: str, data: str) -> Any:
        if NAMES[data[:10]] == "DEFAULT_RATE_LIMIT":
            return RpcFailure(
                "ModelRegistry.DEFAULT_RATE_LIMIT", {"code": -32005, "message": "limit"}
            )
        return _good(field, data)

    with pytest.raises(RpcError, match="limit"):
        await _probe(flaky)


@pytest.mark.parametrize(
    "answer",
    [
        "0x",  # no code, or a fallback that returns nothing
        RpcFailure("x", {"code": 3, "message": "execution reverted", "data": "0x"}),
        RpcFailure("x", {"code": -32000, "message": "execution reverted"}),
        "0x" + "00" * 7,  # too short for a uint256
    ],
    ids=["empty", "revert-no-data", "revert-message", "short"],
)
async def test_each_kind_of_silence_counts_as_missing(answer: Any) -> None:
    def old_registry(field: str, data: str) -> Any:
        return answer if NAMES[data[:10]] == "DEFAULT_RATE_LIMIT" else _good(field, data)

    with pytest.raises(UnsupportedContractsError) as info:
        await _probe(old_registry)
    assert info.value.problems == [
        f"the ModelRegistry at {CONTRACTS['model_registry'].address} has no DEFAULT_RATE_LIMIT(): "
        "an older ModelRegistry (January 2026: no per-model rate limits)"
    ]
