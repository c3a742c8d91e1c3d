"""The libp2p node on loopback: real sockets, real py-libp2p, each workaround checked.

Helpers at the top reach into the trio thread (``node._bridge.call``) to look at what the
public API hides: the negotiated protocols, the swarm's settings, raw streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import threading

import pytest
import trio
from eth_account import Account

from fabstir_sdk import P2PTimeoutError, PeerUnreachableError
from fabstir_sdk.p2p import HostLoad, HostProtocolServer, P2PNode, Provider
from fabstir_sdk.p2p._bridge import TrioBridge

CHAIN = 31337
MODEL = "fabstir/builtin:toy-1.gguf"
HOST_KEY = "0x" + "31" * 32
UNUSED_PEER = "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"


def libp2p_host(node: P2PNode):
    return node._node._host


async def on_trio(node: P2PNode, fn, *args):
    """Run ``fn`` on the node's trio thread (tests only: this is what the API hides)."""
    return await node._bridge.call(fn, *args)


class Server(HostProtocolServer):
    """HostProtocolServer whose ``load`` can be slowed down or held, counting its calls.

    ``hold=True``: each ``load`` sets ``entered`` and then waits until it is cancelled (so a
    test waits on that event, never on a guess of how long the request takes to arrive).
    """

    def __init__(self, delay: float = 0.0, *, hold: bool = False) -> None:
        super().__init__(
            Account.from_key(HOST_KEY),
            chain_id=CHAIN,
            api_url="http://127.0.0.1:1",
            models=["0x" + "11" * 32],
            prices={None: {"0x" + "11" * 32: 5}},
            load=self._load_now,
        )
        self.delay = delay
        self.hold = hold
        self.calls = 0
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def _load_now(self) -> HostLoad:
        self.calls += 1
        self.entered.set()
        try:
            if self.hold:
                await asyncio.Event().wait()
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return HostLoad(active_sessions=self.calls, max_sessions=9)


@pytest.fixture
async def host_node():
    """The default handler deadline (10 s): honest requests are served on a busy machine."""
    async with P2PNode(dht_server=True) as node:
        yield node


@pytest.fixture
async def client_node():
    async with P2PNode() as node:
        yield node


