"""AuthManager: the wallet, and the secrets derived from it."""

from __future__ import annotations

import re

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from ..chain.generation import check_contracts
from ..chain.signer import LocalSigner, Signer, as_signer
from ..errors import AuthError, ChainMismatchError, NondeterministicSignerError
from ..models import AuthResult
from ._context import Context

__all__ = ["AuthManager"]

_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")
#: Domain of the S5 seed derivation; change it and every user's storage identity changes.
S5_SEED_INFO = b"fabstir-sdk/s5-seed/v2"
#: The message the wallet signs (EIP-191) to derive the seed: any signer can sign it, so the
#: seed is the same for one wallet whether its key is here or in a signer service.
S5_SEED_MESSAGE = (
    b"fabstir-sdk storage seed v2\n"
    b"Sign this only in a Fabstir application: the signature unlocks your encrypted storage."
)
#: The derivation before signers (HKDF of the raw key): only a key in this process has it.
LEGACY_S5_SEED_INFO = b"fabstir-sdk/s5-seed/v1"


def _hkdf(material: bytes, info: bytes) -> str:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info)
    return hkdf.derive(material).hex()


def seed_from_signature(signature: bytes) -> str:
    """The S5 seed (hex) from the wallet's signature of :data:`S5_SEED_MESSAGE` (its r and s:
    the recovery byte is spelt differently by different signers)."""
    return _hkdf(signature[:64], S5_SEED_INFO)


def _account_from_key(private_key: object) -> LocalAccount:
    """The account for ``private_key``; errors never echo the key."""
    if isinstance(private_key, bytes | bytearray) and len(private_key) == 32:
        key = bytes(private_key)
    elif isinstance(private_key, str) and _KEY.fullmatch(private_key.strip()):
        key = bytes.fromhex(private_key.strip().removeprefix("0x"))
    else:
        raise AuthError("private key must be 32 bytes or 64 hex digits (optionally 0x-prefixed)")
    try:
        account: LocalAccount = Account.from_key(key)
    except Exception:
        raise AuthError("private key is not a valid secp256k1 key") from None
    return account


class AuthManager:
    """Holds the authenticated account; every manager that signs gets it from here."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def __repr__(self) -> str:
        return f"AuthManager(user_address={self._ctx.address!r})"

    async def authenticate(self, wallet: str | bytes | LocalAccount | Signer) -> AuthResult:
        """Load the wallet, check that the RPC serves the configured chain and that the
        configured addresses hold the contract generation this SDK speaks (one batched probe:
        otherwise :class:`UnsupportedContractsError`, naming what is missing).

        ``wallet`` is a private key (hex or 32 bytes), an eth-account ``LocalAccount``, or any
        :class:`~fabstir_sdk.chain.signer.Signer` (e.g. a :class:`JsonRpcSigner`, whose key
        stays in the signer service). The wallet signs the storage-seed message twice here:
        a signer that gives two different signatures may not open storage.
        """
        if isinstance(wallet, str | bytes | bytearray):
            wallet = _account_from_key(wallet)
        signer = as_signer(wallet)
        actual = await self._ctx.client.chain_id()
        expected = self._ctx.config.chain_id
        if actual != expected:
            raise ChainMismatchError(expected, actual)
        await check_contracts(self._ctx.client, self._ctx.contract)
        first = await signer.sign_message(S5_SEED_MESSAGE)
        second = await signer.sign_message(S5_SEED_MESSAGE)
        self._ctx.account = signer.account if isinstance(signer, LocalSigner) else None
        self._ctx.signer = signer
        self._ctx.seed_signature = first if first == second else None
        self._ctx.sender = self._ctx.client.sender(signer, chain_id=actual)
        return AuthResult(user_address=signer.address, chain_id=actual)

    def get_signer(self) -> Signer:
        """The wallet as a :class:`~fabstir_sdk.chain.signer.Signer`."""
        self._ctx.require_sender()
        if self._ctx.signer is None:  # a context set up without authenticate() (a host's)
            assert self._ctx.account is not None
            self._ctx.signer = LocalSigner(self._ctx.account)
        return self._ctx.signer

    def get_user_address(self) -> str:
        return self._ctx.require_sender().address

    def is_authenticated(self) -> bool:
        return self._ctx.sender is not None

    def get_s5_seed(self) -> str:
        """A 32-byte hex seed for the user's S5 identity: HKDF-SHA256 of the wallet's
        signature of :data:`S5_SEED_MESSAGE` (see docs/security.md).

        Nobody without the wallet can compute it (unlike an address-derived seed), and the
        same wallet gets the same seed through any signer. A signer whose signatures differ
        each time raises :class:`NondeterministicSignerError`.
        """
        signer = self.get_signer()
        if self._ctx.seed_signature is None:
            if not isinstance(signer, LocalSigner):
                raise NondeterministicSignerError(
                    f"the signer of {signer.address} signed the storage-seed message twice and "
                    "gave two different signatures, so its storage key would change every "
                    "time; use a signer with deterministic (RFC 6979) signatures for storage"
                )
            message = encode_defunct(primitive=S5_SEED_MESSAGE)
            self._ctx.seed_signature = bytes(signer.account.sign_message(message).signature)
        return seed_from_signature(self._ctx.seed_signature)

    def get_legacy_s5_seed(self) -> str:
        """The seed of SDK versions before signers (HKDF of the raw private key, domain
        ``fabstir-sdk/s5-seed/v1``): open it with ``S5Identity`` to read data stored then.
        Only a wallet whose key is in this process has it."""
        signer = self.get_signer()
        if not isinstance(signer, LocalSigner):
            raise AuthError("the legacy storage seed needs the private key in this process")
        return _hkdf(bytes(signer.account.key), LEGACY_S5_SEED_INFO)
