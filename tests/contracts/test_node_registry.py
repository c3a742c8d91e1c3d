"""NodeRegistry against anvil: registration and stake, model lists, pricing, slashing, repair."""

from __future__ import annotations

import json

import pytest
from contract_helpers import (
    DEPLOYER,
    FAB,
    HOST,
    HOST2,
    HOST_NATIVE_PRICE,
    HOST_STABLE_PRICE,
    MIN_STAKE,
    OTHER,
    USER,
    ZERO,
    Chain,
    register_host,
)

DAY = 86_400
NATIVE_MIN, NATIVE_MAX = 227_273, 22_727_272_727_273_000
STABLE_MIN, STABLE_MAX = 1, 100_000_000
METADATA = json.dumps({"publicKey": "02" + "11" * 32})


def _register(chain: Chain, who: int = HOST, **change):
    args = {
        "metadata": METADATA,
        "url": "http://127.0.0.1:8080",
        "models": [chain.model_id(0), chain.model_id(1)],
        "native": HOST_NATIVE_PRICE,
        "stable": HOST_STABLE_PRICE,
    } | change
    return chain.nodes.registerNode(
        args["metadata"], args["url"], args["models"], args["native"], args["stable"]
    )


def _approve_stake(chain: Chain, who: int, amount: int = MIN_STAKE) -> None:
    chain.send(chain.c["FABToken"].functions.approve(chain.c["NodeRegistry"].address, amount), who)


def test_registration_pulls_the_stake_and_indexes_the_node(chain: Chain) -> None:
    registry = chain.c["NodeRegistry"].address
    host = chain.accounts[HOST]
    before = chain.fab(HOST)
    _approve_stake(chain, HOST)
    receipt = chain.send(_register(chain), HOST)

    assert dict(chain.event(receipt, "NodeRegistry", "NodeRegistered")) == {
        "operator": host,
        "stakedAmount": MIN_STAKE,
        "metadata": METADATA,
        "models": [chain.model_id(0), chain.model_id(1)],
    }
    assert chain.fab(HOST) == before - MIN_STAKE
    assert chain.fab(registry) == MIN_STAKE
    assert chain.nodes.nodes(host).call() == [
        host,
        MIN_STAKE,
        True,
        METADATA,
        "http://127.0.0.1:8080",
        HOST_NATIVE_PRICE,
        HOST_STABLE_PRICE,
    ]
    assert chain.nodes.getNodeFullInfo(host).call() == [
        host,
        MIN_STAKE,
        True,
        METADATA,
        "http://127.0.0.1:8080",
        [chain.model_id(0), chain.model_id(1)],
        HOST_NATIVE_PRICE,
        HOST_STABLE_PRICE,
    ]
    assert chain.nodes.getAllActiveNodes().call() == [host]
    assert chain.nodes.activeNodesList(0).call() == host
    assert chain.nodes.activeNodesIndex(host).call() == 0
    assert chain.nodes.getNodesForModel(chain.model_id(1)).call() == [host]
    assert chain.nodes.modelToNodes(chain.model_id(0), 0).call() == host
    assert chain.nodes.getNodesForModel(chain.model_id(2)).call() == []
    assert chain.nodes.nodeSupportsModel(host, chain.model_id(1)).call() is True
    assert chain.nodes.nodeSupportsModel(host, chain.model_id(2)).call() is False
    assert chain.nodes.isActiveNode(host).call() is True
    assert chain.nodes.getNodeApiUrl(host).call() == "http://127.0.0.1:8080"
    assert chain.nodes.getNodeModels(host).call() == [chain.model_id(0), chain.model_id(1)]


REGISTRATION_REVERTS = [
    ({"metadata": ""}, "Empty metadata"),
    ({"url": ""}, "Empty API URL"),
    ({"models": []}, "No models"),
    ({"models": "unknown"}, "Model not approved"),
    ({"models": "duplicate"}, "Duplicate model"),
    ({"native": NATIVE_MIN - 1}, "Native price out of range"),
    ({"native": NATIVE_MAX + 1}, "Native price out of range"),
    ({"stable": STABLE_MIN - 1}, "Stable price out of range"),
    ({"stable": STABLE_MAX + 1}, "Stable price out of range"),
]


