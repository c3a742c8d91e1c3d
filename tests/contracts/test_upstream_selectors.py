"""Everything the SDK and the host call on chain exists in the deployed upstream contracts.

The calls are extracted from the source, not listed by hand: every contract call in
``src/fabstir_sdk`` goes through the ABI codec as ``<contract>.call("function", *args)``
(:class:`fabstir_sdk.chain.abi.Contract`), so an AST walk finds each call site, resolves which
contract it is made on (``ctx.contract("job_marketplace")``, ``ctx.erc20(...)``,
``Contract("NodeRegistry", ...)`` or a local name bound to one of those) and how many arguments
it passes. Helpers that forward a function name to ``.call`` (``_registry_read(fn, ...)``) are
found the same way and their call sites resolved through them. A call site the walk cannot
resolve fails the test, so a new calling pattern cannot slip past it.

Events are matched by name: every string literal in the source that names an event of our
contracts counts as used (decoding a receipt or filtering logs by topic).

Each resolved signature must be in the upstream client ABIs (shared/upstream-abi) with the same
outputs, so the SDK and the host can run against upstream's deployed contracts.

The devnet deployer (``fabstir_sdk.devnet._deploy``: constructors, wiring, seeding models) and
the devnet's host set-up (minting test FAB) administer our own fresh deployment; a function only
they call is checked against our ABIs only.
"""

from __future__ import annotations

import ast

import pytest
from contract_helpers import REPO_ROOT, UPSTREAM_ABI_DIR
from upstream_calls import (
    OURS,
    OWN_DEPLOYMENT_ONLY,
    SRC,
    UPSTREAM_OF,
    abi_type,
    entries,
    extract_call_sites,
    load_abi_file,
    sdk_sources,
    signature_of,
    used_signatures,
)

# ------------------------------------------------------------------------------- tests


needs_upstream = pytest.mark.skipif(
    not UPSTREAM_ABI_DIR.is_dir(), reason=f"upstream ABIs not found at {UPSTREAM_ABI_DIR}"
)


def test_every_call_site_is_resolved() -> None:
    used, unresolved = used_signatures()
    assert not unresolved, "\n".join(unresolved)
    # the extraction sees the calls we know are there (guards against it finding nothing)
    assert ("JobMarketplace", "sessionJobs(uint256)") in used
    assert (
        "JobMarketplace",
        "createSessionJobForModelWithToken(address,bytes32,address,uint256,uint256,uint256,uint256,uint256)",
    ) in used
    assert ("NodeRegistry", "getHostModelPrices(address,address)") in used  # via a forwarder
    assert ("TestUSDC", "approve(address,uint256)") in used


@needs_upstream
def test_every_function_called_exists_upstream() -> None:
    used, _ = used_signatures()
    problems = []
    for (contract, signature), where in sorted(used.items()):
        if all(w.split(":")[0] in OWN_DEPLOYMENT_ONLY for w in where):
            continue
        upstream = {
            signature_of(e): e
            for e in load_abi_file(UPSTREAM_ABI_DIR / UPSTREAM_OF[contract])
            if e.get("type") == "function"
        }
        mine = {signature_of(e): e for e in OURS[contract] if e["type"] == "function"}
        if signature not in upstream:
            problems.append(
                f"{contract}.{signature} is not upstream (called at {', '.join(where)})"
            )
            continue
        theirs = [abi_type(o) for o in upstream[signature]["outputs"]]
        ours = [abi_type(o) for o in mine[signature]["outputs"]]
        if theirs != ours:
            problems.append(f"{contract}.{signature} returns {theirs} upstream, {ours} here")
    assert not problems, "\n".join(problems)


