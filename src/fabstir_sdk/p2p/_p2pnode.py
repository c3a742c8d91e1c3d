"""P2PNode: the libp2p node as asyncio code sees it.

Every method validates its input here, on the asyncio side, then hands one function to the
trio thread through the bridge. Nothing in this module imports trio or libp2p at import time.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict

from ..errors import (
    FabstirError,
    P2PNodeClosedError,
    P2PUnavailableError,
    PeerUnreachableError,
    ValidationError,
)
from ._bridge import TrioBridge
from ._ids import MISSING_LIBP2P, check_multiaddr, check_peer_id, model_key
from ._wire import DEFAULT_MAX_FRAME, encode_message
from .messages import Pong, new_nonce, verify_pong

if TYPE_CHECKING:
    from ._node import TrioNode

__all__ = ["NodeInfo", "P2PNode", "Provider", "RequestHandler"]

log = logging.getLogger("fabstir_sdk.p2p")

DEFAULT_LISTEN = ("/ip4/127.0.0.1/tcp/0",)


class NodeInfo(BaseModel):
    model_config = ConfigDict(frozen=True)
    peer_id: str
    addrs: list[str]


class Provider(BaseModel):
    """A peer that announced a record on the DHT: a hint, to be checked against the chain."""

    model_config = ConfigDict(frozen=True)
    peer_id: str
    addrs: list[str]


class RequestHandler(Protocol):
    """What a host mounts with :meth:`P2PNode.serve` (``HostProtocolServer`` is one)."""

    def handle(
        self, request: dict[str, Any], *, remote_peer: str, local_peer: str
    ) -> Awaitable[dict[str, Any]]: ...


def require_libp2p() -> None:
    """Raise :class:`P2PUnavailableError` (naming the ``p2p`` extra) without libp2p."""
    try:
        found = all(importlib.util.find_spec(m) for m in ("libp2p", "trio", "multiaddr"))
    except (ImportError, ValueError):
        found = False
    if not found:
        raise P2PUnavailableError(MISSING_LIBP2P)


def _positive(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValidationError(f"{what} must be a positive number of seconds")
    return float(value)


class P2PNode:
    """A py-libp2p node (TCP, Noise, Yamux, Kademlia) on its own trio thread.

    ``await node.start()`` listens (loopback, a free port, by default); ``await node.stop()``
    ends the thread and closes every socket. Hosts set ``dht_server=True`` and mount a
    ``HostProtocolServer`` with :meth:`serve`; clients leave the DHT in client mode.
    """

    def __init__(
        self,
        *,
        listen: Sequence[str] = DEFAULT_LISTEN,
        dht_server: bool = False,
        seed: bytes | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        dial_timeout: float = 5.0,
        request_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        frame_timeout: float = 5.0,
        handler_timeout: float = 10.0,
    ) -> None:
        require_libp2p()
        if isinstance(listen, str) or not listen:
            raise ValidationError("listen must be a non-empty list of multiaddrs")
        for address in listen:
            _, peer = check_multiaddr(address, need_peer=False)
            if peer is not None:
                raise ValidationError(f"a listen address cannot name a peer: {address!r}")
        if seed is not None and (not isinstance(seed, bytes) or len(seed) < 32):
            raise ValidationError("seed must be at least 32 bytes")
        if isinstance(max_frame, bool) or not isinstance(max_frame, int) or max_frame < 1024:
            raise ValidationError("max_frame must be an int of at least 1024 bytes")
        self._options: dict[str, Any] = {
            "listen": list(listen),
            "dht_server": bool(dht_server),
            "seed": seed,
            "max_frame": max_frame,
            "dial_timeout": _positive(dial_timeout, "dial_timeout"),
            "idle_timeout": _positive(idle_timeout, "idle_timeout"),
            "frame_timeout": _positive(frame_timeout, "frame_timeout"),
            "handler_timeout": _positive(handler_timeout, "handler_timeout"),
        }
        self.request_timeout = _positive(request_timeout, "request_timeout")
        self._bridge = TrioBridge()
        self._node: TrioNode | None = None
        self._info: NodeInfo | None = None

    def __repr__(self) -> str:
        peer = self._info.peer_id if self._info else None
        return f"P2PNode(peer_id={peer!r}, running={self.running})"

    async def __aenter__(self) -> P2PNode:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._bridge.running and self._info is not None

    @property
    def info(self) -> NodeInfo:
        if self._info is None or not self._bridge.running:
            raise P2PNodeClosedError("the P2P node is not running")
        return self._info

    @property
    def peer_id(self) -> str:
        return self.info.peer_id

    async def start(self) -> NodeInfo:
        """Listen and start the DHT; returns the node's peer id and addresses."""
        if self._info is not None:
            return self.info
        options = self._options

        async def main(task_status: Any) -> None:
            from ._node import NodeOptions, TrioNode

            node = self._node = TrioNode(NodeOptions(**options), self._bridge)
            await node.run(task_status=task_status)

        peer_id, addrs = await self._bridge.start(main)
        self._info = NodeInfo(peer_id=peer_id, addrs=addrs)
        log.debug("P2P node %s listening on %s", peer_id, addrs)
        return self._info

    async def stop(self) -> None:
        """Stop the node: the thread is joined and every socket closed. Idempotent."""
        await self._bridge.stop()

    async def _call(
        self,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
        timeout: float | None = None,  # noqa: ASYNC109 (enforced on the trio side)
    ) -> Any:
        if self._node is None or not self._bridge.running:
            raise P2PNodeClosedError("the P2P node is not running")
        return await self._bridge.call(fn, *args, timeout=timeout)

    async def connect(self, address: str, *, timeout: float | None = None) -> str:  # noqa: ASYNC109 (enforced on the trio side)
        """Dial ``address`` (``.../tcp/<port>/p2p/<peer id>``); returns the peer id."""
        check_multiaddr(address)
        node = self._require_node()
        # two dial attempts (one retry) plus the backoff between them
        limit = timeout if timeout is not None else 2 * node.options.dial_timeout + 1.0
        result: str = await self._call(node.connect, address, timeout=limit)
        return result

    async def bootstrap(
        self,
        addresses: Sequence[str],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (enforced on the trio side)
    ) -> list[str]:
        """Dial every bootstrap peer at once; fails only if none answers.

        Returns the peer ids reached. All addresses are checked before any is dialled.
        """
        if isinstance(addresses, str):
            raise ValidationError("bootstrap must be a list of multiaddrs")
        for address in addresses:
            check_multiaddr(address)
        if not addresses:
            return []
        results = await asyncio.gather(
            *(self.connect(a, timeout=timeout) for a in addresses), return_exceptions=True
        )
        reached = [r for r in results if isinstance(r, str)]
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, FabstirError):
                raise failure
        if not reached:
            raise PeerUnreachableError(
                f"none of the {len(addresses)} bootstrap peers answered: {failures[0]}"
            ) from failures[0]
        return reached

    def connected_peers(self) -> list[str]:
        """Peer ids with an open connection, sorted (a snapshot)."""
        if self._node is None or not self._bridge.running:
            return []
        return sorted(self._node.connected_peers)

    async def disconnect(self, peer_id: str) -> None:
        await self._call(self._require_node().disconnect, check_peer_id(peer_id))

    async def request(
        self,
        peer_id: str,
        message: dict[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (enforced on the trio side)
    ) -> dict[str, Any]:
        """Send one ``/fabstir/host/1.0.0`` request and return the peer's reply (a dict)."""
        check_peer_id(peer_id)
        node = self._require_node()
        encode_message(message, max_frame=node.options.max_frame)  # refuse before any I/O
        limit = _positive(timeout, "timeout") if timeout is not None else self.request_timeout
        reply: dict[str, Any] = await self._call(node.request, peer_id, message, timeout=limit)
        return reply

    async def ping(
        self,
        peer_id: str,
        *,
        chain_id: int,
        host: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (enforced on the trio side)
    ) -> tuple[Pong, float]:
        """A signed liveness check: the verified pong and the round trip in seconds."""
        nonce = new_nonce()
        started = time.perf_counter()
        reply = await self.request(peer_id, {"type": "ping", "nonce": nonce}, timeout=timeout)
        rtt = time.perf_counter() - started
        return verify_pong(reply, nonce=nonce, peer_id=peer_id, chain_id=chain_id, host=host), rtt

    async def remember(self, peer_id: str, addrs: Sequence[str]) -> None:
        """Tell the node where ``peer_id`` listens (addresses from the registry or DHT)."""
        check_peer_id(peer_id)
        usable = []
        for address in addrs:
            try:
                text, peer = check_multiaddr(address, need_peer=False)
            except FabstirError:
                continue
            if peer in (None, peer_id):
                usable.append(text.removesuffix(f"/p2p/{peer_id}"))
        if usable:
            node = self._require_node()

            async def add() -> None:
                node.remember(peer_id, usable)

            await self._call(add)

    async def provide(self, model: str) -> bool:
        """Announce on the DHT that this node serves ``model``."""
        key = model_key(model)
        return bool(await self._call(self._require_node().provide, key, timeout=30.0))

    async def find_providers(
        self,
        model: str,
        *,
        limit: int = 20,
        timeout: float = 10.0,  # noqa: ASYNC109 (enforced on the trio side)
    ) -> list[Provider]:
        """Peers that announced ``model`` on the DHT, each once (hints: check them)."""
        key = model_key(model)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValidationError("limit must be a positive int")
        found = await self._call(
            self._require_node().find_providers, key, limit, timeout=_positive(timeout, "timeout")
        )
        return [Provider(peer_id=peer, addrs=addrs) for peer, addrs in found]

    async def serve(self, handler: RequestHandler | None) -> None:
        """Answer ``/fabstir/host/1.0.0`` with ``handler`` (None: stop answering).

        The handler runs on the asyncio loop; the node gives it ``handler_timeout`` seconds.
        """
        node = self._require_node()
        if handler is None:
            adapter = None
        else:
            if not callable(getattr(handler, "handle", None)):
                raise ValidationError("handler must have an async handle(request, ...) method")

            async def adapter(request: dict[str, Any], remote: str, local: str) -> dict[str, Any]:
                return await handler.handle(request, remote_peer=remote, local_peer=local)

        async def mount() -> None:
            node.serve(adapter)

        await self._call(mount)

    def _require_node(self) -> TrioNode:
        if self._node is None or not self._bridge.running:
            raise P2PNodeClosedError("the P2P node is not running: await node.start() first")
        return self._node
