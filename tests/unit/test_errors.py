from eth_abi.abi import encode

from fabstir_sdk import ContractRevertError, FabstirError, SessionNotActiveError
from fabstir_sdk.chain.revert import decode_revert, revert_error


def _error_string(text: str) -> bytes:
    return bytes.fromhex("08c379a0") + encode(["string"], [text])


def test_error_string_decoded():
    assert decode_revert(_error_string("Exceeds deposit")) == ("Exceeds deposit", None, ())


def test_panic_decoded():
    reason, name, args = decode_revert(bytes.fromhex("4e487b71") + encode(["uint256"], [0x11]))
    assert reason == "panic 0x11: arithmetic overflow or underflow"
    assert (name, args) == (None, (0x11,))


def test_known_reason_maps_to_typed_error():
    err = revert_error(_error_string("Session not active"))
    assert isinstance(err, SessionNotActiveError)


def test_unknown_reason_is_contract_revert():
    err = revert_error(_error_string("Nope"), tx_hash="0xabc")
    assert isinstance(err, ContractRevertError) and isinstance(err, FabstirError)
    assert err.reason == "Nope" and err.tx_hash == "0xabc"
    assert "0xabc" in str(err)


def test_empty_and_unknown_selector():
    assert decode_revert(b"")[0] == "reverted without a reason"
    assert decode_revert(bytes.fromhex("deadbeef"))[0] == "unknown error 0xdeadbeef"