@needs_upstream
def test_every_event_decoded_exists_upstream() -> None:
    literals: dict[str, list[str]] = {}
    for path in sdk_sources():
        rel = str(path.relative_to(SRC))
        if rel in OWN_DEPLOYMENT_ONLY:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                literals.setdefault(node.value, []).append(f"{rel}:{node.lineno}")
    problems = []
    checked = 0
    for contract, abi in OURS.items():
        upstream = {
            signature_of(e): e
            for e in load_abi_file(UPSTREAM_ABI_DIR / UPSTREAM_OF[contract])
            if e.get("type") == "event"
        }
        for name, events in entries(abi, "event").items():
            if name not in literals:
                continue
            for entry in events:
                checked += 1
                signature = signature_of(entry)
                if signature not in upstream:
                    problems.append(f"event {contract}.{signature} is not upstream")
                    continue
                layout = [(p["name"], p["indexed"]) for p in entry["inputs"]]
                if layout != [(p["name"], p["indexed"]) for p in upstream[signature]["inputs"]]:
                    problems.append(f"event {contract}.{signature}: names/indexing differ")
    assert checked >= 5  # SessionJobCreated, SessionCompletedBy, EarningsCredited, ...
    assert not problems, "\n".join(problems)


def test_the_extraction_resolves_each_pattern() -> None:
    # One module with each calling pattern, and a call whose function cannot be known.
    source = """
class M:
    def direct(self, host, token, a, b):
        mp = self._ctx.contract("job_marketplace")
        self._ctx.contract("node_registry").call("getNodeFullInfo", host)
        self._ctx.erc20(token).call("allowance", a, b)
        return mp.call("sessionJobs", 1)

    def _read(self, fn, *args):
        return self._ctx.contract("node_registry").call(fn, *args)

    async def use(self, h, t):
        self._read("getHostModelPrices", h, t)
        await self._ctx.client.rpc.call("eth_chainId")
        await self._bridge.call(h)

    def __init__(self, ctx):
        self._registry = ctx.contract("model_registry")

    def attribute(self):
        return self._registry.call("getModel", b"")

    def computed(self, suffix):
        mp = self._ctx.contract("job_marketplace")
        return mp.call("get" + suffix)

def deploy_step(name, address, function, *args):
    return Contract(name, address).call(function, *args)

def deploy():
    deploy_step("ProofSystem", "0x", "setAuthorizedCaller", "0x", True)
    Contract("HostEarnings", "0x").call("getBalance", "0x", "0x")
"""
    helpers = """
def eth_call(contract, fn, *args):
    call = contract.call(fn, *args)
    return "eth_call", call
"""
    user = """
from ._helpers import eth_call

async def _read(rpc, contract, fn, *args):
    return await rpc.batch([eth_call(contract, fn, *args)])

async def fund(rpc, token, who):
    erc20 = Contract("TestUSDC", token)
    await _read(rpc, erc20, "balanceOf", who)
    await rpc.batch([eth_call(Contract("FABToken", token), "decimals")])
"""
    trees = {"m.py": ast.parse(source), "d/_helpers.py": ast.parse(helpers)}
    trees["d/_user.py"] = ast.parse(user)
    sites = sorted(
        (s.contract or "?", s.function or "?", -1 if s.nargs is None else s.nargs)
        for s in extract_call_sites(trees)
    )
    assert sites == sorted(
        [
            ("JobMarketplace", "sessionJobs", 1),
            ("NodeRegistry", "getNodeFullInfo", 1),
            ("TestUSDC", "allowance", 2),
            ("NodeRegistry", "getHostModelPrices", 2),
            ("ProofSystem", "setAuthorizedCaller", 2),
            ("HostEarnings", "getBalance", 2),
            ("?", "?", -1),  # mp.call("get" + suffix): reported as unresolved
            ("ModelRegistry", "getModel", 1),  # self._registry, bound in __init__
            ("TestUSDC", "balanceOf", 1),  # through two forwarders, one imported
            ("FABToken", "decimals", 0),
        ]
    )


def test_the_host_paces_proofs_with_the_contracts_burst_factor() -> None:
    # The host no longer reads RATE_LIMIT_BURST() (upstream lacks it): its own constant must
    # stay what our contract enforces.
    import re

    solidity = (REPO_ROOT / "contracts" / "src" / "JobMarketplace.sol").read_text()
    (onchain,) = re.findall(r"uint256 public constant RATE_LIMIT_BURST = (\d+);", solidity)
    host = ast.parse((SRC / "host" / "_chain.py").read_text())
    (value,) = [
        node.value.value
        for node in ast.walk(host)
        if isinstance(node, ast.Assign)
        and [ast.unparse(t) for t in node.targets] == ["RATE_LIMIT_BURST"]
        and isinstance(node.value, ast.Constant)
    ]
    assert value == int(onchain) == 2
