"""The host's side of a session (:class:`HostSession`), the session init's crypto and the
frame helpers both sides share. The client's side is :class:`~._client.ClientSession`
(``_client.py``). Neither does I/O, so any WebSocket library can carry them.

Index rules (AAD): the client's n-th encrypted message of a session is sealed with
``message_{n}`` (n from 0) and the host accepts exactly the next n, so a replayed or reordered
message is refused. Each response's chunks are sealed with ``chunk_{i}`` (i from 0 in every
response) and its end with ``encrypted_response_final``; the client accepts chunks only in
order. A new session init brings a new session key, so indexes restart safely.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import NamedTuple

import coincurve
from eth_utils.crypto import keccak

from ..errors import HandshakeError, MessageIndexError, ProtocolError, ValidationError
from . import _crypto as c
from ._messages import (
    E2EE_ALG,
    EncryptedMessage,
    EncryptedSessionInit,
    EphemeralCipherPayload,
    PromptRequest,
    SessionInitData,
    hex_bytes,
    same_hex,
)

__all__ = [
    "FINAL_AAD",
    "HostSession",
    "OpenedInit",
    "ResponseDone",
    "TokenChunk",
    "message_aad",
    "chunk_aad",
    "SIGNED_MESSAGE_ALG",
    "PresignedInit",
    "PreparedInit",
    "open_session_init",
    "prepare_session_init",
    "presign_session_init",
    "seal_prepared",
    "seal_session_init",
]

FINAL_AAD = b"encrypted_response_final"


def message_aad(n: int) -> bytes:
    return f"message_{n}".encode()


def chunk_aad(i: int) -> bytes:
    return b"chunk_%d" % i


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _private_key(key: bytes | str, what: str) -> bytes:
    if isinstance(key, str):
        try:
            key = bytes.fromhex(key.removeprefix("0x"))
        except ValueError:
            raise ValidationError(f"{what} must be 32 bytes or 64 hex digits") from None
    if not isinstance(key, bytes) or len(key) != 32:
        raise ValidationError(f"{what} must be 32 bytes or 64 hex digits")
    if not 0 < int.from_bytes(key, "big") < c.SECP256K1_ORDER:  # what libsecp256k1 checks
        raise ValidationError(f"{what} is not a valid secp256k1 key")
    return key


# ---------------------------------------------------------------------- session init


#: The ``alg`` of an init whose transcript digest is signed as an EIP-191 message (what a
#: wallet or signer service signs) instead of bare: our host recovers the signer that way.
SIGNED_MESSAGE_ALG = E2EE_ALG + "+eip191-signature"


@dataclass(frozen=True, slots=True)
class PresignedInit:
    """An init's ephemeral key and nonce chosen ahead, and the wallet's EIP-191 signature of
    their transcript: a signer outside the process (a coroutine away) signs the init this way.
    It serves one init only (its key and nonce must never be used twice)."""

    ephemeral_key: bytes = field(repr=False)
    nonce: bytes
    signature: bytes = field(repr=False)


def presign_session_init(recipient_public_key: bytes | str) -> tuple[bytes, bytes, bytes]:
    """``(ephemeral key, nonce, digest)``: sign ``digest`` as an EIP-191 message and give all
    three to :class:`PresignedInit`."""
    recipient = c.compressed_public_key(recipient_public_key)
    eph = coincurve.PrivateKey()
    nonce = c.random_nonce()
    digest = c.transcript_digest(
        eph.public_key.format(compressed=True), recipient, c.ZERO_SALT, nonce, b""
    )
    return eph.secret, nonce, digest


def _eip191(digest: bytes) -> bytes:
    return keccak(b"\x19Ethereum Signed Message:\n32" + digest)


@dataclass(frozen=True, slots=True)
class PreparedInit:
    """All of an init's crypto that does not depend on what it seals: the ephemeral key's
    public half, the nonce, the key agreed with the host (``key``) and the transcript's
    signature. Made before the session's job exists (only the sealed plaintext names the
    job), so that sealing once the job is known is one AEAD encryption. One init only."""

    recipient: bytes
    eph_pub: bytes
    nonce: bytes
    key: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    alg: str
    aad: bytes = b""


def prepare_session_init(
    recipient_public_key: bytes | str,
    *,
    sender_private_key: bytes | None = None,
    aad: bytes = b"",
    presigned: PresignedInit | None = None,
    _ephemeral_key: bytes | None = None,
    _nonce: bytes | None = None,
) -> PreparedInit:
    """The key agreement with the host's static key and the transcript's signature (with
    ``sender_private_key``, or the ``presigned`` one), ahead of the plaintext: see
    :func:`seal_prepared`. The ephemeral key and nonce are fresh unless a test fixes them."""
    if presigned is not None:
        _ephemeral_key, _nonce = presigned.ephemeral_key, presigned.nonce
    recipient = c.compressed_public_key(recipient_public_key)
    eph = coincurve.PrivateKey(_ephemeral_key) if _ephemeral_key else coincurve.PrivateKey()
    eph_pub = eph.public_key.format(compressed=True)
    salt, info = c.ZERO_SALT, b""
    nonce = _nonce or c.random_nonce()
    key = c.hkdf_sha256(c.ecdh_x(eph.secret, recipient), salt, info)
    if presigned is not None:
        if aad:
            raise ValidationError("a presigned init has no AAD")
        signature, alg = presigned.signature, SIGNED_MESSAGE_ALG
    elif sender_private_key is not None:
        digest = c.transcript_digest(eph_pub, recipient, salt, nonce, info, aad)
        signature, alg = c.sign_digest(sender_private_key, digest), E2EE_ALG
    else:
        raise ValidationError("a session init needs sender_private_key or presigned")
    return PreparedInit(recipient, eph_pub, nonce, key, signature, alg, aad)


def seal_prepared(prepared: PreparedInit, plaintext: bytes) -> EphemeralCipherPayload:
    """Encrypt ``plaintext`` under a :class:`PreparedInit`: the init's payload."""
    signature = prepared.signature
    return EphemeralCipherPayload(
        eph_pub_hex=prepared.eph_pub.hex(),
        salt_hex=c.ZERO_SALT.hex(),
        nonce_hex=prepared.nonce.hex(),
        ciphertext_hex=c.seal_aead(prepared.key, prepared.nonce, plaintext, prepared.aad).hex(),
        signature_hex=signature.hex(),
        recid=signature[64] - 27 if signature[64] >= 27 else signature[64],
        alg=prepared.alg,
        info="",
        aad_hex=prepared.aad.hex(),
    )


