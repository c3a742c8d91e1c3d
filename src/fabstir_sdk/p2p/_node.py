"""The py-libp2p node itself. Everything here runs on the bridge's trio thread only.

py-libp2p 0.8.1 is used with the workarounds of the research evaluation (section 8):

* Noise is the only security transport: the default also offers plaintext (bug 7.4).
* Yamux, never Mplex (5 s stalls, 7.6).
* ``max_connections_per_peer=1``: with the default 3 every dial waits 250 ms (7.1).
* One dial retry after 50 ms, and the negative peer cache is lifted before an explicit
  dial (7.9): a dead peer fails fast, a restarted one can be dialled again at once.
* Inbound connection slots are given back when the connection closes: the stock handler
  holds its slot (and its task) until the whole swarm stops, so a node refused everyone
  after 250 inbound connections in its lifetime (7.2). The cap (300) is now on connections
  open at the same time, which is what it was meant to be.
* Every stream handler, ours and libp2p's, is wrapped so an exception in it cannot tear
  down the swarm (7.3).
* DHT keys are CID strings and provider lists are de-duplicated by peer id (7.7); a
  client's lookups always ask the network (libp2p answers from its cache of earlier
  lookups for 48 h).
* libp2p's log records are forwarded to ``fabstir_sdk.p2p`` at DEBUG (7.10): its
  "Failed to read DHT message" noise stays out of the application's stderr.

Two more found while testing: the swarm's auto-connector dials every peer in the peerstore
whenever a connection closes (an SDK client must dial only what it asks for), so it is
switched off; and on shutdown the swarm closes its connections *after* it has been
cancelled, so their sockets stayed open until garbage collection. We close the sockets
ourselves, synchronously, before the cancellation unwinds.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import multiaddr  # type: ignore[import-untyped]
import trio
from libp2p import new_host
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT, _encode_key
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service

from ..errors import P2PProtocolError
from ._bridge import TrioBridge
from ._wire import FrameDecoder, P2PFrameTooLargeError, decode_message, encode_message
from .messages import HOST_PROTOCOL

__all__ = ["NodeOptions", "TrioNode"]

log = logging.getLogger("fabstir_sdk.p2p")

#: Handler a host mounts: ``(request, remote_peer, local_peer) -> reply``, run on asyncio.
Handler = Callable[[dict[str, Any], str, str], Awaitable[dict[str, Any]]]

_READ_CHUNK = 64 * 1024
_RESET_GRACE = 1.0


@dataclass(frozen=True)
class NodeOptions:
    listen: list[str]
    dht_server: bool = False
    #: 32+ bytes -> a stable identity; None -> a fresh one. A secret: kept out of reprs.
    seed: bytes | None = field(default=None, repr=False)
    max_frame: int = 64 * 1024
    dial_timeout: float = 5.0
    #: A host drops a client stream idle this long between requests.
    idle_timeout: float = 60.0
    #: Once a frame has started, all of it must arrive within this (slow-peer guard).
    frame_timeout: float = 5.0
    #: How long a mounted handler may take before the peer gets a ``timeout`` error.
    handler_timeout: float = 10.0


class _LogForwarder(logging.Handler):
    """libp2p's records, re-emitted at DEBUG on our logger (never to stderr by default)."""

    def emit(self, record: logging.LogRecord) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("libp2p %s: %s", record.name, record.getMessage())


def _quiet_libp2p_logging() -> None:
    lib = logging.getLogger("libp2p")
    if not any(isinstance(h, _LogForwarder) for h in lib.handlers):
        lib.handlers[:] = [_LogForwarder()]
    lib.propagate = False


class _PeerTracker(INotifee):
    """Keeps the set of connected peer ids, readable from any thread (replaced, never mutated)."""

    def __init__(self, network: INetwork) -> None:
        self._network = network
        self.peers: frozenset[str] = frozenset()

    def refresh(self) -> None:
        self.peers = frozenset(
            str(peer)
            for peer, conns in self._network.connections.items()
            if any(not conn.is_closed for conn in conns)
        )

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self.refresh()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self.refresh()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        pass


