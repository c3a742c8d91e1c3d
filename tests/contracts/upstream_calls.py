"""Which contract functions the SDK and the host call, extracted from the source.

Used by tests/contracts/test_upstream_selectors.py (checks them against the upstream ABIs) and
tests/integration/test_contract_generation.py (checks that the calls made at run time are among
them). See the former's docstring for how the extraction works.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contract_helpers import ABI_DIR, REPO_ROOT

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


def abi_type(param: dict[str, Any]) -> str:
    kind: str = param["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(abi_type(c) for c in param["components"]) + ")" + kind[len("tuple") :]
    return kind


def entries(abi: list[dict[str, Any]], kind: str) -> dict[str, list[dict[str, Any]]]:
    table: dict[str, list[dict[str, Any]]] = {}
    for entry in abi:
        if entry.get("type") == kind:
            table.setdefault(entry["name"], []).append(entry)
    return table


def signature_of(entry: dict[str, Any]) -> str:
    return f"{entry['name']}({','.join(abi_type(p) for p in entry['inputs'])})"


def load_abi_file(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    abi: list[dict[str, Any]] = data["abi"] if isinstance(data, dict) else data
    return abi


OURS = {name: load_abi_file(ABI_DIR / f"{name}.json") for name in UPSTREAM_OF}


# ------------------------------------------------------------------------------ extraction


@dataclass(frozen=True)
class CallSite:
    where: str  # path:line
    contract: str | None  # our artifact name, or None when it could not be resolved
    function: str | None  # None when the name is not a literal
    nargs: int | None  # None when *args makes it unknown


@dataclass(frozen=True)
class _Forwarder:
    """A function that passes its parameter ``fn_index`` on as the function name of a contract
    call, directly (``<contract>.call(fn, ...)``) or through another forwarder."""

    fn_index: int
    contract: str | None  # the contract, when the forwarder fixes it
    contract_index: int | None  # or the parameter holding the artifact name
    receiver_index: int | None  # or the parameter holding the Contract object


def _literal(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _contract_of(node: ast.AST, scope: dict[str, str]) -> str | None:
    """The artifact a receiver expression stands for, if the source says so."""
    if isinstance(node, ast.Name | ast.Attribute):
        return scope.get(ast.unparse(node))  # a local, or self.<attribute> set in the module
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


def _scope(func: ast.AST, attributes: dict[str, str] | None = None) -> dict[str, str]:
    """Names bound to a contract: locals of this function (``mp = ctx.contract("...")``) and
    ``self.<attribute>``s the module assigns one to (``attributes``)."""
    scope: dict[str, str] = dict(attributes or {})
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                contract = _contract_of(node.value, scope)
                if contract is not None:
                    scope[target.id] = contract
    return scope


def _attributes(tree: ast.AST) -> dict[str, str]:
    """``self.<attribute>`` names the module binds to a contract, in any method."""
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and ast.unparse(target.value) == "self":
                    contract = _contract_of(node.value, {})
                    if contract is not None:
                        found[ast.unparse(target)] = contract
    return found


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


def _callee(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def _imports(rel: str, tree: ast.AST) -> dict[str, tuple[str, str]]:
    """Names this module imports from modules of the package: name -> (module path, name)."""
    found: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or node.module is None:
            continue
        if node.level:
            base = Path(rel).parent
            for _ in range(node.level - 1):
                base = base.parent
            target = base / node.module.replace(".", "/")
        elif node.module.startswith("fabstir_sdk."):
            target = Path(node.module.removeprefix("fabstir_sdk.").replace(".", "/"))
        else:
            continue
        for alias in node.names:
            found[alias.asname or alias.name] = (f"{target}.py", alias.name)
    return found


def _forwarders_in(tree: ast.AST, visible: dict[str, _Forwarder]) -> dict[str, _Forwarder]:
    """The forwarders one module defines, given those it can already see."""
    found: dict[str, _Forwarder] = {}
    attributes = _attributes(tree)
    for func in _functions(tree):
        params = [a.arg for a in func.args.args]
        offset = 1 if params and params[0] in ("self", "cls") else 0

        def index(node: ast.AST | None) -> int | None:
            if isinstance(node, ast.Name) and node.id in params:
                return params.index(node.id) - offset
            return None

        scope = _scope(func, attributes)
        direct = set(_contract_calls(func))
        for call in ast.walk(func):
            if not isinstance(call, ast.Call):
                continue
            if call in direct:
                fn = index(call.args[0]) if call.args else None
                if fn is None:
                    continue
                receiver = call.func.value  # type: ignore[attr-defined]
                name_arg = (
                    receiver.args[0] if isinstance(receiver, ast.Call) and receiver.args else None
                )
                found[func.name] = _Forwarder(
                    fn, _contract_of(receiver, scope), index(name_arg), index(receiver)
                )
                continue
            inner = visible.get(_callee(call) or "")
            if inner is None or len(call.args) <= inner.fn_index:
                continue
            fn = index(call.args[inner.fn_index])
            if fn is None:
                continue

            def arg(i: int | None) -> ast.AST | None:
                return call.args[i] if i is not None and i < len(call.args) else None

            contract = inner.contract or _literal(arg(inner.contract_index))
            if contract is None and arg(inner.receiver_index) is not None:
                contract = _contract_of(arg(inner.receiver_index), scope)  # type: ignore[arg-type]
            found[func.name] = _Forwarder(
                fn, contract, index(arg(inner.contract_index)), index(arg(inner.receiver_index))
            )
    return found


def _visible_forwarders(trees: dict[str, ast.AST]) -> dict[str, dict[str, _Forwarder]]:
    """Per module, the forwarders it defines or imports, found to a fixed point (a forwarder
    may call another)."""
    imports = {rel: _imports(rel, tree) for rel, tree in trees.items()}
    defined: dict[str, dict[str, _Forwarder]] = {rel: {} for rel in trees}

    def visible(rel: str) -> dict[str, _Forwarder]:
        seen = {
            name: defined[module][original]
            for name, (module, original) in imports[rel].items()
            if module in defined and original in defined[module]
        }
        return seen | defined[rel]

    while True:
        changed = False
        for rel, tree in trees.items():
            found = _forwarders_in(tree, visible(rel))
            if found != defined[rel]:
                defined[rel], changed = found, True
        if not changed:
            return {rel: visible(rel) for rel in trees}


def extract_call_sites(trees: dict[str, ast.AST]) -> list[CallSite]:
    """Every contract call site in ``trees`` (module path -> parsed source).

    A forwarder applies in the module that defines it and in modules importing it by name.
    """
    forwarders_of = _visible_forwarders(trees)
    sites: list[CallSite] = []
    for rel, tree in trees.items():
        forwarders = forwarders_of[rel]
        attributes = _attributes(tree)
        for func in _functions(tree):
            scope = _scope(func, attributes)
            forwarded_here = func.name in forwarders
            params = {a.arg for a in func.args.args}
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
                fw = forwarders.get(_callee(node) or "")
                if fw is None or len(node.args) <= fw.fn_index:
                    continue
                name = _literal(node.args[fw.fn_index])
                passed = node.args[fw.fn_index]
                if forwarded_here and isinstance(passed, ast.Name) and passed.id in params:
                    continue  # a forwarder handing its own parameter on
                args = node.args
                contract = fw.contract
                if contract is None and fw.contract_index is not None:
                    contract = _literal(args[fw.contract_index])
                if contract is None and fw.receiver_index is not None:
                    contract = _contract_of(args[fw.receiver_index], scope)
                where = f"{rel}:{node.lineno}"
                sites.append(CallSite(where, contract, name, _nargs(node, fw.fn_index + 1)))
    return sites


def _unique_contract(name: str, nargs: int | None) -> str | None:
    """The one artifact (ERC-20s counted once) with a function ``name`` of that arity."""
    found = {
        "TestUSDC" if artifact == "FABToken" else artifact
        for artifact, abi in OURS.items()
        for entry in entries(abi, "function").get(name, [])
        if nargs is None or len(entry["inputs"]) == nargs
    }
    return found.pop() if len(found) == 1 else None


def sdk_sources() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py"))


def used_signatures() -> tuple[dict[tuple[str, str], list[str]], list[str]]:
    """(contract, signature) -> call sites, and the call sites that could not be resolved."""
    used: dict[tuple[str, str], list[str]] = {}
    unresolved: list[str] = []
    trees = {str(p.relative_to(SRC)): ast.parse(p.read_text(), str(p)) for p in sdk_sources()}
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
            for e in entries(OURS[contract], "function").get(site.function, [])
            if site.nargs is None or len(e["inputs"]) == site.nargs
        ]
        if len(candidates) != 1:
            unresolved.append(f"{site.where}: {contract}.{site.function} with {site.nargs} args")
            continue
        used.setdefault((contract, signature_of(candidates[0])), []).append(site.where)
    return used, unresolved