def seal_session_init(
    plaintext: bytes,
    *,
    recipient_public_key: bytes | str,
    sender_private_key: bytes | None = None,
    aad: bytes = b"",
    presigned: PresignedInit | None = None,
) -> EphemeralCipherPayload:
    """Encrypt ``plaintext`` to the host's static key and sign the transcript (with
    ``sender_private_key``, or the ``presigned`` signature): :func:`prepare_session_init`
    then :func:`seal_prepared`, with a fresh ephemeral key and nonce."""
    prepared = prepare_session_init(
        recipient_public_key, sender_private_key=sender_private_key, aad=aad, presigned=presigned
    )
    return seal_prepared(prepared, plaintext)


def open_session_init(
    payload: EphemeralCipherPayload,
    *,
    recipient_private_key: bytes,
    recipient_public_key: bytes | None = None,
) -> tuple[bytes, bytes]:
    """Check the signature and decrypt: ``(plaintext, sender's compressed public key)``.

    ``recipient_public_key``: the compressed public half of ``recipient_private_key``, when
    the caller keeps it (a host opening many inits); else it is derived (~55 us).
    """
    plaintext, sender, _ = _open_init(payload, recipient_private_key, recipient_public_key)
    return plaintext, sender


def _open_init(
    payload: EphemeralCipherPayload, private_key: bytes, public_key: bytes | None
) -> tuple[bytes, bytes, bytes]:
    """:func:`open_session_init`, plus the init's ephemeral public key (compressed)."""
    eph_pub = c.compressed_public_key(hex_bytes(payload.eph_pub_hex))
    recipient = public_key or coincurve.PrivateKey(private_key).public_key.format(compressed=True)
    salt, info, aad = (
        hex_bytes(payload.salt_hex),
        hex_bytes(payload.info),
        hex_bytes(payload.aad_hex),
    )
    nonce = hex_bytes(payload.nonce_hex)
    if len(nonce) != c.NONCE_SIZE:
        raise HandshakeError(
            f"nonce must be {c.NONCE_SIZE} bytes, got {len(nonce)}", code="INVALID_NONCE_SIZE"
        )
    if len(salt) > 64 or len(info) > 256:
        raise HandshakeError("salt or info is too long")
    signature = hex_bytes(payload.signature_hex)
    digest = c.transcript_digest(eph_pub, recipient, salt, nonce, info, aad)
    if payload.alg == SIGNED_MESSAGE_ALG:  # signed by a wallet, as a message
        digest = _eip191(digest)
    sender = c.recover_public_key(signature, digest)
    key = c.hkdf_sha256(c.ecdh_x(private_key, eph_pub), salt, info)
    plaintext = c.open_aead(key, nonce, hex_bytes(payload.ciphertext_hex), aad)
    return plaintext, sender, eph_pub


@dataclass(frozen=True, slots=True)
class OpenedInit:
    """A verified, decrypted session init, as the host sees it."""

    data: SessionInitData = field(repr=False)  # holds the session key
    client_public_key: bytes
    client_address: str
    session_id: str
    job_id: int
    chain_id: int | None
    #: The init's ephemeral public key (compressed): bound by the signature, so a replayed
    #: init repeats it, which is how the host recognizes one.
    ephemeral_public_key: bytes = b""


# ---------------------------------------------------------------------- events


