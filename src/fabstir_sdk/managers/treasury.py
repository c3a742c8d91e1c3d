"""TreasuryManager: the marketplace fees, for the treasury operator."""

from __future__ import annotations

from ..chain.addresses import ZERO_ADDRESS, checksum_address
from ..chain.client import tx_hash
from ..errors import NoEarningsError, ValidationError
from ._context import Context

__all__ = ["TreasuryManager"]


class TreasuryManager:
    """The treasury's 10% stays in the JobMarketplace until its treasury address withdraws it."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def __repr__(self) -> str:
        return "TreasuryManager()"

    async def get_accumulated_fees(self, token: str | None = None) -> int:
        mp = self._ctx.contract("job_marketplace")
        if token is None:
            return int(await self._ctx.client.read(mp.call("accumulatedTreasuryNative")))
        token = checksum_address(token, what="token")
        return int(await self._ctx.client.read(mp.call("accumulatedTreasuryTokens", token)))

    async def withdraw_fees(self, token: str | None = None) -> str:
        """Send the accumulated fees in ``token`` (None: ETH) to the treasury address."""
        sender = self._ctx.require_sender()
        mp = self._ctx.contract("job_marketplace")
        treasury = await self._ctx.client.read(mp.call("treasuryAddress"))
        if treasury != sender.address:
            raise ValidationError(f"only the treasury {treasury} can withdraw fees")
        if await self.get_accumulated_fees(token) == 0:
            raise NoEarningsError(f"the treasury holds no {token or 'ETH'} fees to withdraw")
        if token is None or token == ZERO_ADDRESS:
            fn = mp.call("withdrawTreasuryNative")
        else:
            fn = mp.call("withdrawTreasuryTokens", checksum_address(token, what="token"))
        return tx_hash(await sender.send(fn))
