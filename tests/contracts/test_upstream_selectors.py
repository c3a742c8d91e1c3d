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
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from contract_helpers import ABI_DIR, REPO_ROOT, UPSTREAM_ABI_DIR

SRC = REPO_ROOT / "src" / "fabstir_sdk"

#: Our artifact -> the upstream client ABI of the contract it stands for.
UPSTREAM_OF = {
    "JobMarketplace": "JobMarketplaceWithModelsUpgradeable.json",
    "NodeRegistry": "NodeRegistryWithModelsUpgradeable.json",
    "ModelRegistry": "ModelRegistryUpgradeable.json",
    "ProofSystem": "ProofSystemUpgradeable.json",
    "HostEarnings": "HostEarningsUpgradeable.json",
    "TestUSDC": "ERC20.json",
    "FABToken": "ERC20.json",
}
#: ContractAddresses field -> artifact (as fabstir_sdk.managers._context maps them).
FIELD_ARTIFACT = {
    "job_marketplace": "JobMarketplace",
    "node_registry": "NodeRegistry",
    "model_registry": "ModelRegistry",
    "proof_system": "ProofSystem",
    "host_earnings": "HostEarnings",
    "usdc_token": "TestUSDC",
    "fab_token": "FABToken",
}
#: Modules that only deploy and administer our own contracts on a devnet (the deployer; devnet
#: hosts, whose stake is test FAB minted for them).
OWN_DEPLOYMENT_ONLY = {"devnet/_deploy.py", "devnet/_hosts.py"}


def _type(param: dict[str, Any]) -> str:
    kind: str = param["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(_type(c) for c in param["components"]) + ")" + kind[len("tuple") :]
    return kind


def _entries(abi: list[dict[str, Any]], kind: str) -> dict[str, list[dict[str, Any]]]:
    table: dict[str, list[dict[str, Any]]] = {}
    for entry in abi:
        if entry.get("type") == kind:
            table.setdefault(entry["name"], []).append(entry)
    return table


def _signature(entry: dict[str, Any]) -> str:
    return f"{entry['name']}({','.join(_type(p) for p in entry['inputs'])})"


