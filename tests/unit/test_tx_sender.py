"""TxSender against a scripted node (MockTransport, no socket): a nonce another process
took is re-read and the transaction signed again, never surfaced as "nonce too low"."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from eth_utils import keccak
from hexbytes import HexBytes

from fabstir_sdk import RpcFailure
from fabstir_sdk.chain.abi import Contract
from fabstir_sdk.chain.client import ChainClient
from fabstir_sdk.chain.transport import MockTransport

KEY = "0x" + "42" * 32
MARKET = "0x" + "11" * 20


class Node:
    """Just enough of a node for one transaction; ``taken`` sends are refused as taken."""

    def __init__(self, *, nonce: int, taken: int, refusal: str = "nonce too low") -> None:
        self.nonce, self.taken, self.refusal = nonce, taken, refusal
        self.sent: list[bytes] = []  # every raw transaction offered, accepted or not
        self.mined: dict[str, dict[str, Any]] = {}

    def __call__(self, payload: Any) -> Any:
        if isinstance(payload, list):
            return [self.answer(p) for p in payload]
        return self.answer(payload)

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        method, params = request["method"], request["params"]
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
        if method == "eth_sendRawTransaction":
            raw = bytes.fromhex(params[0][2:])
            self.sent.append(raw)
            if self.taken:
                self.taken -= 1
                self.nonce += 1  # another process's transaction took it
                reply["error"] = {"code": -32003, "message": self.refusal}
                return reply
            assert nonces([raw]) == [self.nonce]
            self.nonce += 1
            tx_hash = "0x" + keccak(raw).hex()
            self.mined[tx_hash] = {
                "transactionHash": tx_hash,
                "status": "0x1",
                "blockNumber": "0x7",
            }
            reply["result"] = tx_hash
        elif method == "eth_getTransactionCount":
            reply["result"] = hex(self.nonce)
        elif method == "eth_getTransactionReceipt" or method == "eth_getTransactionByHash":
            reply["result"] = self.mined.get(params[0])
        else:
            reply["result"] = {
                "eth_estimateGas": "0x5208",
                "eth_gasPrice": "0x3b9aca00",
                "eth_maxPriorityFeePerGas": "0x1",
                "eth_chainId": hex(84532),
            }[method]
        return reply


def nonces(raws: list[bytes]) -> list[int]:
    return [TypedTransaction.from_bytes(HexBytes(raw)).as_dict()["nonce"] for raw in raws]


def send(node: Node) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        client = ChainClient("http://node.invalid", transport=MockTransport(node))
        sender = client.sender(Account.from_key(KEY), chain_id=84532)
        call = Contract("JobMarketplace", MARKET).call("depositNative")
        return await sender.send(call, value=1)

    return asyncio.run(go())


def test_a_taken_nonce_is_read_again_and_the_transaction_signed_again():
    node = Node(nonce=5, taken=3)
    receipt = send(node)
    assert nonces(node.sent) == [5, 6, 7, 8]
    assert list(node.mined) == [receipt["transactionHash"]]  # sent (and mined) once
    assert node.nonce == 9


@pytest.mark.parametrize(
    "refusal", ["replacement transaction underpriced", "Nonce too low: next nonce 9, tx nonce 5"]
)
def test_other_node_wordings_of_a_taken_nonce(refusal):
    node = Node(nonce=5, taken=1, refusal=refusal)
    send(node)
    assert nonces(node.sent) == [5, 6]


def test_other_refusals_are_not_retried():
    node = Node(nonce=5, taken=1, refusal="insufficient funds for gas * price + value")
    with pytest.raises(RpcFailure, match="insufficient funds") as raised:
        send(node)
    assert raised.value.what == "eth_sendRawTransaction"
    assert nonces(node.sent) == [5]
    assert node.mined == {}


class RisingBaseFee:
    """A geth-like node that keeps an underpriced transaction pending: the latest base fee
    is above the first signing's fee cap; it mines only a signing that can pay it."""

    BASE_FEE = 50 * 10**9

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.pending: set[str] = set()
        self.mined: dict[str, dict[str, Any]] = {}

    def __call__(self, payload: Any) -> Any:
        if isinstance(payload, list):
            return [self.answer(p) for p in payload]
        return self.answer(payload)

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        method, params = request["method"], request["params"]
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
        if method == "eth_sendRawTransaction":
            raw = bytes.fromhex(params[0][2:])
            tx = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
            tx_hash = "0x" + keccak(raw).hex()
            if self.sent:  # geth/anvil's replacement rule: both fee fields >= 1.1x
                old = self.sent[-1]
                assert tx["maxFeePerGas"] * 10 >= old["maxFeePerGas"] * 11
                assert tx["maxPriorityFeePerGas"] * 10 >= old["maxPriorityFeePerGas"] * 11
                self.pending.clear()
            self.sent.append(tx)
            if tx["maxFeePerGas"] >= self.BASE_FEE + tx["maxPriorityFeePerGas"]:
                self.mined[tx_hash] = {
                    "transactionHash": tx_hash,
                    "status": "0x1",
                    "blockNumber": "0xa",
                }
            else:
                self.pending.add(tx_hash)
            reply["result"] = tx_hash
        elif method == "eth_getTransactionCount":
            reply["result"] = hex(5 + len(self.mined if params[1] == "latest" else self.sent[:1]))
        elif method == "eth_getTransactionReceipt":
            reply["result"] = self.mined.get(params[0])
        elif method == "eth_getTransactionByHash":
            known = params[0] in self.pending or params[0] in self.mined
            reply["result"] = {"hash": params[0]} if known else None
        elif method == "eth_getBlockByNumber":
            reply["result"] = {"number": "0x9", "baseFeePerGas": hex(self.BASE_FEE)}
        else:
            reply["result"] = {
                "eth_estimateGas": "0x5208",
                "eth_gasPrice": "0x3b9aca00",  # 1 gwei when the fees were read
                "eth_maxPriorityFeePerGas": "0x3e8",
                "eth_chainId": hex(84532),
            }[method]
        return reply


def test_a_pending_transaction_the_base_fee_overtook_is_replaced(monkeypatch):
    """Still pending (not evicted) with its cap under the base fee: the same nonce is signed
    again with a cap >= 2x the base fee + tip and a tip 12.5% up (rounded up); the
    replacement's receipt is the one returned."""
    from fabstir_sdk.chain import client as client_module

    monkeypatch.setattr(client_module, "_FATE_AFTER", 0.0)
    node = RisingBaseFee()
    receipt = send(node)  # type: ignore[arg-type]
    first, second = node.sent
    assert first["nonce"] == second["nonce"] == 5
    assert first["maxFeePerGas"] < node.BASE_FEE
    assert second["maxPriorityFeePerGas"] == 1125  # 1000 x 1.125
    assert second["maxFeePerGas"] - (2 * node.BASE_FEE + 1125) in range(1 << 30)  # + salt
    assert receipt["transactionHash"] in node.mined and len(node.mined) == 1
