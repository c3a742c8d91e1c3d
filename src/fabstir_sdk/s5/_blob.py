"""Blob identifiers: the BLAKE3 hash and size that name (and verify) a blob of bytes.

Byte layout of a BlobId: ``0x5b 0x82`` (S5 blob, plaintext type), ``0x1e`` (BLAKE3 multihash),
the 32-byte hash, then the size as little-endian with trailing zero bytes trimmed (at least
one byte). The legacy raw CID still returned by some portals is ``0x26 0x1f <hash> <size>``;
both parse to the same :class:`BlobId`, and ``0x1f`` is read as BLAKE3 wherever ``0x1e`` is.
"""

from __future__ import annotations

from dataclasses import dataclass

import blake3

from ..errors import InvalidCIDError
from . import _multibase

__all__ = [
    "BLOB_MAGIC",
    "BLOB_TYPE_PLAIN",
    "LEGACY_RAW_CID",
    "MULTIHASH_BLAKE3",
    "MULTIHASH_BLAKE3_LEGACY",
    "BlobId",
    "blob_id",
    "decode_size",
    "encode_size",
]

BLOB_MAGIC = 0x5B
BLOB_TYPE_PLAIN = 0x82
LEGACY_RAW_CID = 0x26
MULTIHASH_BLAKE3 = 0x1E
MULTIHASH_BLAKE3_LEGACY = 0x1F
_BLAKE3_CODES = (MULTIHASH_BLAKE3, MULTIHASH_BLAKE3_LEGACY)
_MAX_SIZE = (1 << 64) - 1


def encode_size(size: int) -> bytes:
    """Little-endian, trailing zero bytes trimmed, one byte at least (size 0 is ``00``)."""
    if not 0 <= size <= _MAX_SIZE:
        raise InvalidCIDError(f"blob size {size} is outside 0..2^64-1")
    return size.to_bytes(8, "little").rstrip(b"\0") or b"\0"


def decode_size(raw: bytes) -> int:
    if not 1 <= len(raw) <= 8:
        raise InvalidCIDError(f"blob size field of {len(raw)} bytes (1..8 expected)")
    return int.from_bytes(raw, "little")


@dataclass(frozen=True, slots=True)
class BlobId:
    """A blob's BLAKE3 hash (32 bytes) and size; ``str()`` is the base32 form (``blob...``)."""

    hash: bytes
    size: int

    def __post_init__(self) -> None:
        if not isinstance(self.hash, bytes) or len(self.hash) != 32:
            raise InvalidCIDError("a BlobId hash is 32 bytes of BLAKE3")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise InvalidCIDError("a BlobId size is an int")
        encode_size(self.size)

    @property
    def multihash(self) -> bytes:
        """``0x1e`` + hash: what registry entries and directory links carry."""
        return bytes([MULTIHASH_BLAKE3]) + self.hash

    def to_bytes(self) -> bytes:
        return bytes([BLOB_MAGIC, BLOB_TYPE_PLAIN]) + self.multihash + encode_size(self.size)

    def to_legacy_bytes(self) -> bytes:
        """The legacy raw CID (``0x26 0x1f ...``) that Dart S5 nodes expect in URLs."""
        return bytes([LEGACY_RAW_CID, MULTIHASH_BLAKE3_LEGACY]) + self.hash + encode_size(self.size)

    def to_string(self, base: str = "b") -> str:
        """Multibase text: ``"b"`` base32 (default), ``"z"`` base58, ``"u"`` base64url, ``"f"``."""
        return _multibase.encode(self.to_bytes(), base)

    def legacy_cid(self) -> str:
        """The legacy raw CID in base58 (``z...``), as ``POST /s5/upload`` answers."""
        return _multibase.encode(self.to_legacy_bytes(), "z")

    def __str__(self) -> str:
        return self.to_string("b")

    def __repr__(self) -> str:
        return f"BlobId({self.to_string('b')!r})"

    @classmethod
    def from_bytes(cls, raw: bytes) -> BlobId:
        """Parse a BlobId (``5b 82 ...``) or a legacy raw CID (``26 ...``)."""
        raw = bytes(raw)
        if len(raw) >= 2 and raw[0] == BLOB_MAGIC:
            if raw[1] != BLOB_TYPE_PLAIN:
                raise InvalidCIDError(f"unsupported S5 blob type 0x{raw[1]:02x}")
            body = raw[2:]
        elif raw[:1] == bytes([LEGACY_RAW_CID]):
            body = raw[1:]
        else:
            raise InvalidCIDError("not a blob identifier: expected prefix 5b82 or 26")
        if len(body) < 34:
            raise InvalidCIDError("blob identifier too short for a hash and a size")
        if body[0] not in _BLAKE3_CODES:
            raise InvalidCIDError(f"unsupported multihash 0x{body[0]:02x} (BLAKE3 only)")
        return cls(body[1:33], decode_size(body[33:]))

    @classmethod
    def parse(cls, value: str | bytes | BlobId) -> BlobId:
        """Parse any multibase text (``f``/``b``/``z``/``u``) or the raw bytes of an id."""
        if isinstance(value, BlobId):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return cls.from_bytes(bytes(value))
        if not isinstance(value, str):
            raise InvalidCIDError(f"a blob id is text or bytes, not {type(value).__name__}")
        return cls.from_bytes(_multibase.decode(value.strip()))


def blob_id(data: bytes) -> BlobId:
    """The BlobId of ``data``: its BLAKE3 hash and length."""
    return BlobId(blake3.blake3(data).digest(), len(data))