def safe_handler(
    handler: Callable[[INetStream], Awaitable[None]],
) -> Callable[[INetStream], Awaitable[None]]:
    """``handler`` that can never raise into the swarm: errors reset the stream instead."""

    async def guarded(stream: INetStream) -> None:
        try:
            await handler(stream)
        except Exception as exc:  # includes ExceptionGroups of ordinary errors
            log.debug("stream handler %s failed: %r", getattr(handler, "__name__", handler), exc)
            await _reset(stream)

    guarded.__name__ = f"safe_{getattr(handler, '__name__', 'handler')}"
    guarded.__wrapped__ = handler  # type: ignore[attr-defined]
    return guarded


async def _reset(stream: INetStream) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(_RESET_GRACE):
        try:
            await stream.reset()
        except Exception as exc:
            log.debug("stream reset failed: %r", exc)


async def read_frame(
    stream: INetStream,
    decoder: FrameDecoder,
    pending: list[bytes],
    *,
    idle_timeout: float | None = None,
    frame_timeout: float | None = None,
) -> bytes | None:
    """The next frame body, or None at a clean end of stream.

    Waits up to ``idle_timeout`` for the first byte and then ``frame_timeout`` for the rest
    (``trio.TooSlowError`` otherwise); an end of stream inside a frame is a protocol error.
    """
    deadline = math.inf if idle_timeout is None else trio.current_time() + idle_timeout
    started = decoder.pending > 0
    if started and frame_timeout is not None:
        deadline = trio.current_time() + frame_timeout
    while not pending:
        with trio.fail_at(deadline):
            try:
                chunk = await stream.read(_READ_CHUNK)
            except Exception as exc:
                if type(exc).__name__ == "StreamEOF" and decoder.pending == 0:
                    return None
                raise
        if not chunk:
            if decoder.pending:
                raise P2PProtocolError("the stream ended in the middle of a frame")
            return None
        pending.extend(decoder.feed(chunk))
        if not started and (pending or decoder.pending) and frame_timeout is not None:
            started = True
            deadline = trio.current_time() + frame_timeout
    return pending.pop(0)


@dataclass
class _ClientStream:
    stream: INetStream
    decoder: FrameDecoder
    pending: list[bytes] = field(default_factory=list)


