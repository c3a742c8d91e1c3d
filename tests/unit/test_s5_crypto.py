"""Encryption formats: chunked blobs with index nonces, padded mutable records."""

import pytest
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt as xopen
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt as xseal

from fabstir_sdk.errors import DecryptionError, PayloadTooLargeError, S5FormatError
from fabstir_sdk.s5 import decrypt_blob, decrypt_mutable, encrypt_blob, encrypt_mutable, pad_size
from fabstir_sdk.s5._crypto import ChunkDecryptor, encrypted_size, is_padded

KEY = bytes(range(32))
KIB = 1024


@pytest.mark.parametrize(
    ("size", "padded_kib"),
    # The spec's examples (1 KiB -> 4, 5 KiB -> 8, 105 KiB -> 112) and its table's edges.
    [
        (1, 4),
        (1 * KIB, 4),
        (5 * KIB, 8),
        (105 * KIB, 112),
        (80 * KIB, 80),
        (80 * KIB + 1, 88),
        (160 * KIB, 160),
        (160 * KIB + 1, 176),
        (320 * KIB + 1, 352),
    ],
)
def test_pad_blocks(size, padded_kib):
    assert pad_size(size) == padded_kib * KIB
    assert is_padded(padded_kib * KIB)
    assert not is_padded(padded_kib * KIB + 1)


def test_mutable_record_layout():
    nonce = bytes(range(24))
    record = encrypt_mutable(KEY, b"directory", nonce=nonce)
    assert len(record) == 4096 and record[:2] == b"\x8d\x01" and record[2:26] == nonce
    plain = xopen(record[26:], None, nonce, KEY)
    assert plain == (9).to_bytes(4, "little") + b"directory" + bytes(4096 - 46 - 9)
    assert decrypt_mutable(KEY, record) == b"directory"


def test_mutable_records_use_fresh_nonces_and_refuse_wrong_keys():
    a, b = encrypt_mutable(KEY, b"same"), encrypt_mutable(KEY, b"same")
    assert a != b
    with pytest.raises(DecryptionError):
        decrypt_mutable(bytes(32), a)
    with pytest.raises(S5FormatError):
        decrypt_mutable(KEY, b"\x8d\x02" + a[2:])  # unknown version
    with pytest.raises(S5FormatError):
        decrypt_mutable(KEY, a[:-1])  # not a pad block


def test_mutable_limit_is_one_mib():
    assert decrypt_mutable(KEY, encrypt_mutable(KEY, bytes(1 << 20))) == bytes(1 << 20)
    with pytest.raises(PayloadTooLargeError):
        encrypt_mutable(KEY, bytes((1 << 20) + 1))


def test_chunks_use_index_nonces():
    data = bytes(range(256)) * 2048 + b"tail"  # 512 KiB + 4: three chunks
    sealed = encrypt_blob(KEY, data)
    assert len(sealed) == len(data) + 3 * 16 == encrypted_size(len(data))
    chunk = 256 * KIB + 16
    second = sealed[chunk : 2 * chunk]
    assert xopen(second, None, (1).to_bytes(24, "little"), KEY) == data[256 * KIB : 512 * KIB]
    assert sealed[2 * chunk :] == xseal(b"tail", None, (2).to_bytes(24, "little"), KEY)
    assert decrypt_blob(KEY, sealed, len(data)) == data


def test_empty_blob_is_one_sealed_chunk():
    assert encrypt_blob(KEY, b"") == xseal(b"", None, bytes(24), KEY)
    assert decrypt_blob(KEY, encrypt_blob(KEY, b""), 0) == b""


def test_decryptor_accepts_any_piece_sizes():
    data = bytes(range(251)) * 5000
    sealed = encrypt_blob(KEY, data, chunk_size=4096)
    dec = ChunkDecryptor(KEY, len(data), chunk_size=4096)
    for i in range(0, len(sealed), 999):
        dec.feed(sealed[i : i + 999])
    assert dec.finish() == data


def test_wrong_key_truncation_reordering_are_decryption_errors():
    data = b"x" * (300 * KIB)
    sealed = encrypt_blob(KEY, data)
    with pytest.raises(DecryptionError):
        decrypt_blob(bytes(32), sealed, len(data))
    with pytest.raises(DecryptionError):
        decrypt_blob(KEY, sealed[: 256 * KIB + 16], len(data))  # last chunk dropped
    with pytest.raises(DecryptionError):
        decrypt_blob(KEY, sealed + b"\x00", len(data))
    first, rest = sealed[: 256 * KIB + 16], sealed[256 * KIB + 16 :]
    with pytest.raises(DecryptionError):
        decrypt_blob(KEY, rest + first, len(data))
