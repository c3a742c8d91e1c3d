"""Key derivation as the S5 spec defines it, and the identity tree."""

import blake3
import pytest

from fabstir_sdk.errors import ValidationError
from fabstir_sdk.s5 import S5Identity, derive_hash_int, derive_hash_string


def b3(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


def test_derive_hash_int_is_blake3_of_base_and_32_byte_le_tweak():
    base = bytes(range(32))
    assert derive_hash_int(base, 1) == b3(base + b"\x01" + bytes(31))
    assert derive_hash_int(base, 258) == b3(base + b"\x02\x01" + bytes(30))


def test_derive_hash_string_hashes_the_tweak_first():
    base = bytes(range(32))
    assert derive_hash_string(base, b"home") == b3(base + b3(b"home"))


def test_identity_tree_follows_lib5():
    seed = bytes(range(16))
    root = b3(seed)
    main = derive_hash_int(root, 0)
    private_sub = derive_hash_int(derive_hash_int(main, 64), 0)
    public_sub = derive_hash_int(derive_hash_int(main, 1), 0)
    ident = S5Identity(seed)
    assert ident.file_system_seed == derive_hash_int(private_sub, 67)
    assert ident.storage_accounts_seed == derive_hash_int(private_sub, 65)
    assert ident.sub_seed(2) == derive_hash_int(public_sub, 2)
    assert S5Identity.from_hex("0x" + seed.hex()).file_system_seed == ident.file_system_seed


def test_identity_hides_its_secrets():
    ident = S5Identity(b"s" * 32)
    assert repr(ident) == "S5Identity(<secret>)"
    with pytest.raises(ValidationError):
        S5Identity(b"short")
    with pytest.raises(ValidationError):
        S5Identity.from_hex("not hex")
    with pytest.raises(ValidationError):
        ident.sub_seed(128)
