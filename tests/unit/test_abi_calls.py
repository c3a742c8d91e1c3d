"""Contract.call keeps what it encoded: the same call again is the same immutable Call,
and arguments that only compare equal (True and 1) or cannot be hashed are encoded anew."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_abi.exceptions import EncodingTypeError

from fabstir_sdk.chain.abi import Contract

REGISTRY = "0x" + "22" * 20
HOST = "0x" + "33" * 20
MODEL = "0x" + "ab" * 32


def test_the_same_call_is_encoded_once():
    registry = Contract("NodeRegistry", REGISTRY)
    first = registry.call("getModelPricing", HOST, MODEL, HOST)
    again = registry.call("getModelPricing", HOST, MODEL, HOST)
    assert again is first
    assert first.data[4:] == encode(
        ["address", "bytes32", "address"], [HOST, bytes.fromhex(MODEL[2:]), HOST]
    )
    other = registry.call("getModelPricing", HOST, "0x" + "cd" * 32, HOST)
    assert other is not first and other.data != first.data


def test_equal_arguments_of_other_types_are_not_taken_for_each_other():
    usdc = Contract("TestUSDC", REGISTRY)
    one = usdc.call("approve", HOST, 1)
    with pytest.raises(EncodingTypeError):  # True == 1 and hash(True) == hash(1)
        usdc.call("approve", HOST, True)
    assert usdc.call("approve", HOST, 1) is one


def test_unhashable_arguments_are_encoded_each_time():
    registry = Contract("NodeRegistry", REGISTRY)
    first = registry.call("updateSupportedModels", [MODEL])
    again = registry.call("updateSupportedModels", [MODEL])
    assert again == first and again is not first
    assert first.data[4:] == encode(["bytes32[]"], [[bytes.fromhex(MODEL[2:])]])
