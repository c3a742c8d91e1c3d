"""TxSender against a scripted node (MockTransport, no socket): a nonce another process
took is re-read and the transaction signed again, never surfaced as "nonce too low"; sends
that wait together go out in one batch with consecutive nonces, and a refusal, a
cancellation, a drop or a revert inside a batch stays with its own caller."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes

from fabstir_sdk import ContractRevertError, RpcFailure
from fabstir_sdk.chain import client as client_module
from fabstir_sdk.chain.abi import Call, Contract
from fabstir_sdk.chain.client import ChainClient, TxSender
from fabstir_sdk.chain.transport import MockTransport

KEY = "0x" + "42" * 32
ADDRESS = Account.from_key(KEY).address
MARKET = "0x" + "11" * 20
CALL = Contract("JobMarketplace", MARKET).call("depositNative")
CHAIN_ID = 84532


def decoded(raw: bytes) -> dict[str, Any]:
    tx = dict(TypedTransaction.from_bytes(HexBytes(raw)).as_dict())
    return {**tx, "to": to_checksum_address(tx["to"])}


def nonces(raws: list[bytes]) -> list[int]:
    return [decoded(raw)["nonce"] for raw in raws]


class Refused(Exception):
    """What a scripted node answers with a JSON-RPC error."""

    def __init__(self, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.error: dict[str, Any] = {"code": -32003, "message": message}
        if data is not None:
            self.error["data"] = data


class ScriptedNode:
    """A JSON-RPC node in one function: a batch is answered call by call, in order, by the
    method of the same name (``eth_sendRawTransaction(raw)``; raise :class:`Refused` for an
    error). Every request's methods are kept; ``hold_sends()`` keeps the next request that
    sends a transaction back until its ``opened`` event is set."""

    CONSTANTS: ClassVar[dict[str, str]] = {
        "eth_estimateGas": "0x5208",
        "eth_gasPrice": "0x3b9aca00",  # 1 gwei
        "eth_maxPriorityFeePerGas": "0x1",
        "eth_chainId": hex(CHAIN_ID),
    }

    def __init__(self) -> None:
        self.requests: list[list[str]] = []
        self._hold: tuple[asyncio.Event, asyncio.Event] | None = None
        self._answered: asyncio.Event | None = None

    async def answered(self) -> None:
        """Wait until the node answers its next request."""
        self._answered = asyncio.Event()
        await self._answered.wait()

    def hold_sends(self) -> tuple[asyncio.Event, asyncio.Event]:
        """``(arrived, opened)``: the next request with a send arrives, then waits."""
        self._hold = (asyncio.Event(), asyncio.Event())
        return self._hold

    async def __call__(self, payload: Any) -> Any:
        calls = payload if isinstance(payload, list) else [payload]
        methods = [c["method"] for c in calls]
        self.requests.append(methods)
        if self._hold is not None and "eth_sendRawTransaction" in methods:
            (arrived, opened), self._hold = self._hold, None
            arrived.set()
            await opened.wait()
        replies = [self.answer(c) for c in calls]
        if self._answered is not None:
            self._answered.set()
        return replies if isinstance(payload, list) else replies[0]

    def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        method, params = request["method"], request["params"]
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": request["id"]}
        try:
            if method in self.CONSTANTS and not hasattr(self, method):
                reply["result"] = self.CONSTANTS[method]
            else:
                reply["result"] = getattr(self, method)(*params)
        except Refused as refused:
            reply["error"] = refused.error
        return reply


class Node(ScriptedNode):
    """One account's pool, mined as a node does: in nonce order, never past a gap, at once
    (automine). ``taken`` next sends find their nonce taken by another process (which then
    holds it); ``refuse(tx)`` is the refusal of a transaction (None: accepted);
    ``reverts(tx)`` says a mined transaction reverted (status 0)."""

    def __init__(
        self,
        *,
        nonce: int = 5,
        taken: int = 0,
        refusal: str = "nonce too low",
        refuse: Callable[[dict[str, Any]], str | None] = lambda tx: None,
        reverts: Callable[[dict[str, Any]], bool] = lambda tx: False,
    ) -> None:
        super().__init__()
        self.mined_to = nonce  # the "latest" nonce: every one below it is mined
        self.taken, self.refusal, self.refuse, self.reverts = taken, refusal, refuse, reverts
        self.sent: list[bytes] = []  # every raw transaction offered, accepted or not
        self.pool: dict[int, bytes | None] = {}  # nonce -> ours (None: another process's)
        self.receipts: dict[str, dict[str, Any]] = {}
        self.by_hash: dict[str, dict[str, Any]] = {}  # every transaction accepted
        self.mined: list[dict[str, Any]] = []  # ours, in mining order
        self.stall: int | None = None  # a nonce not mined (nor any after it) while set

    def pending(self) -> int:
        nonce = self.mined_to
        while nonce in self.pool:
            nonce += 1
        return nonce

    def eth_sendRawTransaction(self, raw_hex: str) -> str:
        raw = bytes.fromhex(raw_hex[2:])
        self.sent.append(raw)
        tx, tx_hash = decoded(raw), "0x" + keccak(raw).hex()
        if tx_hash in self.by_hash:
            raise Refused("already known")
        if self.taken:
            self.taken -= 1
            self.pool[tx["nonce"]] = None  # another process's transaction took it
            self.mine()
            raise Refused(self.refusal)
        if tx["nonce"] < self.mined_to:
            raise Refused("nonce too low")
        if tx["nonce"] in self.pool:
            raise Refused("replacement transaction underpriced")
        refusal = self.refuse(tx)
        if refusal is not None:
            raise Refused(refusal)
        self.pool[tx["nonce"]] = raw
        self.by_hash[tx_hash] = tx
        self.mine()
        return tx_hash

    def mine(self) -> None:
        while self.mined_to in self.pool and self.mined_to != self.stall:
            raw = self.pool.pop(self.mined_to)
            self.mined_to += 1
            if raw is None:
                continue
            tx_hash = "0x" + keccak(raw).hex()
            tx = self.by_hash[tx_hash]
            self.mined.append(tx)
            status = "0x0" if self.reverts(tx) else "0x1"
            self.receipts[tx_hash] = {
                "transactionHash": tx_hash,
                "status": status,
                "blockNumber": hex(self.mined_to),
            }

    def drop(self, nonce: int) -> None:
        """The node forgets the pending transaction with ``nonce`` (evicted)."""
        raw = self.pool.pop(nonce)
        assert raw is not None
        del self.by_hash["0x" + keccak(raw).hex()]

    def eth_getTransactionCount(self, address: str, tag: str) -> str:
        assert address == ADDRESS
        return hex(self.pending() if tag == "pending" else self.mined_to)

    def eth_getTransactionReceipt(self, tx_hash: str) -> dict[str, Any] | None:
        return self.receipts.get(tx_hash)

    def eth_getTransactionByHash(self, tx_hash: str) -> dict[str, Any] | None:
        return {"hash": tx_hash} if tx_hash in self.by_hash else None

    def eth_getBlockByNumber(self, tag: str, full: bool) -> dict[str, Any]:
        return {"number": hex(self.mined_to), "baseFeePerGas": "0x1"}

    def eth_estimateGas(self, tx: dict[str, Any], block: str = "pending") -> str:
        if block != "pending" and self.reverts({"value": int(tx.get("value", "0x0"), 16)}):
            reason = b"\x08\xc3\x79\xa0" + encode(["string"], ["scripted revert"])
            raise Refused("execution reverted: scripted revert", "0x" + reason.hex())
        return self.CONSTANTS["eth_estimateGas"]

    def values(self) -> list[int]:
        """The value of every transaction mined, in order (fillers: 0, to ourselves)."""
        return [tx["value"] for tx in self.mined]


def sender(node: ScriptedNode) -> TxSender:
    client = ChainClient("http://node.invalid", transport=MockTransport(node))
    return client.sender(Account.from_key(KEY), chain_id=CHAIN_ID)


def send(node: ScriptedNode) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        return await sender(node).send(CALL, value=1)

    return asyncio.run(go())


async def queued(txs: TxSender, value: int, call: Call = CALL) -> asyncio.Task[dict[str, Any]]:
    """A send of ``value`` wei, once it waits for its nonce (its checks are done)."""
    checked = asyncio.Event()

    async def ready() -> None:
        checked.set()

    task = asyncio.ensure_future(txs.send(call, value=value, ready=ready()))
    await checked.wait()  # set in the step that queues it: queued when this wakes
    return task


async def behind_one(
    node: Node, txs: TxSender, values: list[int]
) -> tuple[list[asyncio.Task[dict[str, Any]]], asyncio.Event]:
    """A send of 100 wei held at the node, and sends of ``values`` waiting behind it:
    their tasks (that send's first) and the event that lets the node answer."""
    arrived, opened = node.hold_sends()
    first = asyncio.ensure_future(txs.send(CALL, value=100))
    await arrived.wait()
    return [first, *[await queued(txs, value) for value in values]], opened


async def batched(node: Node, txs: TxSender, values: list[int]) -> list[Any]:
    """:func:`behind_one`, then the node answers: every caller's outcome, receipt or
    error, in order."""
    tasks, opened = await behind_one(node, txs, values)
    opened.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


def sends_per_request(node: ScriptedNode) -> list[int]:
    return [
        r.count("eth_sendRawTransaction") for r in node.requests if "eth_sendRawTransaction" in r
    ]


def test_a_taken_nonce_is_read_again_and_the_transaction_signed_again():
    node = Node(nonce=5, taken=3)
    receipt = send(node)
    assert nonces(node.sent) == [5, 6, 7, 8]
    assert list(node.receipts) == [receipt["transactionHash"]]  # sent (and mined) once
    assert node.pending() == 9


@pytest.mark.parametrize(
    "refusal", ["replacement transaction underpriced", "Nonce too low: next nonce 9, tx nonce 5"]
)
def test_other_node_wordings_of_a_taken_nonce(refusal):
    node = Node(nonce=5, taken=1, refusal=refusal)
    send(node)
    assert nonces(node.sent) == [5, 6]


def test_other_refusals_are_not_retried():
    node = Node(refuse=lambda tx: "insufficient funds for gas * price + value")
    with pytest.raises(RpcFailure, match="insufficient funds") as raised:
        send(node)
    assert raised.value.what == "eth_sendRawTransaction"
    assert nonces(node.sent) == [5]
    assert node.receipts == {}


def test_sends_waiting_together_go_in_one_batch_with_consecutive_nonces():
    """The first send goes alone, at once; the four that wait behind it go in the next
    request, nonces 6 to 9 in the order they came; each caller gets its own receipt."""
    node = Node(nonce=5)

    async def go() -> list[Any]:
        return await batched(node, sender(node), [1, 2, 3, 4])

    receipts = asyncio.run(go())
    assert sends_per_request(node) == [1, 4]
    assert nonces(node.sent) == [5, 6, 7, 8, 9]
    assert node.values() == [100, 1, 2, 3, 4]
    assert [node.by_hash[r["transactionHash"]]["value"] for r in receipts] == [100, 1, 2, 3, 4]


def test_a_send_refused_inside_a_batch_fails_alone_and_its_nonce_is_filled():
    """Nonce 7 (value 2) is refused: its caller gets the node's refusal as RpcFailure; 8
    (value 3) was accepted and would wait behind the gap forever, so 7 is filled with a
    transfer of 0 to the account itself, and 8 is mined once. The next send takes 9."""
    node = Node(nonce=5, refuse=lambda tx: "insufficient funds" if tx["value"] == 2 else None)

    async def go() -> tuple[list[Any], dict[str, Any]]:
        txs = sender(node)
        outcomes = await batched(node, txs, [1, 2, 3])
        return outcomes, await txs.send(CALL, value=4)

    (first, one, refused, three), after = asyncio.run(go())
    assert isinstance(refused, RpcFailure) and refused.what == "eth_sendRawTransaction"
    assert "insufficient funds" in str(refused)
    assert [node.by_hash[r["transactionHash"]]["value"] for r in (first, one, three, after)] == [
        100,
        1,
        3,
        4,
    ]
    assert node.values() == [100, 1, 0, 3, 4]
    filler = node.mined[2]
    assert (filler["nonce"], filler["to"], filler["gas"]) == (7, ADDRESS, 21_000)
    assert node.pool == {} and node.pending() == 10


def test_a_refusal_at_the_end_of_a_batch_leaves_no_gap_to_fill():
    node = Node(nonce=5, refuse=lambda tx: "intrinsic gas too low" if tx["value"] == 2 else None)

    async def go() -> tuple[list[Any], dict[str, Any]]:
        txs = sender(node)
        outcomes = await batched(node, txs, [1, 2])
        return outcomes, await txs.send(CALL, value=3)

    (_, _, refused), _ = asyncio.run(go())
    assert isinstance(refused, RpcFailure) and "intrinsic gas" in str(refused)
    assert node.values() == [100, 1, 3]  # 3 took the refused one's nonce, 7
    assert nonces(node.sent) == [5, 6, 7, 7]


def test_a_nonce_taken_inside_a_batch_is_signed_again_after_the_batch():
    """Another process takes nonce 6 as our batch goes: that send is signed again with
    the node's next nonce, after the batch's own; the others keep theirs."""
    node = Node(nonce=5)

    async def go() -> list[Any]:
        tasks, opened = await behind_one(node, sender(node), [1, 2, 3])
        arrived, held = node.hold_sends()  # holds the batch
        opened.set()
        await arrived.wait()
        node.taken = 1  # the batch's first send, nonce 6, is refused as taken
        held.set()
        return await asyncio.gather(*tasks)

    receipts = asyncio.run(go())
    assert nonces(node.sent) == [5, 6, 7, 8, 9]
    assert node.values() == [100, 2, 3, 1]
    assert [node.by_hash[r["transactionHash"]]["nonce"] for r in receipts] == [5, 9, 7, 8]


def test_a_send_cancelled_before_its_batch_is_never_signed():
    node = Node(nonce=5)

    async def go() -> list[Any]:
        txs = sender(node)
        tasks, opened = await behind_one(node, txs, [1, 2, 3])
        tasks[2].cancel()
        opened.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        return [*outcomes, await txs.send(CALL, value=4)]

    outcomes = asyncio.run(go())
    assert isinstance(outcomes[2], asyncio.CancelledError)
    assert node.values() == [100, 1, 3, 4]  # 2 never went: no gap, no filler
    assert nonces(node.sent) == [5, 6, 7, 8]


def test_a_send_cancelled_while_its_batch_is_out_is_sent_and_the_nonces_stay_right():
    """Once signed, a send goes (its nonce is between others'): cancelled while its batch
    is at the node, it is mined all the same, and the next send takes the next nonce."""
    node = Node(nonce=5)

    async def go() -> list[Any]:
        txs = sender(node)
        (first, one, two), opened = await behind_one(node, txs, [1, 2])
        arrived, held = node.hold_sends()  # holds the batch of 1 and 2
        opened.set()
        await first
        await arrived.wait()
        one.cancel()
        held.set()
        outcomes = await asyncio.gather(one, two, return_exceptions=True)
        return [*outcomes, await txs.send(CALL, value=3)]

    cancelled, _, _ = asyncio.run(go())
    assert isinstance(cancelled, asyncio.CancelledError)
    assert node.values() == [100, 1, 2, 3]
    assert nonces(node.sent) == [5, 6, 7, 8]


def test_a_revert_inside_a_batch_is_its_own_callers(monkeypatch):
    """Nonce 7 (value 2) is mined and reverts: that caller gets the decoded revert naming
    its own transaction; the others their receipts."""
    node = Node(nonce=5, reverts=lambda tx: tx["value"] == 2)

    async def go() -> list[Any]:
        return await batched(node, sender(node), [1, 2, 3])

    first, one, reverted, three = asyncio.run(go())
    assert isinstance(reverted, ContractRevertError)
    assert reverted.reason == "scripted revert"
    assert node.by_hash[reverted.tx_hash]["value"] == 2
    assert [node.by_hash[r["transactionHash"]]["value"] for r in (first, one, three)] == [
        100,
        1,
        3,
    ]


def test_a_dropped_transaction_with_later_ones_behind_it_is_sent_again(monkeypatch):
    """The node drops nonce 6 of a batch (evicted: a burst of full blocks raised the base
    fee) while 7 waits behind it. Reported and left, 6 would hold 7 forever: it is signed
    again with its nonce and fees 12.5% up, and both callers get their receipts."""
    monkeypatch.setattr(client_module, "_FATE_AFTER", 0.0)
    monkeypatch.setattr(client_module, "_FATE_EVERY", 0.0)
    node = Node(nonce=5)
    node.pool[5], node.stall = None, 5  # another's transaction, pending: ours wait behind it

    async def go() -> list[dict[str, Any]]:
        txs = sender(node)
        arrived, opened = node.hold_sends()
        one = asyncio.ensure_future(txs.send(CALL, value=1))
        await arrived.wait()
        two = await queued(txs, 2)
        opened.set()
        while len(node.by_hash) < 2:  # until both are accepted, behind nonce 5
            await node.answered()
        node.drop(6)
        while len(node.sent) < 3:  # until 6 is sent again
            await node.answered()
        node.stall = None  # the other's transaction is mined, then ours
        node.mine()
        return list(await asyncio.gather(one, two))

    one, two = asyncio.run(go())
    first, _, again = (decoded(raw) for raw in node.sent)
    assert nonces(node.sent) == [6, 7, 6]
    assert again["maxPriorityFeePerGas"] == -(-first["maxPriorityFeePerGas"] * 9 // 8)
    assert node.values() == [1, 2]
    assert node.by_hash[one["transactionHash"]] == decoded(node.sent[2])
    assert node.by_hash[two["transactionHash"]]["nonce"] == 7


class RisingBaseFee(ScriptedNode):
    """A geth-like node that keeps an underpriced transaction pending: the latest base fee
    is above the first signing's fee cap; it mines only a signing that can pay it."""

    BASE_FEE = 50 * 10**9
    CONSTANTS: ClassVar[dict[str, str]] = {
        **ScriptedNode.CONSTANTS,
        "eth_maxPriorityFeePerGas": "0x3e8",
    }

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict[str, Any]] = []
        self.pending: set[str] = set()
        self.mined: dict[str, dict[str, Any]] = {}

    def eth_sendRawTransaction(self, raw_hex: str) -> str:
        raw = bytes.fromhex(raw_hex[2:])
        tx, tx_hash = decoded(raw), "0x" + keccak(raw).hex()
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
        return tx_hash

    def eth_getTransactionCount(self, address: str, tag: str) -> str:
        return hex(5 + len(self.mined if tag == "latest" else self.sent[:1]))

    def eth_getTransactionReceipt(self, tx_hash: str) -> dict[str, Any] | None:
        return self.mined.get(tx_hash)

    def eth_getTransactionByHash(self, tx_hash: str) -> dict[str, Any] | None:
        return {"hash": tx_hash} if tx_hash in self.pending or tx_hash in self.mined else None

    def eth_getBlockByNumber(self, tag: str, full: bool) -> dict[str, Any]:
        return {"number": "0x9", "baseFeePerGas": hex(self.BASE_FEE)}


def test_a_pending_transaction_the_base_fee_overtook_is_replaced(monkeypatch):
    """Still pending (not evicted) with its cap under the base fee: the same nonce is signed
    again with a cap >= 2x the base fee + tip and a tip 12.5% up (rounded up); the
    replacement's receipt is the one returned."""
    monkeypatch.setattr(client_module, "_FATE_AFTER", 0.0)
    node = RisingBaseFee()
    receipt = send(node)
    first, second = node.sent
    assert first["nonce"] == second["nonce"] == 5
    assert first["maxFeePerGas"] < node.BASE_FEE
    assert second["maxPriorityFeePerGas"] == 1125  # 1000 x 1.125
    assert second["maxFeePerGas"] - (2 * node.BASE_FEE + 1125) in range(1 << 30)  # + salt
    assert receipt["transactionHash"] in node.mined and len(node.mined) == 1
