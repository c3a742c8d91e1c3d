"""devnet/_deploy.py ``deploy()`` against a scripted node (MockTransport, no anvil): turning
automine back on must not hide why the deployment failed, nor fail silently after a success."""

from __future__ import annotations

from typing import Any

import pytest

from fabstir_sdk.chain.rpc import JsonRpcClient
from fabstir_sdk.chain.transport import MockTransport
from fabstir_sdk.devnet import DevAccount, _deploy
from fabstir_sdk.errors import DevnetError, RpcFailure

DEPLOYER = DevAccount(
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
)


def scripted_node(seen: list[tuple[str, list[Any]]]):
    """Automine on; eth_gasPrice fails (the deployment's error); turning automine back on
    fails (the restore's)."""

    def node(payload: Any) -> Any:
        calls = payload if isinstance(payload, list) else [payload]
        replies = []
        for call in calls:
            seen.append((call["method"], call["params"]))
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": call["id"]}
            if call["method"] == "anvil_getAutomine":
                reply["result"] = True
            elif call["method"] == "evm_setAutomine" and call["params"] == [False]:
                reply["result"] = None
            elif call["method"] == "eth_getTransactionCount":
                reply["result"] = "0x0"
            elif call["method"] == "eth_gasPrice":
                reply["error"] = {"code": -32000, "message": "gas oracle down"}
            else:  # evm_setAutomine(true)
                reply["error"] = {"code": -32603, "message": "node is shutting down"}
            replies.append(reply)
        return replies if isinstance(payload, list) else replies[0]

    return node


async def test_a_failed_restore_does_not_replace_the_deployments_error():
    seen: list[tuple[str, list[Any]]] = []
    rpc = JsonRpcClient("http://node", transport=MockTransport(scripted_node(seen)))
    with pytest.raises(DevnetError) as caught:
        await _deploy.deploy(rpc, DEPLOYER, [], chain_id=31337)
    assert str(caught.value) == "deployment failed at eth_gasPrice: gas oracle down"
    assert caught.value.__notes__ == [
        "turning anvil's automine back on failed too: "
        "RpcFailure('evm_setAutomine: node is shutting down')"
    ]
    assert [(m, p) for m, p in seen if m == "evm_setAutomine"] == [
        ("evm_setAutomine", [False]),
        ("evm_setAutomine", [True]),
    ]


async def test_a_failed_restore_after_a_deployment_that_succeeded_raises(monkeypatch):
    seen: list[tuple[str, list[Any]]] = []
    rpc = JsonRpcClient("http://node", transport=MockTransport(scripted_node(seen)))
    deployed = object()

    async def succeed(*args: Any, **kwargs: Any) -> Any:
        return deployed

    monkeypatch.setattr(_deploy, "_deploy", succeed)
    with pytest.raises(RpcFailure) as caught:
        await _deploy.deploy(rpc, DEPLOYER, [], chain_id=31337)
    assert str(caught.value) == "evm_setAutomine: node is shutting down"
    assert [m for m, _ in seen] == ["anvil_getAutomine", "evm_setAutomine", "evm_setAutomine"]
