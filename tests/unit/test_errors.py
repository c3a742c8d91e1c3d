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


def test_chain_state_refusals_are_not_value_errors():
    """Bad arguments are ValueErrors; what the chain's state refuses is not (it may pass later)."""
    import fabstir_sdk as f

    refusals = [
        f.InsufficientBalanceError(1, 0, "USDC"),
        f.InsufficientAllowanceError(1, 0, "USDC"),
        f.HostNotActiveError("host"),
        f.ModelNotApprovedError("model"),
        f.PriceBelowMinimumError(1, 2),
        f.PriceAboveMaximumError(2, 1),
        f.SessionNotActiveError("session"),
    ]
    for error in refusals:
        assert isinstance(error, f.ChainStateError)
        assert not isinstance(error, ValueError | f.ValidationError), type(error)
    assert issubclass(f.DepositOutOfRangeError, f.ValidationError)  # an argument out of range


def test_one_base_marks_a_failed_host():
    import fabstir_sdk as f

    failed = {
        c for c in vars(f).values() if isinstance(c, type) and issubclass(c, f.HostFailedError)
    }
    assert failed == {
        f.HostFailedError,
        f.HostUnreachableError,
        f.HostKeyMismatchError,
        f.StreamTimeoutError,
    }
    assert issubclass(f.StreamTimeoutError, TimeoutError)
    assert not issubclass(f.HostError, f.HostFailedError)  # a refusal frame, not a failure


def test_erc20_refusals_are_worded_in_the_tokens_unit_when_known():
    from eth_utils.abi import function_signature_to_4byte_selector

    import fabstir_sdk as f

    holder, token = "0x" + "11" * 20, "0x" + "22" * 20
    balance = function_signature_to_4byte_selector(
        "ERC20InsufficientBalance(address,uint256,uint256)"
    )
    allowance = function_signature_to_4byte_selector(
        "ERC20InsufficientAllowance(address,uint256,uint256)"
    )
    short = balance + encode(["address", "uint256", "uint256"], [holder, 1_500_000, 2_250_000])
    err = revert_error(short, token=token, unit=(6, "USDC"))
    assert isinstance(err, f.InsufficientBalanceError)
    assert str(err) == "needs 2.25 USDC, the account holds 1.5 USDC"
    assert (err.needed, err.available, err.token) == (2_250_000, 1_500_000, token)
    low = allowance + encode(["address", "uint256", "uint256"], [holder, 0, 10**6])
    err = revert_error(low, token=token, unit=(6, "USDC"))
    assert str(err) == "needs an allowance of 1 USDC for the marketplace, approved: 0 USDC"
    # the unit unknown (a token no manager read): base units of the address, as before
    assert str(revert_error(short, token=token)) == (
        f"needs 2250000 base units of {token}, the account holds 1500000"
    )