class TrioNode:
    """A libp2p host + Kademlia DHT, with the ``/fabstir/host/1.0.0`` client and server."""

    def __init__(self, options: NodeOptions, bridge: TrioBridge) -> None:
        self.options = options
        self._bridge = bridge
        self._host: Any = None
        self._dht: KadDHT | None = None
        self._tracker: _PeerTracker | None = None
        self._nursery: trio.Nursery | None = None
        self._handler: Handler | None = None
        self._streams: dict[str, _ClientStream] = {}
        self._locks: dict[str, trio.Lock] = {}
        self.peer_id = ""

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Start the host and DHT, report ``(peer id, addrs)``, run until cancelled."""
        _quiet_libp2p_logging()
        opts = self.options
        if opts.seed is not None:
            key_pair = create_new_key_pair(hashlib.sha256(opts.seed).digest())
        else:
            key_pair = create_new_key_pair()
        noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
        listen = [multiaddr.Multiaddr(a) for a in opts.listen]
        host = new_host(
            key_pair=key_pair,
            sec_opt={NOISE_PROTOCOL_ID: noise},
            muxer_preference="YAMUX",
            listen_addrs=listen,
            connection_config=ConnectionConfig(
                max_connections_per_peer=1,
                min_connections=0,
                low_watermark=0,
                dial_timeout=opts.dial_timeout,
                outbound_upgrade_timeout=opts.dial_timeout,
                inbound_upgrade_timeout=opts.dial_timeout,
            ),
        )
        network: Any = host.get_network()  # a Swarm: the attributes below are not on the ABC
        network.retry_config = RetryConfig(max_retries=1, initial_delay=0.05, max_delay=0.2)
        _release_inbound_slots(network)
        network.auto_connector.maybe_connect = _no_auto_connect
        _wrap_stream_handlers(host)
        tracker = self._tracker = _PeerTracker(network)
        network.register_notifee(tracker)
        host.set_stream_handler(TProtocol(HOST_PROTOCOL), self._serve_stream)
        async with host.run(listen_addrs=listen):
            dht = KadDHT(host, DHTMode.SERVER if opts.dht_server else DHTMode.CLIENT)
            async with background_trio_service(dht):
                self._host, self._dht = host, dht
                self.peer_id = host.get_id().to_base58()
                try:
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        task_status.started((self.peer_id, self.addrs()))
                        await trio.sleep_forever()
                finally:
                    self._host = self._dht = self._nursery = None
                    _close_sockets(network)

    def addrs(self) -> list[str]:
        return [str(a) for a in self._host.get_addrs()] if self._host else []

    @property
    def connected_peers(self) -> frozenset[str]:
        return self._tracker.peers if self._tracker else frozenset()

    # ------------------------------------------------------------------ peers

    async def connect(self, address: str) -> str:
        """Dial ``address`` (a multiaddr ending in /p2p/<id>) and add it to the DHT table."""
        info = info_from_p2p_addr(multiaddr.Multiaddr(address))
        self._host.get_network().unblock_peer(info.peer_id)
        await self._host.connect(info)
        assert self._dht is not None
        await self._dht.add_peer(info.peer_id)
        return str(info.peer_id.to_base58())

    async def disconnect(self, peer: str) -> None:
        """Close the connections to ``peer``; returns once their sockets are closed.

        libp2p's teardown then sleeps 0.2 s (Yamux and the swarm each wait 0.1 s) before it
        forgets the connection: that part runs in the background, and the closed connection
        is dropped from the swarm's table at once (libp2p would otherwise reuse it for a new
        dial), so a client that dials, asks and hangs up is not held up by it.
        """
        self._drop_stream(peer)
        peer_id = ID.from_base58(peer)
        network = self._host.get_network()
        conns = list(network.get_connections(peer_id))
        if not conns:
            return
        assert self._nursery is not None
        for conn in conns:  # not close_peer(): it forgets every connection to the peer
            self._nursery.start_soon(_close_conn, conn)  # when done, even a newer one
        for conn in conns:
            closed = getattr(conn.muxed_conn, "event_closed", None)
            if closed is not None:
                await closed.wait()
            network.remove_conn(conn)  # idempotent: the background teardown does it again
        if self._tracker is not None:
            self._tracker.refresh()

    def remember(self, peer: str, addrs: list[str]) -> None:
        """Record addresses (from the DHT or the registry) to dial ``peer`` later."""
        self._host.get_peerstore().add_addrs(
            ID.from_base58(peer), [multiaddr.Multiaddr(a) for a in addrs], 600
        )

    # ------------------------------------------------------------------ DHT

    async def provide(self, key: str) -> bool:
        assert self._dht is not None
        return bool(await self._dht.provide(key))

    async def find_providers(self, key: str, count: int) -> list[tuple[str, list[str]]]:
        """Providers of ``key`` other than us, each once, with their addresses."""
        assert self._dht is not None
        if not self.options.dht_server:
            # libp2p answers from its local store whenever it holds anything for the key,
            # and a client's store only holds its own earlier answers: without this, hosts
            # that announced later were never found and dead ones stayed for 48 h (7.7)
            self._dht.provider_store.providers.pop(_encode_key(key), None)
        found: list[PeerInfo] = await self._dht.find_providers(key, count)
        out: dict[str, list[str]] = {}
        for info in found:
            peer = info.peer_id.to_base58()
            if peer == self.peer_id:
                continue
            addrs = out.setdefault(peer, [])
            for addr in info.addrs:
                text = str(addr)
                if text not in addrs:
                    addrs.append(text)
        return list(out.items())

    # ------------------------------------------------------------------ client side

    async def request(self, peer: str, message: dict[str, Any]) -> dict[str, Any]:
        """One request/response on the cached stream to ``peer`` (opened on first use).

        Any failure or cancellation resets and forgets the stream, so the next request
        starts clean instead of reading a late reply. A cached stream the host has since
        closed is replaced once, and so is a broken connection (dialled again from the
        peerstore): a deadline that cancels libp2p mid-write leaves a half-sent frame on the
        encrypted connection, which the peer then drops. Requests are read-only queries, so
        asking twice is safe.
        """
        frame = encode_message(message, max_frame=self.options.max_frame)
        lock = self._locks.setdefault(peer, trio.Lock())
        async with lock:
            for attempt in range(2):
                entry = self._streams.get(peer)
                reused = entry is not None
                try:
                    if entry is None:
                        stream = await self._host.new_stream(
                            ID.from_base58(peer), [TProtocol(HOST_PROTOCOL)]
                        )
                        entry = self._streams[peer] = _ClientStream(
                            stream, FrameDecoder(self.options.max_frame)
                        )
                    await entry.stream.write(frame)
                    body = await read_frame(entry.stream, entry.decoder, entry.pending)
                    if body is None:
                        raise P2PProtocolError("the peer closed the stream without answering")
                    return decode_message(body)
                except BaseException as exc:
                    self._drop_stream(peer)
                    if entry is not None:
                        await _reset(entry.stream)
                    if attempt > 0 or not isinstance(exc, Exception):  # trio.Cancelled
                        raise
                    broken = _connection_broken(exc) or self._connection_dead(peer)
                    if broken:
                        log.debug("the connection to %s broke (%r): dialling again", peer, exc)
                        await self.disconnect(peer)
                    if not (broken or (reused and _stream_gone(exc))):
                        raise
        raise AssertionError("unreachable")

    def _connection_dead(self, peer: str) -> bool:
        """A connection to ``peer`` is closed or its muxer is shutting down (not yet removed)."""
        for conn in self._host.get_network().get_connections(ID.from_base58(peer)):
            muxer = conn.muxed_conn
            shutting = getattr(muxer, "event_shutting_down", None)
            if conn.is_closed or (shutting is not None and shutting.is_set()):
                return True
        return False

    def _drop_stream(self, peer: str) -> None:
        self._streams.pop(peer, None)

    # ------------------------------------------------------------------ server side

    def serve(self, handler: Handler | None) -> None:
        """Answer ``/fabstir/host/1.0.0`` requests with ``handler`` (None: refuse them)."""
        self._handler = handler

    async def _serve_stream(self, stream: INetStream) -> None:
        opts = self.options
        remote = stream.muxed_conn.peer_id.to_base58()
        decoder, pending = FrameDecoder(opts.max_frame), list[bytes]()
        while True:
            try:
                body = await read_frame(
                    stream,
                    decoder,
                    pending,
                    idle_timeout=opts.idle_timeout,
                    frame_timeout=opts.frame_timeout,
                )
            except P2PFrameTooLargeError as exc:
                await self._refuse(stream, "too_large", str(exc))
                return
            except P2PProtocolError as exc:
                await self._refuse(stream, "bad_request", str(exc))
                return
            except trio.TooSlowError:
                log.debug("closing a stream from %s: idle or too slow", remote)
                await _reset(stream)
                return
            if body is None:
                await stream.close()
                return
            try:
                request = decode_message(body)
            except P2PProtocolError as exc:
                await self._refuse(stream, "bad_request", str(exc))
                return
            reply = await self._answer(request, remote)
            await stream.write(encode_message(reply, max_frame=opts.max_frame))

    async def _answer(self, request: dict[str, Any], remote: str) -> dict[str, Any]:
        handler = self._handler
        if handler is None:
            return {"type": "error", "code": "not_serving", "message": "this peer is not a host"}
        with trio.move_on_after(self.options.handler_timeout) as scope:
            try:
                return await self._bridge.to_asyncio(handler, request, remote, self.peer_id)
            except Exception as exc:
                log.warning("host handler failed on a %r request: %r", request.get("type"), exc)
                return {"type": "error", "code": "internal", "message": "the host failed"}
        assert scope.cancelled_caught
        return {"type": "error", "code": "timeout", "message": "the host took too long"}

    async def _refuse(self, stream: INetStream, code: str, message: str) -> None:
        """Tell the peer why, then reset: after a bad frame the stream cannot be trusted."""
        with trio.move_on_after(_RESET_GRACE):
            try:
                reply = {"type": "error", "code": code, "message": message[:200]}
                await stream.write(encode_message(reply, max_frame=self.options.max_frame))
            except Exception as exc:
                log.debug("could not send %s to a peer: %r", code, exc)
        await _reset(stream)


def _stream_gone(exc: BaseException) -> bool:
    """A cached stream the host closed or reset (worth one retry on a fresh stream)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if isinstance(exc, P2PProtocolError) and "closed the stream" in str(exc):
        return True
    return bool(names & {"StreamEOF", "StreamReset", "StreamClosed", "MuxedStreamReset"})