@pytest.mark.parametrize(("change", "reason"), REGISTRATION_REVERTS)
def test_registration_reverts(chain: Chain, change: dict, reason: str) -> None:
    if change.get("models") == "unknown":
        change["models"] = [chain.model_id(0), b"\x42" * 32]
    elif change.get("models") == "duplicate":
        change["models"] = [chain.model_id(0), chain.model_id(1), chain.model_id(0)]
    _approve_stake(chain, HOST)
    chain.reverts(_register(chain, **change), HOST, reason)


def test_registration_boundaries_and_preconditions(chain: Chain) -> None:
    chain.reverts(_register(chain), HOST, "ERC20InsufficientAllowance(address,uint256,uint256)")
    _approve_stake(chain, HOST)
    chain.send(_register(chain, native=NATIVE_MIN, stable=STABLE_MAX), HOST)
    _approve_stake(chain, HOST)
    chain.reverts(_register(chain), HOST, "Already registered")
    _approve_stake(chain, HOST2)
    chain.send(_register(chain, native=NATIVE_MAX, stable=STABLE_MIN), HOST2)
    chain.send(chain.models.deactivateModel(chain.model_id(2)), DEPLOYER)
    _approve_stake(chain, OTHER)
    chain.reverts(_register(chain, models=[chain.model_id(2)]), OTHER, "Model not approved")


def test_unregister_returns_the_whole_stake(chain: Chain) -> None:
    register_host(chain, HOST)
    register_host(chain, HOST2, models=(0,))
    _approve_stake(chain, HOST, 500 * FAB)
    receipt = chain.send(chain.nodes.stake(500 * FAB), HOST)
    assert dict(chain.event(receipt, "NodeRegistry", "StakeAdded")) == {
        "operator": chain.accounts[HOST],
        "amount": 500 * FAB,
        "totalStake": MIN_STAKE + 500 * FAB,
    }
    chain.reverts(chain.nodes.stake(0), HOST, "Amount must be positive")
    chain.reverts(chain.nodes.stake(FAB), OTHER, "Not registered")
    before = chain.fab(HOST)

    receipt = chain.send(chain.nodes.unregisterNode(), HOST)

    assert dict(chain.event(receipt, "NodeRegistry", "NodeUnregistered")) == {
        "operator": chain.accounts[HOST],
        "returnedAmount": MIN_STAKE + 500 * FAB,
    }
    assert chain.fab(HOST) == before + MIN_STAKE + 500 * FAB
    host2 = chain.accounts[HOST2]
    assert chain.nodes.getAllActiveNodes().call() == [host2]
    assert chain.nodes.activeNodesIndex(host2).call() == 0
    assert chain.nodes.getNodesForModel(chain.model_id(0)).call() == [host2]
    assert chain.nodes.getNodesForModel(chain.model_id(1)).call() == []
    assert chain.nodes.isActiveNode(chain.accounts[HOST]).call() is False
    assert chain.nodes.nodes(chain.accounts[HOST]).call()[0] == ZERO
    chain.reverts(chain.nodes.unregisterNode(), HOST, "Not registered")


