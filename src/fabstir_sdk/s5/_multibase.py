"""Multibase text forms S5 uses: ``f`` base16, ``b`` base32, ``z`` base58btc, ``u`` base64url.

Decoding is strict: only the canonical spelling of some bytes is accepted (lowercase for
``f``/``b``, no padding, no stray characters), so one identifier has exactly one text per base.
"""

from __future__ import annotations

import base64
import binascii
import re

from ..errors import InvalidCIDError

__all__ = ["BASES", "b58decode", "b58encode", "decode", "encode"]

BASES = ("b", "f", "u", "z")
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
_CHARS = {
    "f": re.compile(r"[0-9a-f]*"),
    "b": re.compile(r"[a-z2-7]*"),
    "z": re.compile(f"[{_B58}]*"),
    "u": re.compile(r"[A-Za-z0-9_-]*"),
}
#: Identifiers are short; refusing long text keeps base58's quadratic decode cheap.
MAX_TEXT = 512


def b58encode(data: bytes) -> str:
    zeros = len(data) - len(data.lstrip(b"\0"))
    n = int.from_bytes(data, "big")
    digits = []
    while n:
        n, r = divmod(n, 58)
        digits.append(_B58[r])
    return "1" * zeros + "".join(reversed(digits))


def b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        n = n * 58 + _B58_INDEX[c]
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + (n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b"")


def encode(data: bytes, base: str = "b") -> str:
    """``data`` as multibase text: the base's prefix character, then the encoding."""
    if base == "f":
        return "f" + data.hex()
    if base == "b":
        return "b" + base64.b32encode(data).decode().rstrip("=").lower()
    if base == "z":
        return "z" + b58encode(data)
    if base == "u":
        return "u" + base64.urlsafe_b64encode(data).decode().rstrip("=")
    raise InvalidCIDError(f"unknown multibase {base!r}: use one of {', '.join(BASES)}")


def decode(text: str) -> bytes:
    """The bytes behind multibase ``text``; InvalidCIDError unless it is canonical."""
    if not isinstance(text, str) or not text:
        raise InvalidCIDError("a multibase string is a non-empty str")
    if len(text) > MAX_TEXT:
        raise InvalidCIDError(f"multibase text longer than {MAX_TEXT} characters")
    base, body = text[0], text[1:]
    chars = _CHARS.get(base)
    if chars is None:
        raise InvalidCIDError(f"unknown multibase prefix {base!r}: expected one of {BASES}")
    if not chars.fullmatch(body):
        raise InvalidCIDError(f"invalid character in multibase {base!r} text")
    try:
        if base == "f":
            data = bytes.fromhex(body)
        elif base == "b":
            data = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
        elif base == "z":
            data = b58decode(body)
        else:
            data = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise InvalidCIDError(f"malformed multibase {base!r} text") from None
    if encode(data, base) != text:
        raise InvalidCIDError(f"non-canonical multibase {base!r} text")
    return data
