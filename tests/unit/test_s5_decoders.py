"""Every decoder, fed anything, either parses or raises its one typed error."""

import contextlib

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from fabstir_sdk.errors import DecryptionError, InvalidCIDError, S5FormatError
from fabstir_sdk.s5 import BlobId, DirV1, RegistryEntry, decrypt_mutable, encrypt_mutable
from fabstir_sdk.s5._crypto import ChunkDecryptor
from fabstir_sdk.s5._multibase import decode, encode

KEY = bytes(32)
#: Applied per test, so other modules keep their own hypothesis settings.
fuzz = settings(max_examples=300, deadline=None)

cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.binary(max_size=40)
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.integers(0, 30) | st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=30,
)


@fuzz
@given(st.text(max_size=80))
def test_blob_id_parse_text(text):
    try:
        bid = BlobId.parse(text)
    except InvalidCIDError:
        return
    assert BlobId.parse(bid.to_string(text.strip()[0])) == bid


@fuzz
@given(st.binary(max_size=60))
def test_blob_id_parse_bytes(raw):
    try:
        bid = BlobId.parse(raw)
    except InvalidCIDError:
        return
    assert bid.hash in raw


@fuzz
@given(st.binary(min_size=32, max_size=32), st.integers(0, 2**64 - 1), st.sampled_from("bfzu"))
def test_blob_id_round_trips_in_every_base(digest, size, base):
    bid = BlobId(digest, size)
    assert BlobId.parse(bid.to_string(base)) == bid
    assert BlobId.parse(bid.legacy_cid()) == bid


@fuzz
@given(st.sampled_from("bfzu"), st.text(max_size=60))
def test_multibase_decode_is_canonical(base, body):
    try:
        data = decode(base + body)
    except InvalidCIDError:
        return
    assert encode(data, base) == base + body


@fuzz
@given(st.binary(max_size=200))
def test_registry_entry_from_bytes(raw):
    try:
        entry = RegistryEntry.from_bytes(raw)
    except S5FormatError:
        return
    assert entry.to_bytes() == raw


@fuzz
@given(st.binary(max_size=300))
def test_dirv1_from_arbitrary_bytes(raw):
    with contextlib.suppress(S5FormatError):
        DirV1.from_bytes(raw)


@fuzz
@given(cbor_values)
def test_dirv1_from_arbitrary_cbor(value):
    for shaped in (value, ["S5.pro", {}, value, {}], ["S5.pro", {}, {}, {"f": value}]):
        with contextlib.suppress(S5FormatError):
            DirV1.from_bytes(cbor2.dumps(shaped))


@fuzz
@given(st.binary(max_size=5000))
def test_decrypt_mutable_of_anything(raw):
    with contextlib.suppress(S5FormatError, DecryptionError):
        decrypt_mutable(KEY, raw)


@fuzz
@given(st.binary(max_size=100), st.integers(0, 64))
def test_mutable_round_trip_and_bit_flips(data, flip):
    record = encrypt_mutable(KEY, data)
    assert decrypt_mutable(KEY, record) == data
    damaged = bytearray(record)
    damaged[2 + flip] ^= 1
    try:
        decrypt_mutable(KEY, bytes(damaged))
    except DecryptionError:
        return
    raise AssertionError("a flipped nonce or ciphertext bit went unnoticed")


@fuzz
@given(st.binary(max_size=3000), st.integers(0, 3000))
def test_chunk_decryptor_of_anything(raw, size):
    dec = ChunkDecryptor(KEY, size, chunk_size=1024)
    try:
        dec.feed(raw)
        dec.finish()
    except DecryptionError:
        return
    raise AssertionError("random bytes decrypted")