async def eventually(predicate, within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- connections


async def test_connect_uses_noise_and_yamux_and_one_connection(host_node, client_node):
    target = host_node.info.addrs[0]
    peers = await asyncio.gather(*(client_node.connect(target) for _ in range(3)))
    assert peers == [host_node.peer_id] * 3
    assert client_node.connected_peers() == [host_node.peer_id]
    await eventually(lambda: host_node.connected_peers() == [client_node.peer_id])

    async def inspect():
        conns = libp2p_host(client_node).get_network().get_connections()
        muxed = conns[0].muxed_conn
        return len(conns), muxed.negotiated_security_protocol, muxed.negotiated_muxer_protocol

    assert await on_trio(client_node, inspect) == (1, "/noise", "/yamux/1.0.0")


async def test_swarm_settings_are_the_workarounds(host_node):
    async def settings():
        host = libp2p_host(host_node)
        net = host.get_network()
        retry = net.retry_config
        return (
            net.connection_config.max_connections_per_peer,
            (retry.max_retries, retry.initial_delay),
            net._inbound_limiter.total_tokens,
            sorted(getattr(h, "__name__", "") for h in host.get_mux().handlers.values()),
        )

    per_peer, retry, inbound, handlers = await on_trio(host_node, settings)
    assert per_peer == 1
    assert retry == (1, 0.05)
    assert inbound == 300  # libp2p's own cap, now on connections open at the same time
    # identify, identify-push, ping, kad (server mode) and ours: every one guarded
    assert len(handlers) == 5
    assert all(name.startswith("safe_") for name in handlers)


async def test_inbound_slots_and_tasks_come_back_when_connections_close(host_node):
    """py-libp2p 0.8.1 kept each inbound connection's limiter slot and handler task until
    the swarm stopped; with two slots, the third client in its lifetime was refused."""

    async def cap_at_two() -> None:
        libp2p_host(host_node).get_network()._inbound_limiter = trio.CapacityLimiter(2)

    def count(task) -> int:
        return 1 + sum(count(c) for n in task.child_nurseries for c in n.child_tasks)

    async def state() -> tuple[int, int]:
        limiter = libp2p_host(host_node).get_network()._inbound_limiter
        return limiter.borrowed_tokens, count(trio.lowlevel.current_root_task())

    await host_node.serve(Server())
    await on_trio(host_node, cap_at_two)
    tasks_before = (await on_trio(host_node, state))[1]
    async with P2PNode() as a, P2PNode() as b, P2PNode() as c:
        for i in range(12):
            client = (a, b, c)[i % 3]
            assert await client.connect(host_node.info.addrs[0]) == host_node.peer_id
            reply = await client.request(host_node.peer_id, {"type": "load"})
            assert reply["active_sessions"] == i + 1
            await client.disconnect(host_node.peer_id)
            assert client.connected_peers() == []
        await eventually(lambda: host_node.connected_peers() == [])

        async def settled() -> bool:
            return await state() == (0, tasks_before)

        for _ in range(100):
            if await on_trio(host_node, settled):
                break
            await asyncio.sleep(0.02)
        assert await on_trio(host_node, state) == (0, tasks_before)


async def test_hang_up_and_dial_again_at_once(host_node, client_node):
    """disconnect() returns once the socket is closed; libp2p's 0.2 s of teardown sleeps run
    in the background, and the closed connection is never handed to the next dial."""
    await host_node.serve(Server())
    for i in range(3):
        await client_node.connect(host_node.info.addrs[0])
        assert client_node.connected_peers() == [host_node.peer_id]
        reply = await client_node.request(host_node.peer_id, {"type": "load"})
        assert reply["active_sessions"] == i + 1
        await client_node.disconnect(host_node.peer_id)
        assert client_node.connected_peers() == []
    await client_node.disconnect(host_node.peer_id)  # no connection: nothing to do


async def test_plaintext_dialer_is_refused(host_node, client_node):
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.network.config import ConnectionConfig, RetryConfig
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
    from multiaddr import Multiaddr

    bridge = TrioBridge("plaintext-dialer")

    async def main(task_status):
        key_pair = create_new_key_pair()
        host = new_host(
            key_pair=key_pair,
            sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key_pair)},
            connection_config=ConnectionConfig(max_connections_per_peer=1),
        )
        host.get_network().retry_config = RetryConfig(max_retries=0)
        async with host.run([Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            task_status.started(host)
            await trio.sleep_forever()

    plain = await bridge.start(main)
    try:
        info = info_from_p2p_addr(Multiaddr(host_node.info.addrs[0]))
        with pytest.raises(PeerUnreachableError):
            await bridge.call(plain.connect, info, timeout=10)
    finally:
        await bridge.stop()
    assert host_node.connected_peers() == []
    assert await client_node.connect(host_node.info.addrs[0]) == host_node.peer_id  # still up


async def test_dial_retries_are_bounded(client_node):
    accepted = 0

    async def accept_and_close(reader, writer):
        nonlocal accepted
        accepted += 1
        writer.close()

    server = await asyncio.start_server(accept_and_close, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(PeerUnreachableError) as info:
            await client_node.connect(f"/ip4/127.0.0.1/tcp/{port}/p2p/{UNUSED_PEER}")
        assert not isinstance(info.value, BaseExceptionGroup)
        assert accepted == 2  # the first attempt and exactly one retry
    finally:
        server.close()
        await server.wait_closed()


async def test_a_restarted_peer_can_be_dialled_again_at_once(client_node):
    seed = b"restarted peer seed ............."
    async with P2PNode(seed=seed) as first:
        address, peer = first.info.addrs[0], first.peer_id
    with pytest.raises(PeerUnreachableError):
        await client_node.connect(address)
    # py-libp2p would refuse this dial for 60 s ("recently failed"); we lift that block
    port = address.split("/tcp/")[1].split("/")[0]
    async with P2PNode(seed=seed, listen=[f"/ip4/127.0.0.1/tcp/{port}"]) as again:
        assert again.peer_id == peer
        assert await client_node.connect(address) == peer


# --------------------------------------------------------------------------- requests


async def test_request_reply_over_the_host_protocol(host_node, client_node):
    server = Server()
    await host_node.serve(server)
    await client_node.connect(host_node.info.addrs[0])
    reply = await client_node.request(host_node.peer_id, {"type": "load"})
    assert reply == {"type": "load", "active_sessions": 1, "max_sessions": 9, "queued": 0}
    pong, rtt = await client_node.ping(host_node.peer_id, chain_id=CHAIN, host=server.address)
    assert (pong.host, pong.peer_id) == (server.address, host_node.peer_id)
    assert rtt > 0
    # the peer is dialled on demand when its addresses are known
    async with P2PNode() as other:
        await other.remember(host_node.peer_id, host_node.info.addrs)
        assert (await other.request(host_node.peer_id, {"type": "models"}))["models"] == [
            "0x" + "11" * 32
        ]


async def test_a_stream_the_host_closed_when_idle_is_replaced(client_node, caplog):
    # 3 s idle: the first request reaches the host's reader within it on a loaded machine too
    # (at 0.1 s a late trio thread saw its fresh stream reset before the request arrived)
    async with P2PNode(idle_timeout=3.0) as host:
        server = Server()
        await host.serve(server)
        await client_node.connect(host.info.addrs[0])
        with caplog.at_level(logging.DEBUG, "fabstir_sdk.p2p"):
            reply = await client_node.request(host.peer_id, {"type": "load"})
            assert reply["active_sessions"] == 1
            # the host resets the idle stream (its own event, whenever it comes); the client
            # still caches it
            while not any("idle or too slow" in r.getMessage() for r in caplog.records):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert (await client_node.request(host.peer_id, {"type": "load"}))["active_sessions"] == 2


async def test_a_node_that_is_not_a_host_says_so(host_node, client_node):
    await client_node.connect(host_node.info.addrs[0])
    assert await client_node.request(host_node.peer_id, {"type": "load"}) == {
        "type": "error",
        "code": "not_serving",
        "message": "this peer is not a host",
    }


async def test_asyncio_cancellation_resets_the_stream(host_node, client_node):
    server = Server(hold=True)
    await host_node.serve(server)
    await client_node.connect(host_node.info.addrs[0])
    request = asyncio.create_task(client_node.request(host_node.peer_id, {"type": "load"}))
    await server.entered.wait()  # the request is being served: cancel it now, not on a timer
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    server.hold = False
    # a fresh stream: the late reply to the cancelled request is never read as this one's
    reply = await client_node.request(host_node.peer_id, {"type": "load"})
    assert reply["active_sessions"] == 2


async def test_trio_side_timeout_is_typed(host_node, client_node):
    server = Server(hold=True)  # never answers: only the client's deadline can end the wait
    await host_node.serve(server)
    await client_node.connect(host_node.info.addrs[0])
    with pytest.raises(P2PTimeoutError):
        await client_node.request(host_node.peer_id, {"type": "load"}, timeout=0.05)
    server.hold = False
    assert (await client_node.request(host_node.peer_id, {"type": "load"}))["type"] == "load"


@pytest.mark.parametrize("cached_stream", [True, False], ids=["cached-stream", "new-stream"])
async def test_a_broken_connection_is_dialled_again(host_node, client_node, cached_stream):
    """A request on a connection whose socket broke dials the peer again and is answered.

    This is what a deadline that cancels libp2p mid-write leaves behind (a half-sent
    encrypted frame, which the peer drops): here the break is made on purpose by shutting
    the client socket's write side, so the next write fails with EPIPE whatever the timing.
    """
    from libp2p.peer.id import ID

    from fabstir_sdk.p2p._node import _socket_stream

    server = Server()
    await host_node.serve(server)
    await client_node.connect(host_node.info.addrs[0])
    if cached_stream:  # else the request after the break opens the first stream
        assert (await client_node.request(host_node.peer_id, {"type": "load"}))["type"] == "load"
    network = libp2p_host(client_node).get_network()
    peer = ID.from_base58(host_node.peer_id)

    async def break_then_ask():
        (old,) = network.get_connections(peer)
        _socket_stream(old).socket.shutdown(socket.SHUT_WR)
        reply = await client_node._node.request(host_node.peer_id, {"type": "load"})
        return old, reply, network.get_connections(peer)

    old, reply, now = await on_trio(client_node, break_then_ask)
    assert reply["type"] == "load" and server.calls == 1 + cached_stream
    assert len(now) == 1 and now[0] is not old  # a new connection answered
    assert client_node.connected_peers() == [host_node.peer_id]


def test_a_broken_pipe_under_libp2p_counts_as_a_broken_connection():
    """The chain CI saw when a deadline broke the connection mid-write: SYN write -> EPIPE.

    The muxer had not noticed yet (the connection still looked open), so the exception
    itself must say the connection is gone; a timeout or a refused protocol must not.
    """
    from libp2p.host.exceptions import StreamFailure
    from libp2p.stream_muxer.exceptions import MuxedStreamError

    from fabstir_sdk.p2p._node import _connection_broken

    def chain(*layers: BaseException) -> BaseException:
        for inner, outer in itertools.pairwise(layers):
            outer.__cause__ = inner
        return layers[-1]

    epipe = chain(
        BrokenPipeError(32, "Broken pipe"),
        trio.BrokenResourceError("socket connection broken: [Errno 32] Broken pipe"),
        MuxedStreamError("Failed to send SYN: socket connection broken"),
        StreamFailure("Failed to create stream to peer"),
    )
    assert _connection_broken(epipe)
    assert _connection_broken(MuxedStreamError("Connection is shutting down"))
    assert not _connection_broken(chain(trio.TooSlowError(), StreamFailure("no answer")))
    assert not _connection_broken(StreamFailure("protocol not supported"))


async def test_host_deadline_cancels_the_asyncio_handler(client_node):
    server = Server(delay=30)  # never in time for the host's 0.5 s deadline
    async with P2PNode(dht_server=True, handler_timeout=0.5) as host_node:
        await host_node.serve(server)
        await client_node.connect(host_node.info.addrs[0])
        reply = await client_node.request(host_node.peer_id, {"type": "load"})
        assert reply == {"type": "error", "code": "timeout", "message": "the host took too long"}
        assert server.cancelled.is_set()  # the trio-side deadline reached the asyncio task


async def test_a_raising_stream_handler_does_not_kill_the_node(host_node, client_node):
    await host_node.serve(Server())

    async def boom(stream):
        await stream.read(10)
        raise RuntimeError("handler bug")

    async def mount():
        libp2p_host(host_node).set_stream_handler("/test/boom/1.0.0", boom)
        return getattr(libp2p_host(host_node).get_mux().handlers["/test/boom/1.0.0"], "__name__")

    assert await on_trio(host_node, mount) == "safe_boom"
    await client_node.connect(host_node.info.addrs[0])

    async def poke():
        from libp2p.peer.id import ID

        stream = await libp2p_host(client_node).new_stream(
            ID.from_base58(host_node.peer_id), ["/test/boom/1.0.0"]
        )
        await stream.write(b"hello")
        try:
            return await stream.read(10)
        except Exception as exc:
            return type(exc).__name__

    for _ in range(3):
        assert await on_trio(client_node, poke) in ("StreamReset", "StreamEOF", b"")
    assert (await client_node.request(host_node.peer_id, {"type": "load"}))["type"] == "load"
    assert host_node.running


# --------------------------------------------------------------------------- DHT


async def test_dht_provide_and_find_through_a_bootstrap_peer(host_node):
    async with P2PNode(dht_server=True) as bootstrap, P2PNode() as client:
        await host_node.connect(bootstrap.info.addrs[0])
        assert await host_node.provide(MODEL)
        assert await host_node.provide(MODEL)  # twice: still one provider below
        assert await client.bootstrap([bootstrap.info.addrs[0]]) == [bootstrap.peer_id]
        providers = await client.find_providers(MODEL)
        assert providers == [Provider(peer_id=host_node.peer_id, addrs=host_node.info.addrs)]
        assert await client.find_providers("fabstir/builtin:unknown.gguf") == []

        # a later provider is found by the next lookup: the client's store held the first
        # answer, which libp2p alone would have returned for 48 h
        async with P2PNode(dht_server=True) as late:
            await late.connect(bootstrap.info.addrs[0])
            assert await late.provide(MODEL)
            providers = await client.find_providers(MODEL)
            assert sorted(p.peer_id for p in providers) == sorted([host_node.peer_id, late.peer_id])


# --------------------------------------------------------------------------- lifecycle


def _sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


async def test_stop_leaves_no_thread_socket_or_task():
    current = asyncio.current_task()
    threads_before = {t.ident for t in threading.enumerate()}
    sockets_before = _sockets()
    tasks_before = asyncio.all_tasks() - {current}

    async with P2PNode(dht_server=True) as a, P2PNode() as b:
        await a.serve(Server())
        await b.connect(a.info.addrs[0])
        await a.provide(MODEL)
        assert await b.find_providers(MODEL)
        assert (await b.request(a.peer_id, {"type": "load"}))["type"] == "load"
        assert _sockets() > sockets_before
        assert len(threading.enumerate()) == len(threads_before) + 2
    assert {t.ident for t in threading.enumerate()} == threads_before
    assert _sockets() == sockets_before
    assert asyncio.all_tasks() - {current} == tasks_before
    assert not a.running and a.connected_peers() == []


async def test_libp2p_logs_are_forwarded_at_debug(host_node):
    """libp2p's records reach the root logger (and stderr) only as DEBUG records of ours.

    pytest hangs its capture handlers on non-propagating loggers too, so the check uses a
    handler of its own on the root logger.
    """
    import logging

    seen: list[tuple[str, int, str]] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.name, record.levelno, record.getMessage()))

    root, ours = logging.getLogger(), logging.getLogger("fabstir_sdk.p2p")
    grab, level = Grab(), ours.level
    root.addHandler(grab)
    ours.setLevel(logging.DEBUG)
    try:
        logging.getLogger("libp2p.kad_dht.kad_dht").warning("Failed to read DHT message")
    finally:
        root.removeHandler(grab)
        ours.setLevel(level)
    assert logging.getLogger("libp2p").propagate is False
    assert seen == [
        (
            "fabstir_sdk.p2p",
            logging.DEBUG,
            "libp2p libp2p.kad_dht.kad_dht: Failed to read DHT message",
        )
    ]
