"""The committed contract artifacts match the sources, and our ABIs are upstream-compatible.

Compatibility target: the client ABIs of the upstream deployment in shared/upstream-abi (one
folder above the repository root). Every function and event there must exist in our matching
contract with the same signature (selector / topic), the same outputs, the same mutability and
the same event parameter names and indexing, except the upstream-only plumbing listed below.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from contract_helpers import UPSTREAM_ABI_DIR

REPO_ROOT = Path(__file__).resolve().parents[2]
ABI_DIR = REPO_ROOT / "contracts" / "abi"
UPSTREAM_DIR = UPSTREAM_ABI_DIR
COMPILE_SCRIPT = REPO_ROOT / "scripts" / "compile_contracts.mjs"

# upstream file -> our artifact
CONTRACT_MAP = {
    "JobMarketplaceWithModelsUpgradeable.json": "JobMarketplace",
    "NodeRegistryWithModelsUpgradeable.json": "NodeRegistry",
    "ModelRegistryUpgradeable.json": "ModelRegistry",
    "ProofSystemUpgradeable.json": "ProofSystem",
    "HostEarningsUpgradeable.json": "HostEarnings",
    "ERC20.json": ("TestUSDC", "FABToken"),
}

# UUPS proxy plumbing: our contracts are plain deployments with constructors.
UPGRADE_ONLY = {
    "UPGRADE_INTERFACE_VERSION",
    "proxiableUUID",
    "upgradeToAndCall",
    "initialize",
    "Upgraded",
    "Initialized",
}
EXCLUDED = UPGRADE_ONLY

ALL_ARTIFACTS = [
    "TestUSDC",
    "FABToken",
    "ModelRegistry",
    "NodeRegistry",
    "ProofSystem",
    "HostEarnings",
    "JobMarketplace",
]


def _type(param: dict[str, Any]) -> str:
    kind = param["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(_type(c) for c in param["components"]) + ")" + kind[len("tuple") :]
    return kind


def _signature(entry: dict[str, Any]) -> str:
    return f"{entry['name']}({','.join(_type(p) for p in entry['inputs'])})"


def _load_abi(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    return data["abi"] if isinstance(data, dict) else data


def _ours(name: str) -> list[dict[str, Any]]:
    return _load_abi(ABI_DIR / f"{name}.json")


def _by_signature(abi: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {_signature(e): e for e in abi if e["type"] == kind}


def _run_compile(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("node") is None:
        pytest.fail("node is not installed: the contract artifacts cannot be checked")
    if not (REPO_ROOT / "node_modules" / "solc").is_dir():
        pytest.fail("node_modules/solc is missing: run `npm ci`")
    return subprocess.run(
        ["node", str(COMPILE_SCRIPT), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _upstream_pairs() -> list[tuple[str, str]]:
    if not UPSTREAM_DIR.is_dir():
        return []
    pairs = []
    for upstream, ours in CONTRACT_MAP.items():
        for name in ours if isinstance(ours, tuple) else (ours,):
            pairs.append((upstream, name))
    return pairs


needs_upstream = pytest.mark.skipif(
    not UPSTREAM_DIR.is_dir(),
    reason=f"upstream ABIs not found at {UPSTREAM_DIR} (shared/ is expected beside the repository)",
)


# ----------------------------------------------------------------------------- artifacts


def test_artifacts_match_sources() -> None:
    result = _run_compile("--check")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "match the sources" in result.stdout


def test_check_names_tampered_missing_and_unexpected_artifacts(tmp_path: Path) -> None:
    out = tmp_path / "abi"
    shutil.copytree(ABI_DIR, out)
    marketplace = out / "JobMarketplace.json"
    data = json.loads(marketplace.read_text())
    data["bytecode"] = data["bytecode"][:-2] + (
        "00" if not data["bytecode"].endswith("00") else "01"
    )
    marketplace.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (out / "ProofSystem.json").unlink()
    (out / "Stray.json").write_text("{}\n")

    result = _run_compile("--check", "--out", str(out))

    assert result.returncode != 0
    assert "stale:" in result.stderr and "JobMarketplace.json" in result.stderr
    assert "missing:" in result.stderr and "ProofSystem.json" in result.stderr
    assert "unexpected:" in result.stderr and "Stray.json" in result.stderr
    untouched = ("HostEarnings.json", "NodeRegistry.json", "ReentrantDepositor.json")
    assert not any(name in result.stderr for name in untouched)


@pytest.mark.parametrize(
    "name", [*ALL_ARTIFACTS, "test/ReentrantDepositor", "test/JanuaryMarketplace"]
)
def test_artifact_format(name: str) -> None:
    path = ABI_DIR / f"{name}.json"
    text = path.read_text()
    data = json.loads(text)
    assert set(data) == {"abi", "bytecode", "contractName"}
    assert data["contractName"] == name.split("/")[-1]
    assert data["bytecode"].startswith("0x") and len(data["bytecode"]) > 2
    int(data["bytecode"], 16)
    assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_deployed_code_fits_the_contract_size_limit() -> None:
    # EIP-170 limits runtime code to 24,576 bytes. The runtime code is part of the creation code,
    # so a creation code below the limit proves it.
    for name in ALL_ARTIFACTS:
        bytecode = json.loads((ABI_DIR / f"{name}.json").read_text())["bytecode"]
        assert (len(bytecode) - 2) // 2 < 24_576, name


def test_test_helpers_are_kept_apart() -> None:
    for helper in ("ReentrantDepositor", "JanuaryMarketplace"):
        assert not (ABI_DIR / f"{helper}.json").exists()
        assert (ABI_DIR / "test" / f"{helper}.json").is_file()


# ------------------------------------------------------------------------- compatibility


@needs_upstream
@pytest.mark.parametrize(("upstream", "ours"), _upstream_pairs())
def test_functions_match_upstream(upstream: str, ours: str) -> None:
    theirs = _by_signature(_load_abi(UPSTREAM_DIR / upstream), "function")
    mine = _by_signature(_ours(ours), "function")
    problems = []
    for sig, entry in sorted(theirs.items()):
        if entry["name"] in EXCLUDED:
            continue
        if sig not in mine:
            problems.append(f"missing {sig}")
            continue
        got = mine[sig]
        if [_type(o) for o in got["outputs"]] != [_type(o) for o in entry["outputs"]]:
            problems.append(f"{sig}: outputs {got['outputs']} != {entry['outputs']}")
        if got["stateMutability"] != entry["stateMutability"]:
            problems.append(f"{sig}: {got['stateMutability']} != {entry['stateMutability']}")
        for mine_out, their_out in zip(got["outputs"], entry["outputs"], strict=False):
            if their_out["name"] and mine_out["name"] != their_out["name"]:
                problems.append(
                    f"{sig}: output named {mine_out['name']!r}, upstream {their_out['name']!r}"
                )
    assert not problems, "\n".join(problems)


@needs_upstream
@pytest.mark.parametrize(("upstream", "ours"), _upstream_pairs())
def test_events_match_upstream(upstream: str, ours: str) -> None:
    theirs = _by_signature(_load_abi(UPSTREAM_DIR / upstream), "event")
    mine = _by_signature(_ours(ours), "event")
    problems = []
    for sig, entry in sorted(theirs.items()):
        if entry["name"] in EXCLUDED:
            continue
        if sig not in mine:
            problems.append(f"missing event {sig}")
            continue
        layout = [(p["name"], p["indexed"]) for p in mine[sig]["inputs"]]
        expected = [(p["name"], p["indexed"]) for p in entry["inputs"]]
        if layout != expected:
            problems.append(f"{sig}: (name, indexed) {layout} != {expected}")
    assert not problems, "\n".join(problems)


@needs_upstream
def test_exclusions_only_name_upstream_entries() -> None:
    # Guards against a typo in the exclusion list silently hiding a real entry.
    names = set()
    for upstream in CONTRACT_MAP:
        names |= {e.get("name") for e in _load_abi(UPSTREAM_DIR / upstream)}
    assert names >= EXCLUDED


@needs_upstream
def test_payable_functions_match_upstream() -> None:
    theirs = _load_abi(UPSTREAM_DIR / "JobMarketplaceWithModelsUpgradeable.json")
    payable = sorted(_signature(e) for e in theirs if e.get("stateMutability") == "payable")
    payable = [s for s in payable if not s.startswith("upgradeToAndCall")]
    mine = sorted(
        _signature(e) for e in _ours("JobMarketplace") if e.get("stateMutability") == "payable"
    )
    assert (
        mine
        == payable
        == [
            "createSessionJobForModel(address,bytes32,uint256,uint256,uint256,uint256)",
            "depositNative()",
        ]
    )


# ----------------------------------------------------------------- explicit shape checks


SESSION_JOB_FIELDS = [
    ("id", "uint256"),
    ("depositor", "address"),
    ("host", "address"),
    ("paymentToken", "address"),
    ("deposit", "uint256"),
    ("pricePerToken", "uint256"),
    ("tokensUsed", "uint256"),
    ("maxDuration", "uint256"),
    ("startTime", "uint256"),
    ("lastProofTime", "uint256"),
    ("proofInterval", "uint256"),
    ("proofTimeoutWindow", "uint256"),
    ("status", "uint8"),
    ("withdrawnByHost", "uint256"),
    ("refundedToUser", "uint256"),
    ("conversationCID", "string"),
    ("lastProofHash", "bytes32"),
    ("lastProofCID", "string"),
]

NODE_FIELDS = [
    ("operator", "address"),
    ("stakedAmount", "uint256"),
    ("active", "bool"),
    ("metadata", "string"),
    ("apiUrl", "string"),
    ("minPricePerTokenNative", "uint256"),
    ("minPricePerTokenStable", "uint256"),
]


def _function(abi: list[dict[str, Any]], signature: str) -> dict[str, Any]:
    found = _by_signature(abi, "function")
    assert signature in found, f"{signature} not in ABI"
    return found[signature]


def test_session_jobs_getter_returns_the_18_fields_in_order() -> None:
    entry = _function(_ours("JobMarketplace"), "sessionJobs(uint256)")
    assert [(o["name"], o["type"]) for o in entry["outputs"]] == SESSION_JOB_FIELDS


def test_nodes_getter_returns_7_fields() -> None:
    entry = _function(_ours("NodeRegistry"), "nodes(address)")
    assert [(o["name"], o["type"]) for o in entry["outputs"]] == NODE_FIELDS


def test_get_node_full_info_returns_8_values() -> None:
    entry = _function(_ours("NodeRegistry"), "getNodeFullInfo(address)")
    assert [o["type"] for o in entry["outputs"]] == [
        "address",
        "uint256",
        "bool",
        "string",
        "string",
        "bytes32[]",
        "uint256",
        "uint256",
    ]


def test_get_model_returns_the_model_tuple() -> None:
    entry = _function(_ours("ModelRegistry"), "getModel(bytes32)")
    (out,) = entry["outputs"]
    assert _type(out) == "(string,string,bytes32,uint256,bool,uint256)"
    assert [c["name"] for c in out["components"]] == [
        "huggingfaceRepo",
        "fileName",
        "sha256Hash",
        "approvalTier",
        "active",
        "timestamp",
    ]


@pytest.mark.parametrize(
    ("contract", "signature"),
    [
        ("TestUSDC", "constructor()"),
        ("FABToken", "constructor()"),
        ("ModelRegistry", "constructor(address)"),
        ("NodeRegistry", "constructor(address,address)"),
        ("ProofSystem", "constructor()"),
        ("HostEarnings", "constructor()"),
        ("JobMarketplace", "constructor(address,address,uint256,uint256)"),
        ("test/ReentrantDepositor", "constructor(address)"),
        ("test/JanuaryMarketplace", "constructor(address,address,address)"),
    ],
)
def test_constructor_signatures(contract: str, signature: str) -> None:
    abi = _load_abi(ABI_DIR / f"{contract}.json")
    ctors = [e for e in abi if e["type"] == "constructor"]
    inputs = ctors[0]["inputs"] if ctors else []
    assert f"constructor({','.join(_type(p) for p in inputs)})" == signature


def test_no_upgrade_plumbing() -> None:
    for name in ALL_ARTIFACTS:
        names = {e.get("name") for e in _ours(name)}
        assert not names & {"upgradeToAndCall", "proxiableUUID", "initialize"}, name


def test_delegate_custom_errors_exist() -> None:
    errors = {_signature(e) for e in _ours("JobMarketplace") if e["type"] == "error"}
    assert {"NotDelegate()", "ERC20Only()", "BadDelegateParams()"} <= errors
