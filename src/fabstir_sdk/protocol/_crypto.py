"""The E2EE primitives of the host protocol, as upstream defines them.

- Session init: ECDH on secp256k1 between a fresh ephemeral key and the host's static key
  (the X coordinate of the shared point), HKDF-SHA256 with the payload's salt (32 zero bytes)
  and info (empty), XChaCha20-Poly1305 with a random 24-byte nonce.
- The sender signs SHA-256 of the transcript
  ``"E2EEv1|" eph "|" recipient "|" salt "|" nonce "|" info ["|" aad]`` (raw bytes; the aad
  part only when non-empty) with its static key: 65 bytes ``r | s | recid``.
- Every later frame: XChaCha20-Poly1305 under the 32-byte session key.

HKDF is written out here (RFC 5869, a few lines of hmac) so the tests can check it against
``cryptography``'s independent implementation.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading

import coincurve
from nacl._sodium import ffi, lib  # type: ignore[import-not-found]  # ~8 us/call cheaper

from ..errors import FrameDecryptionError, HandshakeError

__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "ZERO_SALT",
    "address_of",
    "compressed_public_key",
    "ecdh_x",
    "hkdf_sha256",
    "open_aead",
    "random_nonce",
    "recover_public_key",
    "seal_aead",
    "sign_digest",
    "transcript_digest",
]

KEY_SIZE = 32
NONCE_SIZE = 24
SIGNATURE_SIZE = 65
TAG_SIZE = 16
ZERO_SALT = bytes(32)

if lib.sodium_init() < 0:  # pragma: no cover - libsodium refuses to start
    raise ImportError("libsodium failed to initialise")

_decrypt = lib.crypto_aead_xchacha20poly1305_ietf_decrypt
_unpack, _NULL = ffi.unpack, ffi.NULL
#: Ciphertexts up to this size are opened into a buffer kept per thread (a token's frame is
#: a few bytes: allocating its output each time cost more than decrypting it). Per thread,
#: since cffi calls release the GIL.
_SCRATCH_SIZE = 1 << 16
_scratch = threading.local()


def random_nonce() -> bytes:
    return os.urandom(NONCE_SIZE)


#: n, the order of secp256k1's group: a private key is an integer in [1, n).
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def hkdf_sha256(ikm: bytes, salt: bytes = ZERO_SALT, info: bytes = b"", length: int = 32) -> bytes:
    """RFC 5869 HKDF with SHA-256 (an empty salt means HashLen zero bytes, as the RFC says)."""
    prk = hmac.new(salt or ZERO_SALT, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def compressed_public_key(key: str | bytes) -> bytes:
    """A secp256k1 public key (33 or 65 bytes, raw or hex) in its 33-byte compressed form."""
    raw = _key_bytes(key)
    try:
        return coincurve.PublicKey(raw).format(compressed=True)
    except ValueError:
        raise HandshakeError("not a valid secp256k1 public key") from None


def _key_bytes(key: str | bytes) -> bytes:
    if isinstance(key, str):
        try:
            key = bytes.fromhex(key.removeprefix("0x"))
        except ValueError:
            raise HandshakeError("public key is not hex") from None
    if len(key) not in (33, 65):
        raise HandshakeError(f"public key must be 33 or 65 bytes, got {len(key)}")
    return key


def ecdh_x(private_key: bytes, public_key: bytes) -> bytes:
    """The X coordinate (32 bytes) of ``private_key * public_key``."""
    try:
        point = coincurve.PublicKey(public_key).multiply(private_key)
    except ValueError:
        raise HandshakeError("ECDH failed: invalid key") from None
    return point.format(compressed=True)[1:]


def transcript_digest(
    eph_pub: bytes, recipient_pub: bytes, salt: bytes, nonce: bytes, info: bytes, aad: bytes = b""
) -> bytes:
    """SHA-256 of the session-init transcript the sender signs."""
    parts = [b"E2EEv1|", eph_pub, b"|", recipient_pub, b"|", salt, b"|", nonce, b"|", info]
    if aad:
        parts += [b"|", aad]
    return hashlib.sha256(b"".join(parts)).digest()


def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """A 65-byte ``r | s | recid`` signature of a 32-byte digest (low-s, RFC 6979)."""
    return coincurve.PrivateKey(private_key).sign_recoverable(digest, hasher=None)


def recover_public_key(signature: bytes, digest: bytes) -> bytes:
    """The compressed public key that made ``signature`` over ``digest``.

    Accepts a recovery byte of 0..3 or Ethereum's 27..30.
    """
    if len(signature) != SIGNATURE_SIZE:
        raise HandshakeError(f"signature must be {SIGNATURE_SIZE} bytes, got {len(signature)}")
    recid = signature[64] - 27 if signature[64] >= 27 else signature[64]
    if not 0 <= recid <= 3:
        raise HandshakeError("signature recovery id must be 0..3 (or 27..30)")
    try:
        key = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([recid]), digest, hasher=None
        )
    except ValueError:
        raise HandshakeError("signature does not recover to a public key") from None
    return key.format(compressed=True)


def address_of(public_key: bytes) -> str:
    """The EIP-55 Ethereum address of a secp256k1 public key."""
    return _address(coincurve.PublicKey(public_key))


def address_of_secret(private_key: bytes) -> str:
    """The EIP-55 Ethereum address of a secp256k1 private key."""
    return _address(coincurve.PublicKey.from_secret(private_key))


def _address(public: coincurve.PublicKey) -> str:
    from eth_utils.crypto import keccak

    from ..chain.addresses import eip55

    return eip55("0x" + keccak(public.format(compressed=False)[1:])[12:].hex())


def seal_aead(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """XChaCha20-Poly1305 (libsodium's IETF construction): ciphertext then 16-byte tag."""
    if len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise ValueError("XChaCha20-Poly1305 needs a 32-byte key and a 24-byte nonce")
    out = ffi.new("unsigned char[]", len(plaintext) + TAG_SIZE)
    size = ffi.new("unsigned long long *")
    lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
        out, size, plaintext, len(plaintext), aad, len(aad), ffi.NULL, nonce, key
    )
    return bytes(ffi.buffer(out, size[0]))


def open_aead(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """The plaintext, or :class:`FrameDecryptionError` if the tag does not verify."""
    if len(nonce) != NONCE_SIZE:
        raise FrameDecryptionError(
            f"nonce must be {NONCE_SIZE} bytes, got {len(nonce)}", code="INVALID_NONCE_SIZE"
        )
    if len(key) != KEY_SIZE:
        raise ValueError("XChaCha20-Poly1305 needs a 32-byte key")
    if len(ciphertext) < TAG_SIZE:
        raise FrameDecryptionError("ciphertext is shorter than its 16-byte tag")
    # The plaintext is always the ciphertext less its tag, so no length out-parameter; a
    # small one is written to this thread's scratch buffer and copied out once (``char``,
    # so that ``ffi.unpack`` makes the bytes in one call): this runs once per streamed token.
    size = len(ciphertext)
    if size <= _SCRATCH_SIZE:
        try:
            out = _scratch.buffer
        except AttributeError:
            out = _scratch.buffer = ffi.new("char[]", _SCRATCH_SIZE)
    else:
        out = ffi.new("char[]", size)
    if _decrypt(out, _NULL, _NULL, ciphertext, size, aad, len(aad), nonce, key):
        raise FrameDecryptionError(
            "ciphertext does not authenticate (tampered, wrong key or wrong AAD)"
        )
    plaintext: bytes = _unpack(out, size - TAG_SIZE)
    return plaintext
