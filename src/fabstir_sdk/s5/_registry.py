"""Registry entries: small signed, versioned pointers under an ed25519 public key.

Wire form: ``0x07`` · public key (33 bytes: ``0xed`` + ed25519 key) · revision (u64
little-endian) · data length (1 byte) · data · signature (64). The signature covers
``0x07`` · revision · length · data. A store keeps only the highest revision; an equal or
lower one is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from ..errors import PayloadTooLargeError, S5FormatError
from ._keys import MKEY_ED25519

__all__ = ["MAX_DATA_SIZE", "MAX_REVISION", "RECORD_TYPE_REGISTRY_ENTRY", "RegistryEntry"]

RECORD_TYPE_REGISTRY_ENTRY = 0x07
#: lib5, s5.js and libs5 accept up to 64 bytes (the draft spec says 48).
MAX_DATA_SIZE = 64
MAX_REVISION = (1 << 64) - 1
_HEAD = 1 + 33 + 8 + 1


def _signed_message(revision: int, data: bytes) -> bytes:
    return (
        bytes([RECORD_TYPE_REGISTRY_ENTRY])
        + revision.to_bytes(8, "little")
        + bytes([len(data)])
        + data
    )


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    pk: bytes
    revision: int
    data: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.pk) != 33 or self.pk[0] != MKEY_ED25519:
            raise S5FormatError("a registry key is 0xed + a 32-byte ed25519 public key")
        if isinstance(self.revision, bool) or not 0 <= self.revision <= MAX_REVISION:
            raise S5FormatError(f"registry revision {self.revision!r} is outside 0..2^64-1")
        if len(self.data) > MAX_DATA_SIZE:
            raise PayloadTooLargeError(len(self.data), MAX_DATA_SIZE, "registry entry data")
        if len(self.signature) != 64:
            raise S5FormatError("a registry signature is 64 bytes")

    @classmethod
    def sign(cls, seed: bytes | SigningKey, revision: int, data: bytes) -> RegistryEntry:
        """A new entry signed with the ed25519 key of ``seed`` (32 bytes, or a SigningKey)."""
        key = seed if isinstance(seed, SigningKey) else SigningKey(seed)
        if len(data) > MAX_DATA_SIZE:
            raise PayloadTooLargeError(len(data), MAX_DATA_SIZE, "registry entry data")
        if isinstance(revision, bool) or not 0 <= revision <= MAX_REVISION:
            raise S5FormatError(f"registry revision {revision!r} is outside 0..2^64-1")
        signature = key.sign(_signed_message(revision, data)).signature
        return cls(bytes([MKEY_ED25519]) + bytes(key.verify_key), revision, data, signature)

    def verify(self) -> bool:
        try:
            VerifyKey(self.pk[1:]).verify(_signed_message(self.revision, self.data), self.signature)
        except (BadSignatureError, ValueError):
            return False
        return True

    def to_bytes(self) -> bytes:
        return (
            bytes([RECORD_TYPE_REGISTRY_ENTRY])
            + self.pk
            + self.revision.to_bytes(8, "little")
            + bytes([len(self.data)])
            + self.data
            + self.signature
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> RegistryEntry:
        """Parse the wire form; the signature is checked by :meth:`verify`, not here."""
        raw = bytes(raw)
        if len(raw) < _HEAD + 64 or raw[0] != RECORD_TYPE_REGISTRY_ENTRY:
            raise S5FormatError("not a registry entry (0x07 record of at least 107 bytes)")
        size = raw[_HEAD - 1]
        if size > MAX_DATA_SIZE:
            raise S5FormatError(f"registry entry data of {size} bytes (at most {MAX_DATA_SIZE})")
        if len(raw) != _HEAD + size + 64:
            raise S5FormatError(
                f"registry entry of {len(raw)} bytes does not fit its data length {size}"
            )
        return cls(
            pk=raw[1:34],
            revision=int.from_bytes(raw[34:42], "little"),
            data=raw[_HEAD : _HEAD + size],
            signature=raw[_HEAD + size :],
        )
