"""The signer service of the signer tests: a second anvil, a separate process that holds the
devnet's keys unlocked, so the code under test gets a URL and an address, never a key.

``service`` is a module-scoped fixture (one service per test module, on that module's
``net``): a module takes it with ``from .signer_service import service as service``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from eth_account import Account

from fabstir_sdk.chain.signer import LocalSigner
from fabstir_sdk.devnet import AnvilProcess

#: secp256k1 group order: (r, n - s) is the other valid signature of the same message.
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@pytest.fixture(scope="module")
async def service(net, tmp_path_factory) -> AsyncIterator[AnvilProcess]:
    """The signer service: a separate anvil process that holds the same keys unlocked."""
    log = tmp_path_factory.mktemp("signer") / "anvil.log"
    proc = await AnvilProcess.start(log_path=log, chain_id=net.chain_id)
    yield proc
    await proc.stop()


def signer_flags(url: str, address: str) -> list[str]:
    """The CLI's options for a wallet in the signer service at ``url``."""
    return ["--signer-url", url, "--signer-address", address]


class FlippingSigner:
    """A real signer whose message signatures alternate between the two valid forms
    (low s and high s), as a key service with random nonces gives different signatures."""

    def __init__(self, key: str) -> None:
        self._inner = LocalSigner(Account.from_key(key))
        self.address = self._inner.address
        self._flip = False

    async def sign_transaction(self, tx: dict[str, Any]) -> bytes:
        return await self._inner.sign_transaction(tx)

    async def sign_message(self, message: bytes) -> bytes:
        signature = await self._inner.sign_message(message)
        self._flip = not self._flip
        if not self._flip:
            return signature
        s = N - int.from_bytes(signature[32:64], "big")
        return signature[:32] + s.to_bytes(32, "big") + bytes([signature[64] ^ 1])

    async def sign_typed_data(self, data: dict[str, Any]) -> bytes:
        return await self._inner.sign_typed_data(data)
