"""AuthManager: the wallet, and the secrets derived from it."""

from __future__ import annotations

import re

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ..chain.generation import check_contracts
from ..errors import AuthError, ChainMismatchError
from ..models import AuthResult
from ._context import Context

__all__ = ["AuthManager"]

_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")
#: Domain of the S5 seed derivation; change it and every user's storage identity changes.
S5_SEED_INFO = b"fabstir-sdk/s5-seed/v1"


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

    async def authenticate(self, private_key: str | bytes) -> AuthResult:
        """Load the wallet, check that the RPC serves the configured chain and that the
        configured addresses hold the contract generation this SDK speaks (one batched probe:
        otherwise :class:`UnsupportedContractsError`, naming what is missing)."""
        account = _account_from_key(private_key)
        actual = await self._ctx.client.chain_id()
        expected = self._ctx.config.chain_id
        if actual != expected:
            raise ChainMismatchError(expected, actual)
        await check_contracts(self._ctx.client, self._ctx.contract)
        self._ctx.account = account
        self._ctx.sender = self._ctx.client.sender(account, chain_id=actual)
        return AuthResult(user_address=account.address, chain_id=actual)

    def get_signer(self) -> LocalAccount:
        self._ctx.require_sender()
        assert self._ctx.account is not None
        return self._ctx.account

    def get_user_address(self) -> str:
        return self._ctx.require_sender().address

    def is_authenticated(self) -> bool:
        return self._ctx.sender is not None

    def get_s5_seed(self) -> str:
        """A 32-byte hex seed for the user's S5 identity, derived from the private key.

        Derived with HKDF-SHA256 under its own domain string, so it reveals nothing about the
        key, and (unlike an address-derived seed) nobody else can compute it.
        """
        key = bytes(self.get_signer().key)
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=S5_SEED_INFO)
        return hkdf.derive(key).hex()
