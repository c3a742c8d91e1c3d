"""Which JSON-RPC errors mean "this node has no such method" (for eth_simulateV1)."""

from __future__ import annotations

import pytest

from fabstir_sdk.errors import RpcFailure
from fabstir_sdk.managers.cost import unsupported_method


@pytest.mark.parametrize(
    ("error", "missing"),
    [
        ({"code": -32601, "message": "Method not found"}, True),
        ({"code": -32601, "message": ""}, True),
        # geth before 1.14.9 and Infura
        (
            {
                "code": -32601,
                "message": "the method eth_simulateV1 does not exist/is not available",
            },
            True,
        ),
        # providers that answer with another code
        ({"code": -32600, "message": "Unsupported method: eth_simulateV1"}, True),
        ({"code": -32603, "message": "method eth_simulateV1 not whitelisted"}, True),
        ({"code": -32000, "message": "execution reverted"}, False),
        ({"code": -32602, "message": "invalid argument 0: json: cannot unmarshal"}, False),
        ({"code": 3, "message": "execution reverted: Insufficient balance"}, False),
    ],
)
def test_unsupported_method(error: dict, missing: bool) -> None:
    assert unsupported_method(RpcFailure("eth_simulateV1", error)) is missing
