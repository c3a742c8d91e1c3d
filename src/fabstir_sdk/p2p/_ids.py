"""Peer ids, multiaddrs and DHT keys, checked without libp2p (sans-I/O).

Bad input must fail with a typed error before a byte reaches the network, and py-libp2p's own
parsers accept too much (``ID.from_base58`` takes any base58 text), so the checks live here.
"""

from __future__ import annotations

import base64
import hashlib

from .._install_hints import pip_install
from ..chain.model_id import model_id as to_model_id
from ..errors import InvalidMultiaddrError, InvalidPeerIdError, P2PUnavailableError

__all__ = [
    "MISSING_LIBP2P",
    "MODEL_KEY_PREFIX",
    "check_multiaddr",
    "check_peer_id",
    "model_key",
]

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_IDENTITY, _SHA2_256 = 0x00, 0x12
_MAX_INLINE_KEY = 42  # libp2p spec: keys up to 42 bytes are inlined with the identity hash
_MAX_PEER_ID_TEXT = 128
_DIALABLE_HOSTS = ("ip4", "ip6", "dns", "dns4", "dns6")

MISSING_LIBP2P = (
    f"P2P discovery needs py-libp2p, which is not installed: {pip_install('p2p')} (the p2p extra)"
)

#: Namespace of the DHT provider keys; a record per model lives under this prefix.
MODEL_KEY_PREFIX = b"fabstir:model:"


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        digit = _B58_INDEX.get(char)
        if digit is None:
            raise ValueError(f"{char!r} is not a base58 digit")
        number = number * 58 + digit
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    zeros = len(text) - len(text.lstrip("1"))
    return b"\x00" * zeros + body


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 63:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError("truncated varint")


def check_peer_id(peer_id: object) -> str:
    """``peer_id`` if it is a base58 multihash peer id (``12D3KooW...`` or ``Qm...``)."""
    if not isinstance(peer_id, str) or not 0 < len(peer_id) <= _MAX_PEER_ID_TEXT:
        raise InvalidPeerIdError(f"peer id must be a non-empty base58 string, got {peer_id!r}")
    try:
        raw = _b58decode(peer_id)
        code, pos = _uvarint(raw, 0)
        length, pos = _uvarint(raw, pos)
    except ValueError as exc:
        raise InvalidPeerIdError(f"not a peer id: {peer_id!r} ({exc})") from None
    digest = raw[pos:]
    if len(digest) != length:
        raise InvalidPeerIdError(f"not a peer id: {peer_id!r} (multihash length mismatch)")
    if code == _SHA2_256 and length == 32:
        return peer_id
    if code == _IDENTITY and 0 < length <= _MAX_INLINE_KEY:
        return peer_id
    raise InvalidPeerIdError(f"not a peer id: {peer_id!r} (multihash code {code:#x})")


def check_multiaddr(address: object, *, need_peer: bool = True) -> tuple[str, str | None]:
    """``(address, peer id)`` for a dialable TCP multiaddr, else :class:`InvalidMultiaddrError`.

    With ``need_peer`` the address must end in ``/p2p/<peer id>``: dialing a peer whose
    identity is unknown would let anyone on that port answer for it.
    """
    if not isinstance(address, str) or not address.startswith("/"):
        raise InvalidMultiaddrError(
            f"multiaddr must be a string like /ip4/1.2.3.4/tcp/4001/p2p/<id>, got {address!r}"
        )
    try:
        from multiaddr import Multiaddr  # type: ignore[import-untyped]
    except ImportError:
        raise P2PUnavailableError(MISSING_LIBP2P) from None
    try:
        names = [p.name for p in Multiaddr(address).protocols()]
    except Exception as exc:
        raise InvalidMultiaddrError(f"not a multiaddr: {address!r} ({exc})") from None
    peer: str | None = None
    if names and names[-1] == "p2p":
        peer = check_peer_id(address.rsplit("/", 1)[1])
        names = names[:-1]
    if len(names) != 2 or names[0] not in _DIALABLE_HOSTS or names[1] != "tcp":
        raise InvalidMultiaddrError(
            f"only /ip4|ip6|dns*/<host>/tcp/<port>[/p2p/<id>] is supported, got {address!r}"
        )
    if need_peer and peer is None:
        raise InvalidMultiaddrError(f"multiaddr must end in /p2p/<peer id>: {address!r}")
    return address, peer


def model_key(model: str) -> str:
    """The DHT provider key of ``model``: a CIDv1 (raw, sha2-256) of its namespaced id.

    A CID string is what go, js and rust DHT peers hash for provider records, so any
    implementation derives the same key: ``sha256(b"fabstir:model:" + <0x bytes32 id>)``.
    """
    digest = hashlib.sha256(MODEL_KEY_PREFIX + to_model_id(model).encode()).digest()
    cid = bytes([0x01, 0x55, _SHA2_256, len(digest)]) + digest
    return "b" + base64.b32encode(cid).decode().lower().rstrip("=")
