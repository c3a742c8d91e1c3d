"""Key derivation by BLAKE3 chaining, the S5 identity tree, and ed25519 key pairs.

``derive_hash_int(base, n)`` = BLAKE3(base ‖ n as 32 little-endian bytes) and
``derive_hash_string(base, s)`` = BLAKE3(base ‖ BLAKE3(s)), as the S5 key-derivation spec and
s5.js define them. The identity tree below the seed is the one lib5 and s5.js use, so the
sub-seed numbers mean the same thing here as there.
"""

from __future__ import annotations

from functools import cached_property

import blake3
from nacl.signing import SigningKey

from ..errors import ValidationError

__all__ = [
    "MKEY_ED25519",
    "S5Identity",
    "derive_hash_int",
    "derive_hash_string",
    "ed25519_public_key",
]

MKEY_ED25519 = 0xED

# Sub-seed numbers of the identity tree (lib5 identity constants).
_PUBLIC_SIGNING, _PUBLIC_ENCRYPTION, _PUBLIC_RESOLVER = 2, 3, 4
_STORAGE_ACCOUNTS, _HIDDEN_DB, _FILE_SYSTEM = 65, 66, 67


def derive_hash_int(base: bytes, tweak: int) -> bytes:
    return blake3.blake3(base + tweak.to_bytes(32, "little")).digest()


def derive_hash_string(base: bytes, tweak: bytes) -> bytes:
    return blake3.blake3(base + blake3.blake3(tweak).digest()).digest()


def ed25519_public_key(seed: bytes) -> bytes:
    """``0xed`` + the ed25519 public key of a 32-byte RFC 8032 seed (33 bytes)."""
    return bytes([MKEY_ED25519]) + bytes(SigningKey(seed).verify_key)


class S5Identity:
    """The secret tree of one S5 user, grown from a secret seed (at least 16 bytes).

    In the SDK the seed is ``AuthManager.get_s5_seed()``: HKDF of a wallet signature under its
    own domain string, so the tree is secret and never derivable from the address.
    """

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) < 16:
            raise ValidationError("an S5 identity seed is at least 16 secret bytes")
        self._seed = blake3.blake3(seed).digest()

    def __repr__(self) -> str:
        return "S5Identity(<secret>)"

    @classmethod
    def from_hex(cls, seed_hex: str) -> S5Identity:
        try:
            return cls(bytes.fromhex(seed_hex.removeprefix("0x")))
        except (ValueError, AttributeError):
            raise ValidationError("the S5 seed is hex text") from None

    @cached_property
    def _public_sub(self) -> bytes:
        main = derive_hash_int(self._seed, 0)
        return derive_hash_int(derive_hash_int(main, 1), 0)

    @cached_property
    def _private_sub(self) -> bytes:
        main = derive_hash_int(self._seed, 0)
        return derive_hash_int(derive_hash_int(main, 64), 0)

    def sub_seed(self, number: int) -> bytes:
        """Sub-seed ``number``: 2..63 from the public branch, 64..127 from the private one."""
        if not 0 <= number < 128:
            raise ValidationError("S5 sub-seed numbers are 0..127")
        branch = self._private_sub if number >= 64 else self._public_sub
        return derive_hash_int(branch, number)

    @property
    def storage_accounts_seed(self) -> bytes:
        return self.sub_seed(_STORAGE_ACCOUNTS)

    @property
    def file_system_seed(self) -> bytes:
        return self.sub_seed(_FILE_SYSTEM)

    @property
    def queue_key(self) -> bytes:
        """Seals this SDK's local queue of writes waiting for a portal (hidden-DB branch)."""
        return derive_hash_string(self.sub_seed(_HIDDEN_DB), b"fabstir-sdk/s5-queue/v1")