def _load(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    abi: list[dict[str, Any]] = data["abi"] if isinstance(data, dict) else data
    return abi


OURS = {name: _load(ABI_DIR / f"{name}.json") for name in UPSTREAM_OF}


# ------------------------------------------------------------------------------ extraction


@dataclass(frozen=True)
class CallSite:
    where: str  # path:line
    contract: str | None  # our artifact name, or None when it could not be resolved
    function: str | None  # None when the name is not a literal
    nargs: int | None  # None when *args makes it unknown


@dataclass(frozen=True)
class _Forwarder:
    """A function that passes its parameter ``fn_index`` to ``<contract>.call``."""

    fn_index: int
    contract: str | None  # fixed contract, or
    contract_index: int | None  # the parameter holding the artifact name
    extra_args: int | None  # arguments the forwarder adds (None: unknown)


def _literal(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _contract_of(node: ast.AST, scope: dict[str, str]) -> str | None:
    """The artifact a receiver expression stands for, if the source says so."""
    if isinstance(node, ast.Name):
        return scope.get(node.id)
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        first = _literal(node.args[0]) if node.args else None
        if name == "contract" and first in FIELD_ARTIFACT:
            return FIELD_ARTIFACT[first]
        if name == "contract" and first in UPSTREAM_OF:  # ChainClient.contract(artifact, ...)
            return first
        if name == "erc20":
            return "TestUSDC"
        if name == "Contract" and first in UPSTREAM_OF:
            return first
    return None


def _is_transport(receiver: ast.AST) -> bool:
    """JSON-RPC and bridge clients also have a ``call`` method; they are not contracts."""
    text = ast.unparse(receiver).lower()
    return "rpc" in text or "bridge" in text


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _scope(func: ast.AST) -> dict[str, str]:
    """Local names bound to a contract in this function: ``mp = ctx.contract("...")``."""
    scope: dict[str, str] = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                contract = _contract_of(node.value, scope)
                if contract is not None:
                    scope[target.id] = contract
    return scope


def _contract_calls(func: ast.AST) -> Iterator[ast.Call]:
    for node in ast.walk(func):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "call"
            and not _is_transport(node.func.value)
            and not (node.args and (_literal(node.args[0]) or "").startswith(("eth_", "evm_")))
        ):
            yield node


def _nargs(call: ast.Call, skip: int) -> int | None:
    args = call.args[skip:]
    if any(isinstance(a, ast.Starred) for a in args) or call.keywords:
        return None
    return len(args)


def _find_forwarders(tree: ast.AST) -> dict[str, _Forwarder]:
    """The forwarders one module defines, by function name."""
    forwarders: dict[str, _Forwarder] = {}
    for func in _functions(tree):
        params = [a.arg for a in func.args.args]
        scope = _scope(func)
        for call in _contract_calls(func):
            if not call.args or not isinstance(call.args[0], ast.Name):
                continue
            name = call.args[0].id
            if name not in params:
                continue
            offset = 1 if params and params[0] in ("self", "cls") else 0
            receiver = call.func.value  # type: ignore[attr-defined]
            contract = _contract_of(receiver, scope)
            contract_index = None
            if (
                contract is None
                and isinstance(receiver, ast.Call)
                and receiver.args
                and isinstance(receiver.args[0], ast.Name)
                and receiver.args[0].id in params
            ):
                contract_index = params.index(receiver.args[0].id) - offset
            starred = any(isinstance(a, ast.Starred) for a in call.args[1:])
            forwarders[func.name] = _Forwarder(
                fn_index=params.index(name) - offset,
                contract=contract,
                contract_index=contract_index,
                extra_args=None if starred else len(call.args) - 1,
            )
    return forwarders


def extract_call_sites(trees: dict[str, ast.AST]) -> list[CallSite]:
    """Every contract call site in ``trees`` (module path -> parsed source).

    A forwarder applies in the module that defines it and in modules importing it by name.
    """
    defined = {rel: _find_forwarders(tree) for rel, tree in trees.items()}
    exported = {name: fw for table in defined.values() for name, fw in table.items()}
    sites: list[CallSite] = []
    for rel, tree in trees.items():
        imported = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        forwarders = {n: fw for n, fw in exported.items() if n in imported} | defined[rel]
        for func in _functions(tree):
            scope = _scope(func)
            forwarded_here = func.name in forwarders
            for call in _contract_calls(func):
                where = f"{rel}:{call.lineno}"
                name = _literal(call.args[0]) if call.args else None
                if name is None:
                    if forwarded_here:
                        continue  # resolved at the forwarder's call sites
                    sites.append(CallSite(where, None, None, None))
                    continue
                contract = _contract_of(call.func.value, scope)  # type: ignore[attr-defined]
                sites.append(CallSite(where, contract, name, _nargs(call, 1)))
            for node in ast.walk(func):
                if not isinstance(node, ast.Call):
                    continue
                callee = node.func
                cname = callee.attr if isinstance(callee, ast.Attribute) else None
                cname = cname or (callee.id if isinstance(callee, ast.Name) else None)
                fw = forwarders.get(cname or "")
                if fw is None or len(node.args) <= fw.fn_index:
                    continue
                where = f"{rel}:{node.lineno}"
                name = _literal(node.args[fw.fn_index])
                contract = fw.contract
                if fw.contract_index is not None:
                    contract = _literal(node.args[fw.contract_index])
                nargs = _nargs(node, fw.fn_index + 1)
                sites.append(CallSite(where, contract, name, nargs))
    return sites


def _unique_contract(name: str, nargs: int | None) -> str | None:
    """The one artifact (ERC-20s counted once) with a function ``name`` of that arity."""
    found = {
        "TestUSDC" if artifact == "FABToken" else artifact
        for artifact, abi in OURS.items()
        for entry in _entries(abi, "function").get(name, [])
        if nargs is None or len(entry["inputs"]) == nargs
    }
    return found.pop() if len(found) == 1 else None


def _sdk_sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def _used_signatures() -> tuple[dict[tuple[str, str], list[str]], list[str]]:
    """(contract, signature) -> call sites, and the call sites that could not be resolved."""
    used: dict[tuple[str, str], list[str]] = {}
    unresolved: list[str] = []
    trees = {str(p.relative_to(SRC)): ast.parse(p.read_text(), str(p)) for p in _sdk_sources()}
    for site in extract_call_sites(trees):
        if site.function is None:
            unresolved.append(f"{site.where}: function name is not a literal")
            continue
        contract = site.contract or _unique_contract(site.function, site.nargs)
        if contract is None:
            unresolved.append(f"{site.where}: cannot tell which contract {site.function} is on")
            continue
        candidates = [
            e
            for e in _entries(OURS[contract], "function").get(site.function, [])
            if site.nargs is None or len(e["inputs"]) == site.nargs
        ]
        if len(candidates) != 1:
            unresolved.append(f"{site.where}: {contract}.{site.function} with {site.nargs} args")
            continue
        used.setdefault((contract, _signature(candidates[0])), []).append(site.where)
    return used, unresolved


# ------------------------------------------------------------------------------- tests


needs_upstream = pytest.mark.skipif(
    not UPSTREAM_ABI_DIR.is_dir(), reason=f"upstream ABIs not found at {UPSTREAM_ABI_DIR}"
)


def test_every_call_site_is_resolved() -> None:
    used, unresolved = _used_signatures()
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
    used, _ = _used_signatures()
    problems = []
    for (contract, signature), where in sorted(used.items()):
        if all(w.split(":")[0] in OWN_DEPLOYMENT_ONLY for w in where):
            continue
        upstream = {
            _signature(e): e
            for e in _load(UPSTREAM_ABI_DIR / UPSTREAM_OF[contract])
            if e.get("type") == "function"
        }
        mine = {_signature(e): e for e in OURS[contract] if e["type"] == "function"}
        if signature not in upstream:
            problems.append(
                f"{contract}.{signature} is not upstream (called at {', '.join(where)})"
            )
            continue
        theirs = [_type(o) for o in upstream[signature]["outputs"]]
        ours = [_type(o) for o in mine[signature]["outputs"]]
        if theirs != ours:
            problems.append(f"{contract}.{signature} returns {theirs} upstream, {ours} here")
    assert not problems, "\n".join(problems)


@needs_upstream
def test_every_event_decoded_exists_upstream() -> None:
    literals: dict[str, list[str]] = {}
    for path in _sdk_sources():
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
            _signature(e): e
            for e in _load(UPSTREAM_ABI_DIR / UPSTREAM_OF[contract])
            if e.get("type") == "event"
        }
        for name, entries in _entries(abi, "event").items():
            if name not in literals:
                continue
            for entry in entries:
                checked += 1
                signature = _signature(entry)
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

    def computed(self, suffix):
        mp = self._ctx.contract("job_marketplace")
        return mp.call("get" + suffix)

def deploy_step(name, address, function, *args):
    return Contract(name, address).call(function, *args)

def deploy():
    deploy_step("ProofSystem", "0x", "setAuthorizedCaller", "0x", True)
    Contract("HostEarnings", "0x").call("getBalance", "0x", "0x")
"""
    sites = sorted(
        (s.contract or "?", s.function or "?", -1 if s.nargs is None else s.nargs)
        for s in extract_call_sites({"m.py": ast.parse(source)})
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
