"""The chain decoders, fed garbage: ABI return data, receipts, revert data, JSON-RPC replies,
amounts and addresses. Each either decodes or raises a typed FabstirError."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from eth_abi.abi import encode
from eth_account import Account
from eth_utils import to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from fabstir_sdk.chain.abi import Contract
from fabstir_sdk.chain.addresses import checksum_address
from fabstir_sdk.chain.client import Read
from fabstir_sdk.chain.model_id import model_id
from fabstir_sdk.chain.revert import decode_revert, revert_error
from fabstir_sdk.chain.rpc import JsonRpcClient, RpcFailure
from fabstir_sdk.chain.signer import LocalSigner
from fabstir_sdk.chain.transport import MockTransport
from fabstir_sdk.chain.units import format_units, to_base_units
from fabstir_sdk.errors import ChainError, FabstirError, RpcError

from .fuzzing import fuzz, run, typed_only

MARKET = Contract("JobMarketplace", "0x" + "11" * 20)
REGISTRY = Contract("NodeRegistry", "0x" + "22" * 20)
#: Getters of every shape we read: a struct, a tuple, an array, an address, a uint, a bool.
CALLS = [
    MARKET.call("sessionJobs", 1),
    MARKET.call("getDepositBalances", "0x" + "33" * 20, ["0x" + "44" * 20]),
    MARKET.call("usdcAddress"),
    MARKET.call("nextJobId"),
    MARKET.call("paused"),
    REGISTRY.call("getAllActiveNodes"),
]
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
EVENTS = ["SessionJobCreated", "SessionCompleted", "ProofSubmitted", "DepositReceived"]

hexish = st.text(alphabet="0123456789abcdefABCDEFxg ", max_size=140)
json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=12) | hexish
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def return_data(draw: st.DrawFn) -> bytes:
    """Random bytes, or a word-aligned blob with big offsets and lengths in it."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=400))
    words = draw(
        st.lists(
            st.integers(0, 2**256 - 1) | st.sampled_from([0, 1, 32, 64, 2**255, 2**256 - 1]),
            max_size=14,
        )
    )
    return b"".join(w.to_bytes(32, "big") for w in words)


@fuzz()
@given(st.sampled_from(CALLS), return_data())
def test_call_decoders_take_any_return_data(call, data):
    typed_only(call.decode, data)
    typed_only(call.decode_named, data)


@fuzz()
@given(st.sampled_from(CALLS), json_values)
def test_eth_call_results_of_any_json_type(call, result):
    """What a node (or a proxy) may put in ``result``: anything."""
    typed_only(Read.of(call).decode, result)
    typed_only(Read.of(call, named=True).decode, result)


@st.composite
def logs(draw: st.DrawFn) -> Any:
    name = draw(st.sampled_from(EVENTS))
    good = {
        "address": MARKET.address,
        "topics": [MARKET.event_topic(name), "0x" + "00" * 31 + "07"],
        "data": "0x" + encode(["uint256"], [5]).hex(),
    }
    log: dict[str, Any] = dict(good)
    for key in draw(st.lists(st.sampled_from(["address", "topics", "data"]), max_size=3)):
        if draw(st.booleans()):
            log.pop(key, None)
        else:
            log[key] = draw(json_values)
    if draw(st.booleans()) and isinstance(log.get("topics"), list):
        log["topics"] = [*log["topics"], *draw(st.lists(hexish | json_scalars, max_size=4))]
    if draw(st.booleans()):
        log["data"] = "0x" + draw(return_data()).hex()
    return draw(st.sampled_from([log, [log], {"logs": [log]}, {"logs": log}, draw(json_values)]))


@fuzz()
@given(logs(), st.sampled_from(EVENTS))
def test_events_take_any_receipt(receipt, name):
    if not isinstance(receipt, dict):
        receipt = {"logs": receipt}
    found = typed_only(MARKET.events, receipt, name)
    assert isinstance(found, list | ChainError)


@fuzz()
@given(st.binary(max_size=300) | return_data())
def test_decode_revert_takes_any_bytes(data):
    for selector in (b"", bytes.fromhex("08c379a0"), bytes.fromhex("4e487b71")):
        reason, name, args = decode_revert(selector + data)
        assert isinstance(reason, str) and isinstance(args, tuple)
        assert name is None or isinstance(name, str)
        assert isinstance(revert_error(selector + data), FabstirError)