def test_updates(chain: Chain) -> None:
    register_host(chain, HOST)
    register_host(chain, HOST2, models=(1,))
    host = chain.accounts[HOST]
    receipt = chain.send(chain.nodes.updateMetadata('{"publicKey":"03"}'), HOST)
    assert dict(chain.event(receipt, "NodeRegistry", "MetadataUpdated")) == {
        "operator": host,
        "newMetadata": '{"publicKey":"03"}',
    }
    receipt = chain.send(chain.nodes.updateApiUrl("https://host.example"), HOST)
    assert (
        chain.event(receipt, "NodeRegistry", "ApiUrlUpdated")["newApiUrl"] == "https://host.example"
    )
    assert chain.nodes.getNodeApiUrl(host).call() == "https://host.example"
    chain.reverts(chain.nodes.updateMetadata(""), HOST, "Empty metadata")
    chain.reverts(chain.nodes.updateApiUrl(""), HOST, "Empty API URL")
    chain.reverts(chain.nodes.updateApiUrl("x"), OTHER, "Not registered")

    new_models = [chain.model_id(2), chain.model_id(1)]
    receipt = chain.send(chain.nodes.updateSupportedModels(new_models), HOST)
    assert chain.event(receipt, "NodeRegistry", "ModelsUpdated")["newModels"] == new_models
    assert chain.nodes.getNodeModels(host).call() == new_models
    assert chain.nodes.getNodesForModel(chain.model_id(0)).call() == []
    assert sorted(chain.nodes.getNodesForModel(chain.model_id(1)).call()) == sorted(
        [host, chain.accounts[HOST2]]
    )
    assert chain.nodes.getNodesForModel(chain.model_id(2)).call() == [host]
    chain.reverts(chain.nodes.updateSupportedModels([]), HOST, "No models")
    chain.reverts(
        chain.nodes.updateSupportedModels([chain.model_id(2), chain.model_id(2)]),
        HOST,
        "Duplicate model",
    )


def test_pricing_fallback_chain(chain: Chain) -> None:
    register_host(chain, HOST)
    host = chain.accounts[HOST]
    usdc = chain.c["TestUSDC"].address
    fab = chain.c["FABToken"].address
    m0, m1 = chain.model_id(0), chain.model_id(1)
    price = chain.nodes.getModelPricing

    assert price(host, m0, ZERO).call() == HOST_NATIVE_PRICE
    assert price(host, m0, usdc).call() == HOST_STABLE_PRICE
    assert chain.nodes.getNodePricing(host, usdc).call() == HOST_STABLE_PRICE

    receipt = chain.send(chain.nodes.setTokenPricing(fab, 777), HOST)
    assert dict(chain.event(receipt, "NodeRegistry", "TokenPricingUpdated")) == {
        "operator": host,
        "token": fab,
        "price": 777,
    }
    assert chain.nodes.customTokenPricing(host, fab).call() == 777
    assert price(host, m0, fab).call() == 777
    assert price(host, m0, usdc).call() == HOST_STABLE_PRICE

    chain.send(chain.nodes.setModelPricing(m0, 3 * 10**12, 4000), HOST)
    assert chain.nodes.modelPricingNative(host, m0).call() == 3 * 10**12
    assert chain.nodes.modelPricingStable(host, m0).call() == 4000
    assert price(host, m0, ZERO).call() == 3 * 10**12
    assert price(host, m0, usdc).call() == 4000
    assert price(host, m0, fab).call() == 4000

    receipt = chain.send(chain.nodes.setModelTokenPricing(m0, usdc, 5000), HOST)
    assert dict(chain.event(receipt, "NodeRegistry", "ModelTokenPricingUpdated")) == {
        "operator": host,
        "modelId": m0,
        "token": usdc,
        "price": 5000,
    }
    assert chain.nodes.modelTokenPricing(host, m0, usdc).call() == 5000
    assert price(host, m0, usdc).call() == 5000
    assert price(host, m1, usdc).call() == HOST_STABLE_PRICE
    assert chain.nodes.getHostModelPrices(host, usdc).call() == [
        [m0, m1],
        [5000, HOST_STABLE_PRICE],
    ]
    assert chain.nodes.getHostModelPrices(host, ZERO).call() == [
        [m0, m1],
        [3 * 10**12, HOST_NATIVE_PRICE],
    ]

    chain.send(chain.nodes.clearModelTokenPricing(m0, usdc), HOST)
    assert price(host, m0, usdc).call() == 4000
    chain.send(chain.nodes.setModelPricing(m0, 0, 0), HOST)
    assert price(host, m0, usdc).call() == HOST_STABLE_PRICE
    assert price(host, m0, ZERO).call() == HOST_NATIVE_PRICE

    chain.send(chain.nodes.updatePricingNative(2 * 10**12), HOST)
    receipt = chain.send(chain.nodes.updatePricingStable(3000), HOST)
    assert dict(chain.event(receipt, "NodeRegistry", "PricingUpdated")) == {
        "operator": host,
        "minPricePerTokenNative": 2 * 10**12,
        "minPricePerTokenStable": 3000,
    }
    assert price(host, m1, ZERO).call() == 2 * 10**12
    assert price(host, m1, usdc).call() == 3000


