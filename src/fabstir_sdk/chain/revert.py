"""Turn revert data into typed errors: ``Error(string)``, ``Panic(uint256)`` and custom errors.

Custom errors are looked up by selector in every ABI we ship, so an OpenZeppelin
``ERC20InsufficientAllowance`` from a token reads as well as our own revert strings.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from eth_abi.abi import decode
from eth_abi.exceptions import DecodingError
from eth_utils.abi import function_signature_to_4byte_selector

from .._resources import contracts_path
from ..errors import (
    ContractRevertError,
    DuplicateModelError,
    FabstirError,
    HostAlreadyRegisteredError,
    HostNotActiveError,
    HostPriceOutOfRangeError,
    InsufficientAllowanceError,
    InsufficientBalanceError,
    ModelNotApprovedError,
    ModelNotSupportedError,
    NoEarningsError,
    SessionNotActiveError,
    Unit,
)
from .abi import canonical_type
from .artifacts import load_abi

__all__ = ["decode_revert", "revert_error"]

_ERROR_STRING = bytes.fromhex("08c379a0")
_PANIC = bytes.fromhex("4e487b71")
_PANIC_CODES = {
    0x01: "assertion failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division by zero",
    0x21: "invalid enum value",
    0x31: "pop on empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory",
}


@cache
def _custom_errors() -> dict[bytes, tuple[str, list[str]]]:
    table: dict[bytes, tuple[str, list[str]]] = {}
    for path in sorted(contracts_path("abi").rglob("*.json")):
        name = path.relative_to(contracts_path("abi")).with_suffix("").as_posix()
        for item in load_abi(name):
            if item.get("type") != "error":
                continue
            types = [canonical_type(i) for i in item.get("inputs", [])]
            signature = f"{item['name']}({','.join(types)})"
            table[function_signature_to_4byte_selector(signature)] = (item["name"], types)
    return table


def decode_revert(data: bytes) -> tuple[str, str | None, tuple[Any, ...]]:
    """``(reason, custom_error_name, args)`` for raw revert data."""
    selector, body = data[:4], data[4:]
    try:
        if selector == _ERROR_STRING:
            (reason,) = decode(["string"], body)
            return str(reason), None, ()
        if selector == _PANIC:
            (code,) = decode(["uint256"], body)
            return f"panic 0x{code:02x}: {_PANIC_CODES.get(code, 'unknown panic')}", None, (code,)
    except (DecodingError, ValueError, OverflowError):  # short, huge length, not UTF-8
        kind = "Error(string)" if selector == _ERROR_STRING else "Panic(uint256)"
        return f"malformed {kind} revert 0x{data.hex()}", None, ()
    known = _custom_errors().get(selector)
    if known is None:
        return (f"unknown error 0x{data.hex()}" if data else "reverted without a reason"), None, ()
    name, types = known
    try:
        args = tuple(decode(types, body))
    except Exception:  # malformed body: keep the name, drop the arguments
        args = ()
    return f"{name}({', '.join(map(str, args))})", name, args


_REASONS: dict[str, type[FabstirError]] = {
    "Session not active": SessionNotActiveError,
    # NodeRegistry and HostEarnings refusals a host operator meets
    "Already registered": HostAlreadyRegisteredError,
    "Not registered": HostNotActiveError,
    "Model not supported": ModelNotSupportedError,
    "Model not approved": ModelNotApprovedError,
    "Duplicate model": DuplicateModelError,
    "Native price out of range": HostPriceOutOfRangeError,
    "Stable price out of range": HostPriceOutOfRangeError,
    "No earnings to withdraw": NoEarningsError,
}


def revert_error(
    data: bytes, *, tx_hash: str | None = None, token: str = "", unit: Unit | None = None
) -> FabstirError:
    """The typed error for revert ``data``: a specific subclass where one fits.

    ``token`` is the ERC-20 the transaction moves and ``unit`` its ``(decimals, symbol)``:
    with it, an ERC-20 refusal (a balance or allowance that changed after the SDK's own
    checks) names amounts as the user typed them, not in base units of an address.
    """
    reason, name, args = decode_revert(data)
    if name == "ERC20InsufficientBalance" and len(args) == 3:
        return InsufficientBalanceError(
            needed=args[2], available=args[1], token=token or "token", unit=unit
        )
    if name == "ERC20InsufficientAllowance" and len(args) == 3:
        return InsufficientAllowanceError(
            needed=args[2], allowance=args[1], token=token or "token", unit=unit
        )
    specific = _REASONS.get(reason)
    if specific is not None:
        return specific(reason)
    return ContractRevertError(reason, error_name=name, args=args, tx_hash=tx_hash)
