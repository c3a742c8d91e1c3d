"""The devnet's test accounts: anvil's default mnemonic, derived the way anvil does it."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    from eth_account import Account  # ~0.7 s to import: only when a devnet starts

    Account.enable_unaudited_hdwallet_features()
    accounts = []
    for index in range(count):
        local = Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{index}")
        accounts.append(DevAccount(local.address, "0x" + bytes(local.key).hex()))
    return accounts