def test_decode_revert_reads_well_formed_reasons():
    assert decode_revert(bytes.fromhex("08c379a0") + encode(["string"], ["no"])) == ("no", None, ())
    panic = decode_revert(bytes.fromhex("4e487b71") + encode(["uint256"], [0x11]))
    assert panic == ("panic 0x11: arithmetic overflow or underflow", None, (0x11,))
    # a malformed body keeps its raw bytes in the reason (nothing thrown away, nothing raised)
    short = bytes.fromhex("08c379a0") + b"\x01\x02"
    assert decode_revert(short) == ("malformed Error(string) revert 0x08c379a00102", None, ())


# ---------------------------------------------------------------------- JSON-RPC replies


def _Canned(reply: Any) -> JsonRpcClient:
    """A client whose node answers every request with ``reply`` (no socket)."""
    return JsonRpcClient("http://127.0.0.1:1", transport=MockTransport(lambda _payload: reply))


reply_objects = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": json_values,
        "id": st.integers(0, 4) | json_values,
        "result": json_values,
        "error": json_values
        | st.fixed_dictionaries({}, optional={"code": json_values, "message": json_values}),
    },
)


@fuzz(120)  # a loop per example: the slowest property here
@given(
    st.lists(reply_objects, max_size=4) | reply_objects | json_values,
    st.integers(1, 3),
    st.booleans(),
)
def test_batch_takes_any_reply(reply, n, return_errors):
    client = _Canned(reply)
    calls = [("eth_blockNumber", ())] * n
    try:
        results = run(client.batch(calls, return_errors=return_errors))
    except RpcError:
        return
    assert len(results) == n
    for result in results:
        if isinstance(result, RpcFailure):
            assert isinstance(result.node_message, str)
            assert result.code is None or isinstance(result.code, int)


def test_batch_matches_replies_by_id_in_any_order():
    client = _Canned([{"id": 2, "result": "0x2"}, {"id": 1, "result": "0x1"}])
    assert asyncio.run(client.batch([("a", ()), ("b", ())])) == ["0x1", "0x2"]
    missing = _Canned([{"id": 1, "result": "0x1"}])
    try:
        asyncio.run(missing.batch([("a", ()), ("b", ())]))
    except RpcError as exc:
        assert str(exc) == "b: no answer from http://127.0.0.1:1"
    else:
        raise AssertionError("a missing reply must raise")


# ---------------------------------------------------------------------- user input


@fuzz()
@given(
    st.text(max_size=40)
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.integers(-(10**80), 10**80)
    | st.floats()
    | st.booleans()
    | st.none(),
    st.integers(0, 30),
)
def test_amounts_parse_exactly_or_raise_typed(amount, decimals):
    units = typed_only(to_base_units, amount, decimals)
    if isinstance(units, int):
        assert 0 < units < 2**256
        assert Decimal(format_units(units, decimals)) == Decimal(str(amount).strip())


@fuzz()
@given(st.text(max_size=45) | hexish.map(lambda s: "0x" + s) | json_values)
def test_addresses_and_model_ids_parse_or_raise_typed(value):
    address = typed_only(checksum_address, value)
    assert isinstance(address, str | FabstirError)
    assert isinstance(typed_only(model_id, value), str | FabstirError)


uint = st.integers(min_value=0, max_value=2**256 - 1)


@fuzz(100)
@given(
    st.integers(min_value=1, max_value=2**64 - 1),  # chain id
    st.integers(min_value=0, max_value=2**64 - 2),  # nonce
    uint,
    uint,
    st.integers(min_value=0, max_value=2**64 - 1),  # gas
    st.binary(min_size=20, max_size=20),
    uint,
    st.binary(max_size=600),
    st.binary(min_size=32, max_size=32).filter(lambda k: 0 < int.from_bytes(k) < SECP256K1_N),
)
def test_fee_market_signatures_are_eth_accounts_bytes(
    chain_id, nonce, tip, fee, gas, to, value, data, key
):
    """LocalSigner's own EIP-1559 path (rlp + coincurve) signs exactly the bytes eth-account
    signs, for any field values: a difference would send a transaction nobody meant."""
    account = Account.from_key(key)
    tx = {
        "chainId": chain_id,
        "nonce": nonce,
        "maxPriorityFeePerGas": tip,
        "maxFeePerGas": fee,
        "gas": gas,
        "to": to_checksum_address(to),
        "value": value,
        "data": "0x" + data.hex(),
        "type": 2,
    }
    raw = run(LocalSigner(account).sign_transaction(tx))
    assert raw == bytes(account.sign_transaction(tx).raw_transaction)
