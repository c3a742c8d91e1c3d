"""Address checking: every address the SDK accepts passes through :func:`checksum_address`."""

from __future__ import annotations

import functools
import re

from eth_utils.address import to_checksum_address

from ..errors import InvalidAddressError

__all__ = ["ZERO_ADDRESS", "checksum_address", "eip55"]

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
_HEX40 = re.compile(r"0x[0-9a-fA-F]{40}")
_KEY_LIKE = re.compile(r"[0-9a-fA-F]{64}")


@functools.lru_cache(maxsize=4096)
def eip55(address: str) -> str:
    """``to_checksum_address`` remembered: a session's open path meets the same few
    addresses (contracts, host, user) a dozen times, each a keccak in Python's hands."""
    return str(to_checksum_address(address))


def checksum_address(value: object, *, what: str = "address") -> str:
    """Return the EIP-55 form of ``value``.

    All-lowercase and all-uppercase hex carry no checksum and are accepted; mixed case must
    match EIP-55 exactly, since a wrong checksum usually means a mistyped address.
    """
    if not isinstance(value, str) or not _HEX40.fullmatch(value):
        # a private key given where an address goes is not echoed into an error or a log
        got = "a private key? (not shown)" if _KEY_LIKE.search(str(value)) else repr(value)
        raise InvalidAddressError(f"{what} must be 0x followed by 40 hex digits, got {got}")
    body = value[2:]
    checksummed = eip55(value)
    if body != body.lower() and body != body.upper() and checksummed != value:
        raise InvalidAddressError(f"{what} {value} has a bad EIP-55 checksum")
    return checksummed