def test_pricing_reverts(chain: Chain) -> None:
    register_host(chain, HOST)
    usdc = chain.c["TestUSDC"].address
    m0, m2 = chain.model_id(0), chain.model_id(2)
    chain.reverts(chain.nodes.setModelTokenPricing(m2, usdc, 10), HOST, "Model not supported")
    chain.reverts(chain.nodes.setModelTokenPricing(m0, usdc, 0), HOST, "Stable price out of range")
    chain.reverts(
        chain.nodes.setModelTokenPricing(m0, usdc, STABLE_MAX + 1),
        HOST,
        "Stable price out of range",
    )
    chain.reverts(
        chain.nodes.setModelTokenPricing(m0, ZERO, NATIVE_MIN - 1),
        HOST,
        "Native price out of range",
    )
    chain.reverts(chain.nodes.setModelTokenPricing(m0, usdc, 10), OTHER, "Not registered")
    chain.reverts(chain.nodes.setTokenPricing(ZERO, 10), HOST, "Use updatePricingNative")
    chain.reverts(
        chain.nodes.setTokenPricing(usdc, STABLE_MAX + 1), HOST, "Stable price out of range"
    )
    chain.reverts(chain.nodes.setModelPricing(m2, 0, 0), HOST, "Model not supported")
    chain.reverts(
        chain.nodes.updatePricingNative(NATIVE_MAX + 1), HOST, "Native price out of range"
    )
    chain.reverts(chain.nodes.updatePricingStable(0), HOST, "Stable price out of range")


def test_price_overrides_do_not_survive_re_registration(chain: Chain) -> None:
    register_host(chain, HOST)
    host, usdc, m0 = chain.accounts[HOST], chain.c["TestUSDC"].address, chain.model_id(0)
    chain.send(chain.nodes.setModelTokenPricing(m0, usdc, 9000), HOST)
    chain.send(chain.nodes.setTokenPricing(usdc, 8000), HOST)
    chain.send(chain.nodes.unregisterNode(), HOST)
    assert chain.nodes.modelTokenPricing(host, m0, usdc).call() == 0
    register_host(chain, HOST)
    assert chain.nodes.modelTokenPricing(host, m0, usdc).call() == 0
    assert chain.nodes.customTokenPricing(host, usdc).call() == 0
    assert chain.nodes.getModelPricing(host, m0, usdc).call() == HOST_STABLE_PRICE


# ====================================================================== slashing


