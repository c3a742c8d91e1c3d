"""State the managers share: config, the chain connection and (after authenticate) the wallet."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from ..chain.abi import Contract
from ..chain.addresses import ZERO_ADDRESS, checksum_address
from ..chain.client import ChainClient, Read, TxSender
from ..chain.signer import Signer
from ..chain.transport import redact_url
from ..chain.units import ETH_DECIMALS
from ..chains import native_symbol
from ..config import SDKConfig
from ..errors import AuthRequiredError, FabstirError, Unit

__all__ = ["Context"]

#: Artifact names of the contracts, by ContractAddresses field.
_ARTIFACTS = {
    "job_marketplace": "JobMarketplace",
    "node_registry": "NodeRegistry",
    "model_registry": "ModelRegistry",
    "proof_system": "ProofSystem",
    "host_earnings": "HostEarnings",
    "usdc_token": "TestUSDC",
    "fab_token": "FABToken",
}


@dataclass
class Context:
    config: SDKConfig
    client: ChainClient
    account: LocalAccount | None = None
    sender: TxSender | None = None
    #: The wallet as a Signer (its key may be in another process); set with ``account``
    #: only when the key is in this process.
    signer: Signer | None = None
    #: The storage seed's wallet signature, or None when the signer is not deterministic.
    seed_signature: bytes | None = None

    def __repr__(self) -> str:
        return f"Context(rpc_url={redact_url(self.config.rpc_url)!r}, account={self.address!r})"

    @property
    def address(self) -> str | None:
        if self.signer is not None:
            return self.signer.address
        return self.account.address if self.account else None

    def require_sender(self) -> TxSender:
        if self.sender is None:
            raise AuthRequiredError("authenticate first: await sdk.authenticate(private_key)")
        return self.sender

    def require_address(self, address: str | None = None, *, what: str = "address") -> str:
        """``address`` checksummed, or the authenticated user's address when None."""
        if address is not None:
            return checksum_address(address, what=what)
        return self.require_sender().address

    def contract(self, which: str) -> Contract:
        """One of the configured contracts, by ContractAddresses field name."""
        address = getattr(self.config.contract_addresses, which)
        return self.client.contract(_ARTIFACTS[which], address)

    def erc20(self, token: str) -> Contract:
        """Any ERC-20 token (the test USDC's ABI is a superset of ERC-20)."""
        return self.client.contract("TestUSDC", checksum_address(token, what="token"))

    async def decimals(self, token: str | None) -> int:
        """Decimals of ``token`` (None or the zero address: ETH, 18), cached."""
        decimals, _symbol = await self.unit(token)
        return decimals

    async def unit(self, token: str | None) -> Unit:
        """``(decimals, symbol)`` of ``token`` (None or the zero address: ETH), read once:
        messages give amounts in it, as the user typed them."""
        if token is None or token == ZERO_ADDRESS:
            return ETH_DECIMALS, native_symbol(self.config.chain_id)
        token = checksum_address(token, what="token")
        if token not in self.client.token_units:
            erc20 = self.erc20(token)
            try:
                decimals, symbol = await self.client.reads(
                    Read.of(erc20.call("decimals")), Read.of(erc20.call("symbol"))
                )
            except FabstirError:  # symbol() is optional in ERC-20: name the token by address
                decimals, symbol = await self.client.read(erc20.call("decimals")), token
            self.client.token_units[token] = int(decimals), str(symbol)
        return self.client.token_units[token]

    def known_unit(self, token: str) -> Unit | None:
        """The unit :meth:`unit` already read for ``token``, if any (for checks that run
        without awaiting)."""
        if token == ZERO_ADDRESS:
            return ETH_DECIMALS, native_symbol(self.config.chain_id)
        return self.client.token_units.get(token)
