"""Peer-to-peer discovery over libp2p: a node on its own trio thread, the host protocol.

Importing this package is cheap: trio and py-libp2p (the ``p2p`` extra) load on the node's
own thread when a :class:`P2PNode` starts.
"""

from ._ids import check_multiaddr, check_peer_id, model_key
from ._p2pnode import NodeInfo, P2PNode, Provider, RequestHandler, require_libp2p
from .messages import (
    HOST_PROTOCOL,
    Capabilities,
    ErrorReply,
    HostLoad,
    HostProtocolServer,
    Models,
    Pong,
    Prices,
)

__all__ = [
    "Capabilities",
    "ErrorReply",
    "HOST_PROTOCOL",
    "HostLoad",
    "HostProtocolServer",
    "Models",
    "NodeInfo",
    "P2PNode",
    "Pong",
    "Prices",
    "Provider",
    "RequestHandler",
    "check_multiaddr",
    "check_peer_id",
    "model_key",
    "require_libp2p",
]
