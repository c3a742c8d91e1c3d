"""Checkpoint deltas sealed to the user's recovery key (upstream node v8.12 format).

A host publishes each checkpoint's slice of the conversation so the user can recover it,
readable by the user alone: a fresh ephemeral key per delta, ECDH with the
``recoveryPublicKey`` the client sent in its session init, ``SHA-256(X)`` through
HKDF-SHA256 (zero salt, info ``checkpoint-delta-encryption-v1``), XChaCha20-Poly1305 without
AAD. The host signs ``keccak256(ciphertext)`` (EIP-191), so a delta cannot be swapped.

Envelope::

    {"encrypted": true, "version": 1, "userRecoveryPubKey": "0x02..",
     "ephemeralPublicKey": "0x03..", "nonce": "<hex 24 B>", "ciphertext": "<hex>",
     "hostSignature": "0x<65 B>"}
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import coincurve

from ..errors import FrameDecryptionError, ProtocolError
from . import _crypto as c

if TYPE_CHECKING:
    from ..chain.signer import Signer

__all__ = [
    "DELTA_INFO",
    "open_checkpoint_delta",
    "seal_checkpoint_delta",
    "seal_checkpoint_delta_signed",
]

DELTA_INFO = b"checkpoint-delta-encryption-v1"


def _key(private_key: bytes, public_key: bytes) -> bytes:
    shared = hashlib.sha256(c.ecdh_x(private_key, public_key)).digest()
    return c.hkdf_sha256(shared, b"", DELTA_INFO)


def _signed_digest(ciphertext: bytes) -> bytes:
    """EIP-191 ("personal_sign") hash of ``keccak256(ciphertext)``."""
    from eth_utils.crypto import keccak

    return keccak(b"\x19Ethereum Signed Message:\n32" + keccak(ciphertext))


def _seal(
    delta: dict[str, Any],
    recovery_public_key: str | bytes,
    ephemeral_key: bytes | None,
    nonce: bytes | None,
) -> tuple[dict[str, Any], bytes]:
    """The envelope without its signature, and the ciphertext to sign."""
    recipient = c.compressed_public_key(recovery_public_key)
    eph = coincurve.PrivateKey(ephemeral_key) if ephemeral_key else coincurve.PrivateKey()
    nonce = nonce or c.random_nonce()
    plaintext = json.dumps(delta, separators=(",", ":"), sort_keys=True).encode()
    ciphertext = c.seal_aead(_key(eph.secret, recipient), nonce, plaintext, b"")
    envelope = {
        "encrypted": True,
        "version": 1,
        "userRecoveryPubKey": "0x" + recipient.hex(),
        "ephemeralPublicKey": "0x" + eph.public_key.format(compressed=True).hex(),
        "nonce": nonce.hex(),
        "ciphertext": ciphertext.hex(),
    }
    return envelope, ciphertext


def seal_checkpoint_delta(
    delta: dict[str, Any],
    *,
    recovery_public_key: str | bytes,
    host_private_key: bytes,
    _ephemeral_key: bytes | None = None,
    _nonce: bytes | None = None,
) -> dict[str, Any]:
    """The envelope of ``delta`` for the holder of ``recovery_public_key``."""
    envelope, ciphertext = _seal(delta, recovery_public_key, _ephemeral_key, _nonce)
    signature = c.sign_digest(host_private_key, _signed_digest(ciphertext))
    envelope["hostSignature"] = "0x" + (signature[:64] + bytes([signature[64] + 27])).hex()
    return envelope


async def seal_checkpoint_delta_signed(
    delta: dict[str, Any],
    *,
    recovery_public_key: str | bytes,
    signer: Signer,
    _ephemeral_key: bytes | None = None,
    _nonce: bytes | None = None,
) -> dict[str, Any]:
    """:func:`seal_checkpoint_delta` signed by a wallet :class:`Signer` (the host's key may
    be in a signer service): it signs ``keccak256(ciphertext)`` as an EIP-191 message, which
    is the same signature."""
    from eth_utils.crypto import keccak

    envelope, ciphertext = _seal(delta, recovery_public_key, _ephemeral_key, _nonce)
    envelope["hostSignature"] = "0x" + (await signer.sign_message(keccak(ciphertext))).hex()
    return envelope


def open_checkpoint_delta(
    envelope: dict[str, Any], *, recovery_private_key: bytes
) -> tuple[dict[str, Any], str]:
    """``(delta, host address that signed it)``; FrameDecryptionError if it does not open."""
    try:
        eph = c.compressed_public_key(str(envelope["ephemeralPublicKey"]))
        nonce = bytes.fromhex(str(envelope["nonce"]).removeprefix("0x"))
        ciphertext = bytes.fromhex(str(envelope["ciphertext"]).removeprefix("0x"))
        signature = bytes.fromhex(str(envelope["hostSignature"]).removeprefix("0x"))
    except (KeyError, ValueError, TypeError):  # TypeError: not a mapping at all
        raise ProtocolError("not an encrypted checkpoint delta envelope") from None
    plaintext = c.open_aead(_key(recovery_private_key, eph), nonce, ciphertext, b"")
    signer = c.address_of(c.recover_public_key(signature, _signed_digest(ciphertext)))
    try:
        delta = json.loads(plaintext)
    except ValueError:
        raise FrameDecryptionError("the delta decrypts to something that is not JSON") from None
    if not isinstance(delta, dict):
        raise FrameDecryptionError("the delta is not a JSON object")
    return delta, signer