def test_slashing(chain: Chain) -> None:
    register_host(chain, HOST)
    host, treasury = chain.accounts[HOST], chain.accounts[DEPLOYER]
    assert chain.nodes.slashingAuthority().call() == treasury
    assert chain.nodes.treasury().call() == treasury
    chain.reverts(chain.nodes.slashStake(host, FAB, "ev", "r"), OTHER, "Not slashing authority")
    chain.reverts(
        chain.nodes.slashStake(host, MIN_STAKE // 2 + 1, "ev", "r"), DEPLOYER, "Exceeds max slash"
    )
    chain.reverts(chain.nodes.slashStake(host, 0, "ev", "r"), DEPLOYER, "Amount must be positive")
    chain.reverts(chain.nodes.slashStake(host, FAB, "", "r"), DEPLOYER, "Evidence required")
    chain.reverts(chain.nodes.slashStake(host, FAB, "ev", ""), DEPLOYER, "Reason required")
    chain.reverts(
        chain.nodes.slashStake(chain.accounts[OTHER], FAB, "ev", "r"),
        DEPLOYER,
        "Host not registered",
    )
    before = chain.fab(DEPLOYER)

    receipt = chain.send(
        chain.nodes.slashStake(host, MIN_STAKE // 2, "bafy-evidence", "cheated"), DEPLOYER
    )

    at = chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert dict(chain.event(receipt, "NodeRegistry", "SlashExecuted")) == {
        "host": host,
        "amount": 500 * FAB,
        "remainingStake": 500 * FAB,
        "evidenceCID": "bafy-evidence",
        "reason": "cheated",
        "executor": treasury,
        "timestamp": at,
    }
    assert chain.fab(DEPLOYER) == before + 500 * FAB
    assert chain.nodes.nodes(host).call()[1] == 500 * FAB
    assert chain.nodes.lastSlashTime(host).call() == at
    assert chain.nodes.isActiveNode(host).call() is True

    chain.set_next_timestamp(at + DAY - 1)
    chain.reverts(chain.nodes.slashStake(host, FAB, "ev", "r"), DEPLOYER, "Slash cooldown active")
    chain.set_next_timestamp(at + DAY)
    chain.send(chain.nodes.slashStake(host, 250 * FAB, "ev", "r"), DEPLOYER)
    assert chain.nodes.nodes(host).call()[1] == 250 * FAB


def test_slashing_below_the_floor_unregisters_and_returns_the_rest(chain: Chain) -> None:
    register_host(chain, HOST)
    host = chain.accounts[HOST]
    chain.send(chain.nodes.slashStake(host, 500 * FAB, "ev", "r1"), DEPLOYER)
    chain.advance(DAY)
    chain.send(chain.nodes.slashStake(host, 250 * FAB, "ev", "r2"), DEPLOYER)
    chain.advance(DAY)
    chain.send(chain.nodes.slashStake(host, 125 * FAB, "ev", "r2"), DEPLOYER)
    chain.advance(DAY)
    assert chain.nodes.isActiveNode(host).call() is True  # 125 FAB is still above the floor
    host_before, treasury_before = chain.fab(HOST), chain.fab(DEPLOYER)
    slash = 25 * FAB + 1  # leaves 99.999... FAB, below MIN_STAKE_AFTER_SLASH (100 FAB)

    receipt = chain.send(chain.nodes.slashStake(host, slash, "ev", "r3"), DEPLOYER)

    remaining = 125 * FAB - slash
    assert dict(chain.event(receipt, "NodeRegistry", "HostAutoUnregistered")) == {
        "host": host,
        "slashedAmount": slash,
        "returnedAmount": remaining,
        "reason": "r3",
    }
    assert chain.fab(HOST) == host_before + remaining
    assert chain.fab(DEPLOYER) == treasury_before + slash
    assert chain.fab(chain.c["NodeRegistry"].address) == 0
    assert chain.nodes.isActiveNode(host).call() is False
    assert chain.nodes.getAllActiveNodes().call() == []
    assert chain.nodes.getNodesForModel(chain.model_id(0)).call() == []


def test_slashing_administration(chain: Chain) -> None:
    chain.reverts(
        chain.nodes.initializeSlashing(chain.accounts[OTHER]),
        DEPLOYER,
        "Slashing already initialized",
    )
    chain.reverts(
        chain.nodes.setSlashingAuthority(chain.accounts[OTHER]),
        OTHER,
        "OwnableUnauthorizedAccount(address)",
    )
    receipt = chain.send(chain.nodes.setSlashingAuthority(chain.accounts[OTHER]), DEPLOYER)
    assert dict(chain.event(receipt, "NodeRegistry", "SlashingAuthorityUpdated")) == {
        "previousAuthority": chain.accounts[DEPLOYER],
        "newAuthority": chain.accounts[OTHER],
    }
    receipt = chain.send(chain.nodes.setTreasury(chain.accounts[USER]), DEPLOYER)
    assert (
        chain.event(receipt, "NodeRegistry", "TreasuryUpdated")["newTreasury"]
        == chain.accounts[USER]
    )
    chain.reverts(chain.nodes.setTreasury(ZERO), DEPLOYER, "Invalid treasury")
    chain.reverts(chain.nodes.setSlashingAuthority(ZERO), DEPLOYER, "Invalid authority")
    register_host(chain, HOST)
    before = chain.fab(USER)
    chain.send(chain.nodes.slashStake(chain.accounts[HOST], 10 * FAB, "ev", "r"), OTHER)
    assert chain.fab(USER) == before + 10 * FAB


def test_slashing_needs_initialization(chain: Chain) -> None:
    fresh = chain.deploy(
        "NodeRegistry", chain.c["FABToken"].address, chain.c["ModelRegistry"].address
    ).functions
    assert fresh.slashingAuthority().call() == ZERO
    chain.reverts(
        fresh.slashStake(chain.accounts[HOST], 1, "e", "r"), DEPLOYER, "Not slashing authority"
    )
    chain.reverts(fresh.initializeSlashing(ZERO), DEPLOYER, "Invalid treasury")
    chain.reverts(
        fresh.initializeSlashing(chain.accounts[OTHER]),
        OTHER,
        "OwnableUnauthorizedAccount(address)",
    )


# ================================================================== owner repairs


def test_repair_corrupt_node_removes_it_and_returns_the_stake(chain: Chain) -> None:
    register_host(chain, HOST)
    register_host(chain, HOST2)
    host = chain.accounts[HOST]
    before = chain.fab(HOST)
    chain.reverts(chain.nodes.repairCorruptNode(host), OTHER, "OwnableUnauthorizedAccount(address)")
    chain.reverts(chain.nodes.repairCorruptNode(chain.accounts[OTHER]), DEPLOYER, "Node not found")

    receipt = chain.send(chain.nodes.repairCorruptNode(host), DEPLOYER)

    assert dict(chain.event(receipt, "NodeRegistry", "CorruptNodeRepaired")) == {
        "operator": host,
        "stakeReturned": MIN_STAKE,
    }
    assert chain.fab(HOST) == before + MIN_STAKE
    assert chain.nodes.getAllActiveNodes().call() == [chain.accounts[HOST2]]
    assert chain.nodes.activeNodesIndex(chain.accounts[HOST2]).call() == 0
    assert chain.nodes.getNodesForModel(chain.model_id(0)).call() == [chain.accounts[HOST2]]
    assert chain.nodes.isActiveNode(host).call() is False


def test_update_model_registry(chain: Chain) -> None:
    other = chain.deploy("ModelRegistry", chain.c["FABToken"].address)
    chain.reverts(
        chain.nodes.updateModelRegistry(other.address), OTHER, "OwnableUnauthorizedAccount(address)"
    )
    chain.reverts(chain.nodes.updateModelRegistry(ZERO), DEPLOYER, "Invalid model registry")
    receipt = chain.send(chain.nodes.updateModelRegistry(other.address), DEPLOYER)
    assert (
        chain.event(receipt, "NodeRegistry", "ModelRegistryUpdated")["newRegistry"] == other.address
    )
    assert chain.nodes.modelRegistry().call() == other.address
    _approve_stake(chain, HOST)
    chain.reverts(_register(chain), HOST, "Model not approved")  # the new registry is empty


def test_constants(chain: Chain) -> None:
    n = chain.nodes
    values = [
        n.MIN_STAKE(),
        n.PRICE_PRECISION(),
        n.MIN_PRICE_PER_TOKEN_NATIVE(),
        n.MAX_PRICE_PER_TOKEN_NATIVE(),
        n.MIN_PRICE_PER_TOKEN_STABLE(),
        n.MAX_PRICE_PER_TOKEN_STABLE(),
        n.MAX_SLASH_PERCENTAGE(),
        n.MIN_STAKE_AFTER_SLASH(),
        n.SLASH_COOLDOWN(),
    ]
    assert [v.call() for v in values] == [
        MIN_STAKE,
        1000,
        NATIVE_MIN,
        NATIVE_MAX,
        STABLE_MIN,
        STABLE_MAX,
        50,
        100 * FAB,
        DAY,
    ]
    assert n.fabToken().call() == chain.c["FABToken"].address