class TokenChunk(NamedTuple):
    """Decrypted (or plaintext) text of one streamed chunk.

    A named tuple, not a frozen dataclass: one is made per streamed token, and a tuple is
    made several times faster (a frozen dataclass sets each field through
    ``object.__setattr__``).
    """

    text: str
    index: int  # type: ignore[assignment]  # the field, not tuple.index()
    tokens: int
    final: bool
    id: str | int | None = None


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """The response is complete; ``stream_end`` with the usage follows."""

    finish_reason: str
    id: str | int | None = None


def _utf8(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise ProtocolError("decrypted text is not UTF-8") from None


# Shared with the client's state machine (protocol/_client.py).
dumps = _dumps
private_key_bytes = _private_key
utf8 = _utf8


# ---------------------------------------------------------------------- host


class HostSession:
    """The host's side of one encrypted session key: opens prompts, seals the response.

    A client may re-key on the same connection (upstream's sends a new init before every
    prompt): the host then makes a new HostSession, whose indexes start at 0 under the new
    key, and drops the old one, so frames sealed under the old key no longer open.
    """

    def __init__(self, session_key: bytes, *, session_id: str) -> None:
        if len(session_key) != c.KEY_SIZE:
            raise ValidationError("session_key must be 32 bytes")
        self._key = session_key
        self.session_id = session_id
        self._next_message = 0
        self._next_chunk = 0

    def __repr__(self) -> str:
        return f"HostSession(session_id={self.session_id!r}, next_message={self._next_message})"

    @classmethod
    def accept(
        cls,
        init: EncryptedSessionInit,
        *,
        host_private_key: bytes,
        host_public_key: bytes | None = None,
    ) -> tuple[HostSession, OpenedInit]:
        """Verify and decrypt an init; the caller still checks the job on chain.
        ``host_public_key``: as :func:`open_session_init`'s ``recipient_public_key``."""
        plaintext, client_key, eph_pub = _open_init(init.payload, host_private_key, host_public_key)
        try:
            data = SessionInitData.model_validate_json(plaintext)
        except ValueError:
            raise HandshakeError("session init plaintext is not the expected JSON") from None
        if data.job_id != init.job_id:
            raise HandshakeError(
                f"encrypted jobId {data.job_id} differs from the frame's job_id {init.job_id}"
            )
        assert init.session_id is not None
        opened = OpenedInit(
            data=data,
            client_public_key=client_key,
            client_address=c.address_of(client_key),
            session_id=init.session_id,
            job_id=init.job_number,
            chain_id=init.chain_id,
            ephemeral_public_key=eph_pub,
        )
        return cls(hex_bytes(data.session_key_hex), session_id=init.session_id), opened

    def open_message(self, message: EncryptedMessage) -> PromptRequest:
        """Decrypt the next prompt: only ``message_{n}`` for the expected n is accepted."""
        payload = message.payload
        expected = self._next_message
        aad = message_aad(expected)
        if payload.aad_hex and not same_hex(payload.aad_hex, aad):
            sent = hex_bytes(payload.aad_hex)[:40].decode("ascii", "replace")
            raise MessageIndexError(f"message AAD {sent!r} where message_{expected} was due")
        plaintext = c.open_aead(
            self._key, hex_bytes(payload.nonce_hex), hex_bytes(payload.ciphertext_hex), aad
        )
        self._next_message = expected + 1
        text = _utf8(plaintext)
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):  # upstream: a bare string is the prompt itself
            return PromptRequest(prompt=text)
        try:
            return PromptRequest.model_validate(obj)
        except ValueError as exc:
            raise ProtocolError(f"invalid prompt request: {_first_error(exc)}") from None

    def chunk_frame(
        self, text: str, *, tokens: int = 1, final: bool = False, id: str | int | None = None
    ) -> str:
        """The next ``encrypted_chunk`` of the current response."""
        index = self._next_chunk
        aad = chunk_aad(index)
        nonce = c.random_nonce()
        ciphertext = c.seal_aead(self._key, nonce, text.encode(), aad)
        self._next_chunk = index + 1
        frame: dict[str, object] = {
            "type": "encrypted_chunk",
            "tokens": tokens,
            "session_id": self.session_id,
            "payload": {
                "ciphertextHex": ciphertext.hex(),
                "nonceHex": nonce.hex(),
                "aadHex": aad.hex(),
                "index": index,
            },
        }
        if id is not None:
            frame["id"] = id
        if final:
            frame["final"] = True
        return _dumps(frame)

    def response_frame(self, finish_reason: str, *, id: str | int | None = None) -> str:
        """``encrypted_response`` (the finish reason); the next response starts at chunk 0."""
        nonce = c.random_nonce()
        ciphertext = c.seal_aead(self._key, nonce, finish_reason.encode(), FINAL_AAD)
        self._next_chunk = 0
        frame: dict[str, object] = {
            "type": "encrypted_response",
            "session_id": self.session_id,
            "payload": {
                "ciphertextHex": ciphertext.hex(),
                "nonceHex": nonce.hex(),
                "aadHex": FINAL_AAD.hex(),
            },
        }
        if id is not None:
            frame["id"] = id
        return _dumps(frame)

    def reset_response(self) -> None:
        """Forget a response cut short (cancelled): the next one starts at chunk 0."""
        self._next_chunk = 0


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return str(exc)
