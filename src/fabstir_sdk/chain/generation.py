"""Which generation of the Fabstir contracts the configured addresses hold: one batched probe.

The SDK and the host speak the contracts of February 2026 (the ABIs in upstream's sdk-core,
and ours). Fabstir's January 2026 deployments differ where it hurts: 5- and 7-argument session
creation, a 17-field ``sessionJobs`` and a signed ``submitProofOfWork``. Against those, calls
fail late and obscurely ("reverted without a reason", "malformed return data"), so
:func:`check_contracts` asks, in one JSON-RPC batch of ``eth_call``s, for a view that only the
February generation has on each contract, for each contract's presence, and for the addresses
the contracts are wired to; and refuses with :class:`UnsupportedContractsError`, naming what is
missing, before anything else is sent. Only when something is wrong does it spend a second
batch (``eth_getCode``) to tell "no contract at that address" from "another contract".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import RpcError, UnsupportedContractsError
from .abi import Call, Contract
from .addresses import ZERO_ADDRESS
from .client import ChainClient
from .rpc import RpcFailure

__all__ = ["GENERATION", "check_contracts"]

#: The contract generation this SDK speaks.
GENERATION = "Fabstir contracts of February 2026"

_ZERO32 = b"\x00" * 32

#: What the January 2026 contracts lack, by contract, in words for the error.
_OLDER = {
    "job_marketplace": (
        "an older JobMarketplace (January 2026: 5-argument createSessionJobForModel, 7-argument "
        "createSessionJobForModelWithToken, 17-field sessionJobs, signed submitProofOfWork)"
    ),
    "node_registry": (
        "an older NodeRegistry (January 2026: no per-token model pricing, "
        "getHostModelPrices(address) without a token)"
    ),
    "model_registry": "an older ModelRegistry (January 2026: no per-model rate limits)",
}


@dataclass(frozen=True)
class _Probe:
    field: str  # ContractAddresses field of the contract asked
    call: Call
    links_to: str | None = None  # the field whose address the answer must equal


def _probes(contract: Callable[[str], Contract]) -> list[_Probe]:
    """The batch: written out call by call (the selector test reads these call sites)."""
    mp, nr = contract("job_marketplace"), contract("node_registry")
    mr, he, ps = contract("model_registry"), contract("host_earnings"), contract("proof_system")
    usdc, fab = contract("usdc_token"), contract("fab_token")
    return [
        _Probe("job_marketplace", mp.call("DEFAULT_PROOF_TIMEOUT")),
        _Probe("job_marketplace", mp.call("nodeRegistry"), "node_registry"),
        _Probe("job_marketplace", mp.call("hostEarnings"), "host_earnings"),
        _Probe("job_marketplace", mp.call("proofSystem"), "proof_system"),
        _Probe("node_registry", nr.call("modelTokenPricing", ZERO_ADDRESS, _ZERO32, ZERO_ADDRESS)),
        _Probe("node_registry", nr.call("modelRegistry"), "model_registry"),
        _Probe("node_registry", nr.call("fabToken"), "fab_token"),
        _Probe("model_registry", mr.call("DEFAULT_RATE_LIMIT")),
        _Probe("host_earnings", he.call("getBalance", ZERO_ADDRESS, ZERO_ADDRESS)),
        _Probe("proof_system", ps.call("verifiedProofs", _ZERO32)),
        _Probe("usdc_token", usdc.call("decimals")),
        _Probe("fab_token", fab.call("decimals")),
    ]


_NAMES = {
    "job_marketplace": "JobMarketplace",
    "node_registry": "NodeRegistry",
    "model_registry": "ModelRegistry",
    "proof_system": "ProofSystem",
    "host_earnings": "HostEarnings",
    "usdc_token": "USDC",
    "fab_token": "FAB",
}


def _answer(call: Call, result: Any) -> Any:
    """The decoded answer, or None when the contract does not have the function."""
    if isinstance(result, RpcFailure):
        if result.revert_data is None:
            raise result  # the node failed, not the contract
        return None
    if not isinstance(result, str) or not result.startswith("0x") or len(result) <= 2:
        return None  # no code at the address, or a fallback that returns nothing
    try:
        return call.decode(bytes.fromhex(result[2:]))
    except (ValueError, RpcError):
        return None


async def check_contracts(client: ChainClient, contract: Callable[[str], Contract]) -> None:
    """Refuse contracts this SDK does not speak, naming each problem.

    ``contract`` gives the configured contract for a ContractAddresses field name
    (``Context.contract``).
    """
    address = {field: str(contract(field).address) for field in _NAMES}
    probes = _probes(contract)
    calls = [p.call for p in probes]
    results = await client.rpc.batch(
        [("eth_call", ({"to": c.to, "data": "0x" + c.data.hex()}, "latest")) for c in calls],
        labels=[f"{c.contract}.{c.fn}" for c in calls],
        return_errors=True,
    )
    answers = [_answer(c, r) for c, r in zip(calls, results, strict=True)]
    silent: dict[str, list[str]] = {}  # field -> functions it does not answer
    links: list[str] = []
    for probe, answer in zip(probes, answers, strict=True):
        if answer is None:
            silent.setdefault(probe.field, []).append(probe.call.signature)
        elif probe.links_to is not None:
            expected = address[probe.links_to]
            if str(answer) != expected:
                links.append(
                    f"the {_NAMES[probe.field]} at {address[probe.field]} uses "
                    f"{_NAMES[probe.links_to]} {answer}, not the configured {expected}"
                )
    if not silent and not links:
        return
    problems = await _describe(client, address, silent)
    raise UnsupportedContractsError(problems + links, generation=GENERATION)


async def _describe(
    client: ChainClient, address: dict[str, str], silent: dict[str, list[str]]
) -> list[str]:
    """One line per contract that did not answer: absent, older, or something else."""
    fields = list(silent)
    codes = await client.rpc.batch(
        [("eth_getCode", (address[f], "latest")) for f in fields],
        labels=[f"eth_getCode {_NAMES[f]}" for f in fields],
    )
    problems = []
    for field, code in zip(fields, codes, strict=True):
        where = f"{_NAMES[field]} at {address[field]}"
        if code in ("0x", "0x0", None):
            problems.append(f"no contract at the {where}")
            continue
        missing = ", ".join(silent[field])
        older = _OLDER.get(field)
        if older is not None and len(silent[field]) == 1:
            problems.append(f"the {where} has no {missing}: {older}")
        else:
            problems.append(
                f"the {where} does not answer {missing}: not a {_NAMES[field]} of this generation"
            )
    return problems
