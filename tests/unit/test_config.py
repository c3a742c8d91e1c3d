import json

import pytest

from fabstir_sdk import ConfigError, ContractAddresses, SDKConfig

ADDR = {
    "job_marketplace": "0xD067719Ee4c514B5735d1aC0FfB46FECf2A9adA4",
    "node_registry": "0x8BC0Af4aAa2dfb99699B1A24bA85E507de10Fd22",
    "model_registry": "0x1a9d91521c85bD252Ac848806Ff5096bBb9ACDb2",
    "proof_system": "0xE8DCa89e1588bbbdc4F7D5F78263632B35401B31",
    "host_earnings": "0xE4F33e9e132E60fc3477509f99b9E1340b91Aee0",
    "fab_token": "0xC78949004B4EB6dEf2D66e49Cd81231472612D62",
    "usdc_token": "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
}


def test_base_sepolia_preset():
    config = SDKConfig.base_sepolia()
    assert config.chain_id == 84532
    assert config.contract_addresses.model_dump() == ADDR


def test_preset_overridable_field_by_field():
    config = SDKConfig.base_sepolia(
        rpc_url="http://127.0.0.1:9",
        contract_addresses={"usdc_token": ADDR["fab_token"]},
        tx_timeout=5,
    )
    assert config.rpc_url == "http://127.0.0.1:9"
    assert config.contract_addresses.usdc_token == ADDR["fab_token"]
    assert config.contract_addresses.job_marketplace == ADDR["job_marketplace"]
    assert config.tx_timeout == 5


def test_base_mainnet_needs_addresses():
    with pytest.raises(ConfigError, match="job_marketplace"):
        SDKConfig.base()
    config = SDKConfig.base(contract_addresses={k: v for k, v in ADDR.items() if k != "usdc_token"})
    assert config.chain_id == 8453
    assert config.contract_addresses.usdc_token == "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"


def test_addresses_are_checksummed_and_checked():
    lower = ContractAddresses(**{k: v.lower() for k, v in ADDR.items()})
    assert lower.job_marketplace == ADDR["job_marketplace"]
    bad = dict(ADDR, job_marketplace=ADDR["job_marketplace"][:-1] + "d")
    with pytest.raises(ConfigError, match=r"job_marketplace.*bad EIP-55 checksum"):
        ContractAddresses(**bad)
    with pytest.raises(ConfigError, match="rpc_url"):
        SDKConfig(contract_addresses=lower)


def test_manifest_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        SDKConfig.from_manifest(tmp_path / "missing.json", rpc_url="http://127.0.0.1:1")
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"chain_id": 31337, "contracts": ADDR}))
    assert SDKConfig.from_manifest(path, rpc_url="http://127.0.0.1:1").chain_id == 31337


def test_base_sepolia_manifest_says_where_each_address_comes_from():
    import re
    from datetime import date

    from fabstir_sdk._resources import contracts_path

    manifest = json.loads(contracts_path("deployments", "base-sepolia.json").read_text())
    assert set(manifest["sources"]) == set(manifest["contracts"]) == set(ADDR)
    for field, source in manifest["sources"].items():
        assert source["repo"].startswith("Fabstir/"), field
        assert source["file"] and source["note"], field
        assert re.fullmatch(r"[0-9a-f]{40}", source["commit"]), field
        assert date.fromisoformat(source["date"]) <= date(2026, 2, 26), field


def test_from_manifest_takes_the_rpc_url_from_the_manifest(tmp_path):
    path = tmp_path / "devnet.json"
    path.write_text(json.dumps({"chain_id": 31337, "contracts": ADDR, "rpc_url": "http://a:1"}))
    assert SDKConfig.from_manifest(path).rpc_url == "http://a:1"
    assert SDKConfig.from_manifest(path, rpc_url="http://b:2").rpc_url == "http://b:2"  # wins
    path.write_text(json.dumps({"chain_id": 31337, "contracts": ADDR}))
    with pytest.raises(ConfigError) as info:
        SDKConfig.from_manifest(path)
    assert str(info.value) == "manifest devnet.json names no RPC endpoint: pass rpc_url=..."
