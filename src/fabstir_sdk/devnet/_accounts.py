"""The devnet's test accounts: anvil's default mnemonic, derived the way anvil does it."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

__all__ = ["ANVIL_MNEMONIC", "DevAccount", "derive_accounts"]

#: anvil's default mnemonic. Its keys are public knowledge: never fund them on a real network.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"


@dataclass(frozen=True, slots=True)
class DevAccount:
    """A funded devnet account. ``repr()`` and ``str()`` never show the private key."""

    address: str
    private_key: str = field(repr=False)

    def __repr__(self) -> str:
        return f"DevAccount(address={self.address!r}, private_key=<hidden>)"


def derive_accounts(count: int, mnemonic: str = ANVIL_MNEMONIC) -> list[DevAccount]:
    """Accounts ``m/44'/60'/0'/0/0 .. count-1``, the same ones anvil funds."""
    return list(_derive(count, mnemonic))


@cache  # ~6 ms per account: pay it once per process, not once per devnet
def _derive(count: int, mnemonic: str) -> tuple[DevAccount, ...]:
    from eth_account import Account  # ~0.7 s to import: only when a devnet starts

    Account.enable_unaudited_hdwallet_features()
    paths = (f"m/44'/60'/0'/0/{index}" for index in range(count))
    locals_ = [Account.from_mnemonic(mnemonic, account_path=path) for path in paths]
    return tuple(DevAccount(a.address, "0x" + bytes(a.key).hex()) for a in locals_)
