"""S5 encryption, sans-I/O: chunked blobs (immutable) and padded records (mutable).

Both use XChaCha20-Poly1305 (IETF, 24-byte nonce, 16-byte tag) from libsodium via PyNaCl.

* Blobs: the plaintext is cut into 256 KiB chunks, each sealed with the blob's key and the
  chunk index (24-byte little-endian) as nonce; the ciphertext is the sealed chunks back to
  back. A key is random per blob version, so index nonces never repeat under one key.
  An empty plaintext is one sealed empty chunk, so even emptiness is authenticated.
* Mutable records (directories): ``0x8d 0x01`` · random nonce · seal(u32-LE length · data ·
  zero padding), padded so the whole record is a "pad block" size (4 KiB steps, growing).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt as _open,
)
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_encrypt as _seal,
)
from nacl.exceptions import CryptoError

from ..errors import DecryptionError, PayloadTooLargeError, S5FormatError

__all__ = [
    "CHUNK_SIZE",
    "KEY_SIZE",
    "MAX_MUTABLE_SIZE",
    "TAG_SIZE",
    "ChunkDecryptor",
    "decrypt_blob",
    "decrypt_mutable",
    "encrypt_blob",
    "encrypt_mutable",
    "encrypted_size",
    "is_padded",
    "iter_encrypt",
    "pad_size",
]

CHUNK_SIZE = 256 * 1024
KEY_SIZE = 32
NONCE_SIZE = 24
TAG_SIZE = 16
MUTABLE_HEADER = b"\x8d\x01"
#: Mutable payloads are limited to 1 MiB by the spec.
MAX_MUTABLE_SIZE = 1 << 20
_MUTABLE_OVERHEAD = TAG_SIZE + 4 + NONCE_SIZE + len(MUTABLE_HEADER)
_KIB = 1024


def pad_size(size: int) -> int:
    """The pad-block size for ``size`` bytes: 4 KiB steps to 80 KiB, 8 KiB to 160 KiB, ..."""
    n = 0
    while size > (80 * _KIB) << n:
        n += 1
    block = (4 * _KIB) << n
    return -(-size // block) * block


def is_padded(size: int) -> bool:
    return size > 0 and pad_size(size) == size


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        raise DecryptionError("an encryption key is 32 bytes")


def encrypt_mutable(key: bytes, data: bytes, *, nonce: bytes | None = None) -> bytes:
    """Seal a small record (at most 1 MiB) with a random nonce and pad-block padding."""
    _check_key(key)
    if len(data) > MAX_MUTABLE_SIZE:
        raise PayloadTooLargeError(len(data), MAX_MUTABLE_SIZE, "mutable record")
    nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
    body_size = pad_size(len(data) + _MUTABLE_OVERHEAD) - _MUTABLE_OVERHEAD
    plain = len(data).to_bytes(4, "little") + data + bytes(body_size - len(data))
    return MUTABLE_HEADER + nonce + _seal(plain, None, nonce, key)


def decrypt_mutable(key: bytes, record: bytes) -> bytes:
    _check_key(key)
    if not is_padded(len(record)) or len(record) < _MUTABLE_OVERHEAD:
        raise S5FormatError(f"a mutable record of {len(record)} bytes is not a pad-block size")
    if record[:2] != MUTABLE_HEADER:
        raise S5FormatError("not a mutable record (header 8d01 expected)")
    nonce = record[2 : 2 + NONCE_SIZE]
    try:
        plain = _open(record[2 + NONCE_SIZE :], None, nonce, key)
    except CryptoError:
        raise DecryptionError("record does not decrypt with this key") from None
    size = int.from_bytes(plain[:4], "little")
    if size > len(plain) - 4:
        raise S5FormatError("mutable record length field exceeds its content")
    return plain[4 : 4 + size]


def _nonce(index: int) -> bytes:
    return index.to_bytes(NONCE_SIZE, "little")


def _check_chunk_size(chunk_size: int) -> None:
    if chunk_size < 1024 or chunk_size & (chunk_size - 1):
        raise S5FormatError("the chunk size is a power of two of at least 1024")


def encrypted_size(size: int, chunk_size: int = CHUNK_SIZE) -> int:
    """Bytes of ciphertext for ``size`` bytes of plaintext (one tag per chunk, at least one)."""
    return size + TAG_SIZE * max(1, -(-size // chunk_size))


def iter_encrypt(key: bytes, data: bytes, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The sealed chunks of ``data``, one at a time (memory stays at one chunk)."""
    _check_key(key)
    _check_chunk_size(chunk_size)
    view = memoryview(data)
    chunks = max(1, -(-len(data) // chunk_size))
    for index in range(chunks):
        chunk = bytes(view[index * chunk_size : (index + 1) * chunk_size])
        yield _seal(chunk, None, _nonce(index), key)


def encrypt_blob(key: bytes, data: bytes, chunk_size: int = CHUNK_SIZE) -> bytes:
    return b"".join(iter_encrypt(key, data, chunk_size))


class ChunkDecryptor:
    """Opens a chunked ciphertext fed in pieces of any size; the plaintext builds in place.

    ``size`` is the expected plaintext size, so truncated or extended ciphertext fails too.
    """

    def __init__(self, key: bytes, size: int, chunk_size: int = CHUNK_SIZE) -> None:
        _check_key(key)
        _check_chunk_size(chunk_size)
        self._key = key
        self._sealed = chunk_size + TAG_SIZE
        self._expected = encrypted_size(size, chunk_size)
        self._size = size
        self._pending = bytearray()
        self._index = 0
        self._seen = 0
        self._out = io.BytesIO()

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        self._seen += len(view)
        if self._seen > self._expected:
            raise DecryptionError("ciphertext is longer than its plaintext size allows")
        if self._pending:
            need = self._sealed - len(self._pending)
            self._pending += view[:need]
            view = view[need:]
            if len(self._pending) < self._sealed:
                return
            self._open(bytes(self._pending))
            self._pending.clear()
        while len(view) >= self._sealed:
            self._open(bytes(view[: self._sealed]))
            view = view[self._sealed :]
        self._pending += view

    def _open(self, sealed: bytes) -> None:
        if len(sealed) < TAG_SIZE:
            raise DecryptionError("ciphertext is shorter than one sealed chunk")
        try:
            self._out.write(_open(sealed, None, _nonce(self._index), self._key))
        except CryptoError:
            raise DecryptionError(f"chunk {self._index} does not decrypt with this key") from None
        self._index += 1

    def finish(self) -> bytes:
        """The whole plaintext; DecryptionError if the ciphertext was cut short."""
        if self._pending or self._index == 0:
            self._open(bytes(self._pending))
            self._pending.clear()
        if self._seen != self._expected or self._out.tell() != self._size:
            raise DecryptionError("ciphertext does not match its plaintext size")
        return self._out.getvalue()


def decrypt_blob(key: bytes, data: bytes, size: int, chunk_size: int = CHUNK_SIZE) -> bytes:
    dec = ChunkDecryptor(key, size, chunk_size)
    dec.feed(data)
    return dec.finish()