_BROKEN = frozenset(
    {"BrokenResourceError", "ClosedResourceError", "BrokenPipeError", "ConnectionResetError"}
)


def _connection_broken(exc: BaseException) -> bool:
    """The connection under the stream is dead (its socket broke or its muxer shut down)."""
    seen: BaseException | None = exc
    for _ in range(16):  # causes chain through libp2p's layers; never loops for ever
        if seen is None:
            return False
        if type(seen).__name__ in _BROKEN or "shutting down" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _close_conn(conn: INetConn) -> None:
    try:
        await conn.close()
    except Exception as exc:
        log.debug("closing a connection failed: %r", exc)


async def _no_auto_connect() -> None:
    """Stands in for the swarm's auto-connector: dial only on request."""


def _close_sockets(network: Any) -> None:
    """Close every connection's TCP socket now (trio wakes any task blocked on it)."""
    for conns in list(network.connections.values()):
        for conn in list(conns):
            stream = _socket_stream(conn)
            if stream is not None:
                stream.socket.close()


def _socket_stream(obj: Any, depth: int = 0) -> trio.SocketStream | None:
    """The trio socket under a connection's security and muxer layers, if found."""
    if isinstance(obj, trio.SocketStream):
        return obj
    if depth > 8:
        return None
    for name in ("muxed_conn", "secured_conn", "conn", "read_writer", "stream"):
        inner = getattr(obj, name, None)
        if inner is not None and inner is not obj:
            found = _socket_stream(inner, depth + 1)
            if found is not None:
                return found
    return None


