"""The host's E2EE key: the secret that opens session inits, kept apart from its wallet.

Clients encrypt each session init to the host's static key by ECDH, so the host must hold
that key's private scalar; a signer service only signs. The wallet (a key or a signer)
signs everything bearing the host's address; the E2EE key only decrypts (and seeds the
libp2p identity). Its public half is the ``publicKey`` the wallet publishes in the
registry, which is how every client finds it (docs/host.md, "The host's keys").
"""

from __future__ import annotations

import coincurve
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..chain.signer import Signer
from ..errors import ConfigError, NondeterministicSignerError
from ..protocol import EncryptedSessionInit, HostSession, OpenedInit

__all__ = ["HOST_E2EE_INFO", "HOST_E2EE_MESSAGE", "P2P_IDENTITY_INFO", "E2EEKey", "p2p_seed"]

#: The message a host's wallet signs (EIP-191) to derive its E2EE key when the wallet is a
#: signer service. Change it and every such host's ``publicKey`` changes.
HOST_E2EE_MESSAGE = (
    b"fabstir-sdk host E2EE key v1\n"
    b"Sign this only for your own Fabstir host: the signature opens the sessions sent to it."
)
#: HKDF ``info`` of that derivation (its own domain: no other SDK key can equal it).
HOST_E2EE_INFO = b"fabstir-sdk/host-e2ee-key/v1"
#: HKDF ``info`` of the host's libp2p identity: its own domain, so the derived key says
#: nothing about the key it comes from and no other SDK key can collide with it.
P2P_IDENTITY_INFO = b"fabstir-sdk/libp2p-identity/v1"


def _hkdf(material: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)


def p2p_seed(secret: bytes) -> bytes:
    """The 32-byte seed of the libp2p identity of the host whose E2EE key is ``secret``."""
    return _hkdf(secret, P2P_IDENTITY_INFO)


class E2EEKey:
    """A secp256k1 key that opens session inits; shows only its public half."""

    __slots__ = ("_secret", "public_key")

    def __init__(self, secret: bytes) -> None:
        try:
            point = coincurve.PrivateKey(bytes(secret))
        except Exception:  # never echo the bytes
            raise ConfigError("the host's E2EE key is not a valid secp256k1 key") from None
        self._secret = bytes(secret)
        #: Compressed, 33 bytes: the registry metadata's ``publicKey``.
        self.public_key: bytes = point.public_key.format(compressed=True)

    def __repr__(self) -> str:
        return f"E2EEKey(public_key={self.public_key.hex()!r})"

    @classmethod
    async def derive(cls, signer: Signer) -> E2EEKey:
        """The key of a wallet whose private key is elsewhere: HKDF-SHA256 of its signature of
        :data:`HOST_E2EE_MESSAGE` (r and s). The same wallet gets the same key at every start,
        through any deterministic signer; one that signs twice differently is refused."""
        first = await signer.sign_message(HOST_E2EE_MESSAGE)
        second = await signer.sign_message(HOST_E2EE_MESSAGE)
        if first[:64] != second[:64]:
            raise NondeterministicSignerError(
                f"the signer of {signer.address} signed the host-key message twice and gave two "
                "different signatures, so the host's E2EE key would change at every start: give "
                "the host its own E2EE key (fabstir host run --e2ee-key-file or --e2ee-key-env)"
            )
        return cls(_hkdf(first[:64], HOST_E2EE_INFO))

    def accept(self, init: EncryptedSessionInit) -> tuple[HostSession, OpenedInit]:
        """Verify and decrypt a session init addressed to this key."""
        return HostSession.accept(
            init, host_private_key=self._secret, host_public_key=self.public_key
        )

    def p2p_seed(self) -> bytes:
        """The seed of the host's libp2p identity: stable for a given E2EE key, so the peer id
        in the registry metadata survives restarts."""
        return p2p_seed(self._secret)
