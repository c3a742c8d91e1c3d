"""The reference host's libp2p side: a DHT-server node that answers ``/fabstir/host/1.0.0``
and provides one DHT record per served model.

The node's identity is derived from the host's E2EE key (its wallet key unless it has its
own, see ``_keys``), so its peer id survives restarts and the ``peerId`` the host publishes
in its registry metadata stays valid. Clients treat a DHT record as a hint only: they ping
the peer, and the pong must be signed by the wallet of the address the registry names for
that host (``fabstir_sdk.p2p.verify_pong``), through its signer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..chain.addresses import ZERO_ADDRESS
from ..chain.client import Read
from ..errors import FabstirError
from ..managers.discovery import _price_table
from ..p2p import HostLoad, HostProtocolServer, NodeInfo, P2PNode
from ._keys import P2P_IDENTITY_INFO, p2p_seed

if TYPE_CHECKING:
    from ._node import HostNode

__all__ = ["P2P_IDENTITY_INFO", "HostP2P", "p2p_seed"]

log = logging.getLogger("fabstir_sdk.host")


class HostP2P:
    """Start with :meth:`start` (before registering: the registry metadata carries the peer
    id and addresses), then :meth:`serve` once registered, :meth:`stop` at the end.
    ``seed`` is the identity's (:meth:`E2EEKey.p2p_seed`)."""

    def __init__(self, host: HostNode, seed: bytes) -> None:
        self._host = host
        self.node = P2PNode(listen=host.config.p2p_listen, dht_server=True, seed=seed)
        self.server: HostProtocolServer | None = None

    def __repr__(self) -> str:
        return f"HostP2P({self.node!r})"

    @property
    def info(self) -> NodeInfo:
        return self.node.info

    async def start(self) -> NodeInfo:
        """Listen and dial the bootstrap peers. A host whose bootstrap peers are all down
        still serves: clients that dial it directly find its records."""
        info = await self.node.start()
        bootstrap = self._host.config.p2p_bootstrap
        if bootstrap:
            try:
                await self.node.bootstrap(bootstrap)
            except FabstirError as exc:
                log.warning("no P2P bootstrap peer answered (%s); serving without them", exc)
        return info

    async def serve(self) -> None:
        """Answer ``/fabstir/host/1.0.0`` (prices as the registry has them) and provide a
        DHT record for each served model."""
        host = self._host
        self.server = HostProtocolServer(
            host.chain.signer,
            chain_id=host.chain.chain_id,
            api_url=host.api_url,
            models=list(host.served),
            prices=await self._registered_prices(),
            load=self._load,
            features=host.features(),
        )
        await self.node.serve(self.server)
        for model in host.served.values():
            if not await self.node.provide(model):
                log.info("no DHT peer took the record for %s yet (kept locally)", model)

    async def _registered_prices(self) -> dict[str | None, dict[str, int]]:
        """The host's minimum price per model, per token, as the registry has them now
        (none while it is not registered: clients must not take prices from anywhere else)."""
        info = self._host.info
        if info is None or not info.is_active:
            return {}
        chain = self._host.chain
        nr = chain.ctx.contract("node_registry")
        usdc = chain.config.contract_addresses.usdc_token
        native, stable = await chain.client.reads(
            Read.of(nr.call("getHostModelPrices", chain.address, ZERO_ADDRESS)),
            Read.of(nr.call("getHostModelPrices", chain.address, usdc)),
        )
        return {None: _price_table(native), usdc: _price_table(stable)}

    def _load(self) -> HostLoad:
        host = self._host
        live = sum(1 for state in host.jobs.values() if state.connections)
        return HostLoad(active_sessions=live, max_sessions=host.config.max_sessions, queued=0)

    async def stop(self) -> None:
        await self.node.stop()