#: Set by the inbound handler around its call: the upgrade reports the connection to it.
_UPGRADED: ContextVar[Callable[[Any], None]] = ContextVar("fabstir_p2p_upgraded")


def _release_inbound_slots(network: Any) -> None:
    """End each inbound connection's handler (and free its limiter slot) when the
    connection closes, instead of when the swarm stops (bug 7.2).

    The stock handler upgrades the connection, then waits for the end of the swarm while
    holding an inbound slot. Ours runs it in a cancel scope that a watcher cancels as soon
    as the upgraded connection reports closed.
    """
    handle = network._do_handle_inbound_connection
    upgrade = network.upgrade_inbound_raw_conn

    async def upgrade_and_report(raw_conn: Any, maddr: Any) -> Any:
        muxed = await upgrade(raw_conn, maddr)
        report = _UPGRADED.get(None)
        if report is not None:
            report(muxed)
        return muxed

    async def handle_until_closed(*args: Any) -> None:
        async with trio.open_nursery() as nursery:

            def watch(muxed: Any) -> None:
                closed = getattr(muxed, "event_closed", None)
                if closed is not None:
                    nursery.start_soon(_cancel_when_set, closed, nursery.cancel_scope)

            token = _UPGRADED.set(watch)
            try:
                await handle(*args)
            finally:
                _UPGRADED.reset(token)
            nursery.cancel_scope.cancel()  # the handler returned (a failed upgrade)

    network.upgrade_inbound_raw_conn = upgrade_and_report
    network._do_handle_inbound_connection = handle_until_closed


async def _cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _wrap_stream_handlers(host: Any) -> None:
    """Guard every handler: those registered now (identify, ping) and any added later."""
    mux = host.get_mux()
    for protocol, handler in list(mux.handlers.items()):
        if handler is not None and not hasattr(handler, "__wrapped__"):
            mux.handlers[protocol] = safe_handler(handler)
    original = mux.add_handler

    def add_handler(protocol: TProtocol, handler: Any) -> None:
        original(protocol, safe_handler(handler))

    mux.add_handler = add_handler
