"""How hosts and clients on one devnet find each other over libp2p: a bootstrap peer.

The devnet runs one DHT-server node of its own on 127.0.0.1, started with the first host
that runs a libp2p node (or by ``await net.start_p2p_bootstrap()``) and stopped with the
devnet. Every host ``net.start_host`` starts dials it and provides its models through it;
clients pass ``net.p2p_bootstrap`` to ``dm.create_node(bootstrap=...)``. Hosts can stop,
crash and restart in any order: the peer everyone knows lives as long as the devnet.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..p2p import P2PNode

__all__ = ["DevnetBootstrap"]


class DevnetBootstrap:
    """The devnet's bootstrap peer, started on first use (single flight)."""

    def __init__(self) -> None:
        self._node: P2PNode | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"DevnetBootstrap(addrs={self.addrs!r})"

    @property
    def addrs(self) -> list[str]:
        """Its multiaddrs (``.../tcp/<port>/p2p/<peer id>``), [] when not running."""
        node = self._node
        return list(node.info.addrs) if node is not None and node.running else []

    async def start(self) -> list[str]:
        async with self._lock:
            if self._node is None:
                from ..p2p import P2PNode

                node = P2PNode(dht_server=True)
                await node.start()
                self._node = node
        return self.addrs

    async def stop(self) -> None:
        node, self._node = self._node, None
        if node is not None:
            await node.stop()
