"""Registry entries: byte layout as the S5 spec, ed25519 as RFC 8032, the limits."""

import pytest
from nacl.signing import SigningKey

from fabstir_sdk.errors import PayloadTooLargeError, S5FormatError
from fabstir_sdk.s5 import RegistryEntry
from fabstir_sdk.s5._keys import ed25519_public_key

# RFC 8032 section 7.1, TEST 1.
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"


def test_public_key_is_rfc8032_with_the_ed_prefix():
    assert ed25519_public_key(RFC_SEED).hex() == "ed" + RFC_PUBLIC


def test_layout_byte_for_byte():
    data = bytes.fromhex("1e" + "ab" * 32)
    entry = RegistryEntry.sign(RFC_SEED, 258, data)
    signed = b"\x07" + (258).to_bytes(8, "little") + bytes([33]) + data
    signature = SigningKey(RFC_SEED).sign(signed).signature
    assert entry.to_bytes() == (
        b"\x07"
        + bytes.fromhex("ed" + RFC_PUBLIC)
        + bytes.fromhex("0201000000000000")
        + b"\x21"
        + data
        + signature
    )
    assert len(entry.to_bytes()) == 1 + 33 + 8 + 1 + 33 + 64
    assert RegistryEntry.from_bytes(entry.to_bytes()) == entry
    assert entry.verify()


def test_tampered_entries_do_not_verify():
    entry = RegistryEntry.sign(RFC_SEED, 1, b"data")
    for changed in (
        RegistryEntry(entry.pk, 2, entry.data, entry.signature),
        RegistryEntry(entry.pk, 1, b"date", entry.signature),
        RegistryEntry(ed25519_public_key(bytes(32)), 1, entry.data, entry.signature),
        RegistryEntry(entry.pk, 1, entry.data, bytes(64)),
    ):
        assert not changed.verify()


def test_data_limit_is_64_bytes():
    assert RegistryEntry.sign(RFC_SEED, 0, b"x" * 64).data == b"x" * 64
    with pytest.raises(PayloadTooLargeError) as err:
        RegistryEntry.sign(RFC_SEED, 0, b"x" * 65)
    assert err.value.size == 65 and err.value.limit == 64


def test_revision_range():
    assert RegistryEntry.sign(RFC_SEED, 2**64 - 1, b"").revision == 2**64 - 1
    for bad in (-1, 2**64, True):
        with pytest.raises(S5FormatError):
            RegistryEntry.sign(RFC_SEED, bad, b"")


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x08" + bytes(106),  # a stream message, not an entry
        b"\x07" + bytes(105),  # too short
        RegistryEntry.sign(RFC_SEED, 1, b"abc").to_bytes()[:-1],  # cut signature
        RegistryEntry.sign(RFC_SEED, 1, b"abc").to_bytes() + b"\x00",  # trailing byte
        b"\x07\x01" + bytes(105),  # key type 0x01 is not ed25519
    ],
)
def test_malformed_wire_bytes(raw):
    with pytest.raises(S5FormatError):
        RegistryEntry.from_bytes(raw)
