"""Blob identifiers against the S5 spec's vectors and s5.js' test vectors (restated here)."""

import pytest

from fabstir_sdk.errors import InvalidCIDError
from fabstir_sdk.s5 import BlobId, blob_id
from fabstir_sdk.s5._blob import encode_size
from fabstir_sdk.s5._multibase import encode

# s5-dev/docs src/spec/blobs.md: the BlobId of the 13 bytes "Hello, world!".
HELLO = {
    "f": "f5b821eede5c0b10f2ec4979c69b52f61e42ff5b413519ce09be0f14d098dcfe5f6f98d0d",
    "b": "blobb53pfycyq6lwes6ogtnjpmhsc75nucnizzye34dyu2cmnz7s7n6mnbu",
    "z": "zhJTU2Mz5tATfj9rc5xorsXiadvYq3idS4CznEfW9Zg9zfksX2",
    "u": "uW4Ie7eXAsQ8uxJecabUvYeQv9bQTUZzgm-DxTQmNz-X2-Y0N",
}
HELLO_HASH = "ede5c0b10f2ec4979c69b52f61e42ff5b413519ce09be0f14d098dcfe5f6f98d"

# julesl23/s5.js test/blob_identifier.test.ts: hash e40b87... (multihash 1e), size 5050.
S5JS_HASH = "e40b877081c208036d451b898700b4bf938792ffa3e4426f2bf871aa057d992b"
S5JS = {
    "f": "f5b821ee40b877081c208036d451b898700b4bf938792ffa3e4426f2bf871aa057d992bba13",
    "b": "blobb5zalq5yidqqianwukg4jq4aljp4tq6jp7i7eijxsx6drvicx3gjlxijq",
    "z": "z44t3p46N4Fmqc1STusbaEoZ2HeDCFNNFRGys8SJsDvV9kHyMUbt",
    "u": "uW4Ie5AuHcIHCCANtRRuJhwC0v5OHkv-j5EJvK_hxqgV9mSu6Ew",
}

# s5.js size-suffix vectors: 5b 82 + 32 zero bytes + size, in base32; the text starts with
# this prefix and ends with the suffix below.
SIZE_PREFIX = "blob" + "a" * 51
SIZE_SUFFIX = {
    0: "aa",
    1: "ab",
    42: "bk",
    255: "h7",
    256: "aaae",
    65535: "h774",
    65536: "aaaaaq",
    57124823: "gxu5tqg",
}


@pytest.mark.parametrize("base", sorted(HELLO))
def test_hello_world_vectors(base):
    bid = blob_id(b"Hello, world!")
    assert bid.hash.hex() == HELLO_HASH and bid.size == 13
    assert bid.to_string(base) == HELLO[base]
    assert BlobId.parse(HELLO[base]) == bid


def test_str_is_base32_and_bytes_layout():
    bid = blob_id(b"Hello, world!")
    assert str(bid) == HELLO["b"]
    assert bid.to_bytes() == bytes.fromhex("5b821e" + HELLO_HASH + "0d")
    assert bid.multihash == bytes.fromhex("1e" + HELLO_HASH)
    assert repr(bid) == f"BlobId('{HELLO['b']}')"


@pytest.mark.parametrize("base", sorted(S5JS))
def test_s5js_encoding_vectors(base):
    bid = BlobId(bytes.fromhex(S5JS_HASH), 5050)
    assert bid.to_string(base) == S5JS[base]
    decoded = BlobId.parse(S5JS[base])
    assert decoded.hash.hex() == S5JS_HASH and decoded.size == 5050


@pytest.mark.parametrize(("size", "suffix"), sorted(SIZE_SUFFIX.items()))
def test_s5js_size_suffix_vectors(size, suffix):
    raw = bytes([0x5B, 0x82]) + bytes(32) + encode_size(size)
    assert encode(raw, "b") == SIZE_PREFIX + suffix


def test_size_suffix_trims_trailing_zero_bytes():
    assert encode_size(0) == b"\x00"
    assert encode_size(256) == b"\x00\x01"
    assert encode_size(2**64 - 1) == b"\xff" * 8
    assert len(blob_id(b"x" * 300).to_bytes()) == 37


def test_legacy_raw_cid_with_0x1f_is_the_same_blob():
    bid = blob_id(b"Hello, world!")
    legacy = bytes.fromhex("261f" + HELLO_HASH + "0d")
    assert bid.to_legacy_bytes() == legacy
    assert BlobId.parse(legacy) == bid
    assert BlobId.parse(bid.legacy_cid()) == bid
    assert bid.legacy_cid().startswith("z")
    # A BlobId written with the legacy multihash code 0x1f parses too.
    assert BlobId.parse(bytes.fromhex("5b821f" + HELLO_HASH + "0d")) == bid


@pytest.mark.parametrize(
    "text",
    [
        "",
        "x" + HELLO["b"][1:],  # unknown multibase
        HELLO["b"].upper(),  # base32 is lowercase
        HELLO["f"][:-1],  # odd hex
        HELLO["f"] + " 00",  # stray characters
        HELLO["u"] + "=",  # padding
        HELLO["z"].replace("h", "0"),  # 0 is not base58
        "f5b831e" + HELLO_HASH + "0d",  # blob type 0x83 is reserved
        "f5b8212" + HELLO_HASH + "0d",  # sha2-256 is not supported
        "f5b821e" + HELLO_HASH,  # no size
        "f5b821e" + HELLO_HASH + "000000000000000001",  # 9-byte size
        "f5d1e" + HELLO_HASH,  # a directory, not a blob
        "b" + "a" * 600,  # too long
    ],
)
def test_malformed_identifiers_are_invalid_cid_errors(text):
    with pytest.raises(InvalidCIDError):
        BlobId.parse(text)


def test_invalid_cid_error_is_a_value_error_and_bad_fields_refused():
    with pytest.raises(ValueError):
        BlobId.parse(12)  # type: ignore[arg-type]
    with pytest.raises(InvalidCIDError):
        BlobId(b"short", 1)
    with pytest.raises(InvalidCIDError):
        BlobId(bytes(32), -1)
    with pytest.raises(InvalidCIDError):
        blob_id(b"").to_string("q")
