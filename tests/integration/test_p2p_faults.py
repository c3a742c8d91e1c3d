"""Bad input and bad peers: typed errors, bounded waits, and the node survives all of them."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import trio

from fabstir_sdk import (
    InvalidMultiaddrError,
    InvalidPeerIdError,
    P2PProtocolError,
    P2PTimeoutError,
    PeerUnreachableError,
    ValidationError,
)
from fabstir_sdk.p2p import HOST_PROTOCOL, P2PNode
from fabstir_sdk.p2p._wire import P2PFrameTooLargeError, decode_message, encode_frame

from .test_p2p_node import UNUSED_PEER, Server, libp2p_host, on_trio


@pytest.fixture
async def host_node():
    # a 0.3 s frame deadline for the slow peer; honest frames arrive whole in one read
    async with P2PNode(dht_server=True, frame_timeout=0.3) as node:
        await node.serve(Server())
        yield node


@pytest.fixture
async def client_node(host_node):
    async with P2PNode() as node:
        await node.connect(host_node.info.addrs[0])
        yield node


async def still_serves(client: P2PNode, host: P2PNode) -> None:
    reply = await client.request(host.peer_id, {"type": "models"})
    assert reply == {"type": "models", "models": ["0x" + "11" * 32]}


async def raw_exchange(client: P2PNode, peer: str, payload: bytes, *, wait: float = 5.0):
    """Open a raw stream, write ``payload``, read until the host ends the stream."""

    async def go():
        from libp2p.peer.id import ID

        stream = await libp2p_host(client).new_stream(ID.from_base58(peer), [HOST_PROTOCOL])
        await stream.write(payload)
        data = b""
        try:
            while True:
                with trio.fail_after(wait):
                    chunk = await stream.read(65536)
                if not chunk:
                    return data, "eof"
                data += chunk
        except trio.TooSlowError:
            return data, "still open"
        except Exception as exc:
            return data, type(exc).__name__

    return await on_trio(client, go)


def error_code(data: bytes) -> str:
    length = data[0]
    return decode_message(data[1 : 1 + length])["code"]


# --------------------------------------------------------------------------- bad input


async def test_malformed_multiaddrs_and_peer_ids(host_node, client_node):
    for bad in ["garbage", "/ip4/127.0.0.1/tcp/1", "/ip4/300.0.0.1/tcp/1/p2p/" + UNUSED_PEER]:
        with pytest.raises(InvalidMultiaddrError):
            await client_node.connect(bad)
        with pytest.raises(InvalidMultiaddrError):
            await client_node.bootstrap([host_node.info.addrs[0], bad])
    for bad in ["notapeer", "", "12D3KooW"]:
        with pytest.raises(InvalidPeerIdError):
            await client_node.request(bad, {"type": "load"})
        with pytest.raises(InvalidPeerIdError):
            await client_node.remember(bad, host_node.info.addrs)
    with pytest.raises(ValidationError):
        await client_node.request(host_node.peer_id, {"no": "type"})
    with pytest.raises(ValidationError):
        await client_node.request(host_node.peer_id, {"type": "x", "pad": "p" * 70_000})
    with pytest.raises(InvalidMultiaddrError):
        P2PNode(listen=["/ip4/127.0.0.1/udp/4001"])
    with pytest.raises(ValidationError):
        P2PNode(listen=[host_node.info.addrs[0]])  # a listen address naming a peer
    with pytest.raises(ValidationError):
        P2PNode(listen="/ip4/127.0.0.1/tcp/0")
    await still_serves(client_node, host_node)


# --------------------------------------------------------------------------- dead peers


async def test_dead_bootstrap_fails_fast_and_typed():
    async with P2PNode() as gone:
        dead = gone.info.addrs[0]
    async with P2PNode(dial_timeout=1.0) as node:
        started = time.monotonic()
        with pytest.raises(PeerUnreachableError, match="none of the 1 bootstrap peers"):
            await node.bootstrap([dead])
        # bounded by the node's own deadlines (two dials of 1 s + backoff), with room for a
        # loaded machine: the point is that it does not hang, not how fast the machine is
        assert time.monotonic() - started < 15
        assert node.running


async def test_silent_bootstrap_is_bounded():
    """A peer that accepts TCP and never speaks: the dial gives up after its deadline."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader, writer):
        held.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with P2PNode(dial_timeout=0.3) as node:
            started = time.monotonic()
            with pytest.raises((PeerUnreachableError, P2PTimeoutError)):
                await node.bootstrap([f"/ip4/127.0.0.1/tcp/{port}/p2p/{UNUSED_PEER}"])
            assert time.monotonic() - started < 15  # bounded (2 x 0.3 s + backoff), not hung
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_one_live_bootstrap_is_enough(host_node):
    async with P2PNode() as gone:
        dead = gone.info.addrs[0]
    async with P2PNode() as node:
        assert await node.bootstrap([dead, host_node.info.addrs[0]]) == [host_node.peer_id]


async def test_request_to_an_unknown_peer_is_unreachable(client_node):
    with pytest.raises(PeerUnreachableError):
        await client_node.request(UNUSED_PEER, {"type": "load"})


# --------------------------------------------------------------------------- bad clients


async def test_garbage_from_a_peer(host_node, client_node):
    data, end = await raw_exchange(client_node, host_node.peer_id, b"\xff" * 11)
    assert error_code(data) == "bad_request" and end != "still open"
    data, end = await raw_exchange(client_node, host_node.peer_id, encode_frame(b"\x00not json"))
    assert error_code(data) == "bad_request" and end != "still open"
    data, _ = await raw_exchange(client_node, host_node.peer_id, encode_frame(b'["type"]'))
    assert error_code(data) == "bad_request"
    await still_serves(client_node, host_node)


async def test_oversize_message_from_a_peer(host_node, client_node):
    header = bytes([0x80, 0x80, 0x40])  # a uvarint declaring 1 MiB
    data, end = await raw_exchange(client_node, host_node.peer_id, header + b"x" * 1000)
    assert error_code(data) == "too_large" and end != "still open"
    await still_serves(client_node, host_node)


async def test_slow_peer_is_cut_off_while_others_are_served(host_node, client_node):
    half = encode_frame(b'{"type":"load","pad":"' + b"p" * 200 + b'"}')[:50]
    slow = asyncio.ensure_future(raw_exchange(client_node, host_node.peer_id, half))
    await still_serves(client_node, host_node)  # served while the slow stream hangs
    async with P2PNode() as other:
        await other.connect(host_node.info.addrs[0])
        await still_serves(other, host_node)
    data, end = await slow
    assert data == b"" and end in ("StreamReset", "StreamEOF", "eof")  # reset after 0.3 s
    await still_serves(client_node, host_node)


# --------------------------------------------------------------------------- bad hosts


@pytest.fixture
async def evil_host():
    """A node whose /fabstir/host/1.0.0 handler misbehaves as ``evil_host.mode`` says."""
    async with P2PNode(dht_server=True) as node:
        modes = {"mode": "garbage"}
        closed = threading.Event()

        async def handler(stream):
            await stream.read(65536)
            mode = modes["mode"]
            if mode == "garbage":
                await stream.write(b"\x05hello")
            elif mode == "oversize":
                await stream.write(bytes([0x80, 0x80, 0x80, 0x01]) + b"x" * 100)
            elif mode == "silent":
                await trio.sleep_forever()
            elif mode == "hangup":
                await stream.close()
                closed.set()

        async def mount():
            libp2p_host(node).set_stream_handler(HOST_PROTOCOL, handler)

        await on_trio(node, mount)
        node.modes = modes
        yield node


async def test_bad_replies_from_a_host(evil_host, host_node):
    async with P2PNode() as client:
        await client.connect(evil_host.info.addrs[0])
        await client.connect(host_node.info.addrs[0])
        evil_host.modes["mode"] = "garbage"
        with pytest.raises(P2PProtocolError, match="not UTF-8 JSON"):
            await client.request(evil_host.peer_id, {"type": "load"})
        evil_host.modes["mode"] = "oversize"
        with pytest.raises(P2PFrameTooLargeError):
            await client.request(evil_host.peer_id, {"type": "load"})
        evil_host.modes["mode"] = "hangup"
        with pytest.raises(P2PProtocolError):
            await client.request(evil_host.peer_id, {"type": "load"})
        evil_host.modes["mode"] = "silent"
        with pytest.raises(P2PTimeoutError):
            await client.request(evil_host.peer_id, {"type": "load"}, timeout=0.2)
        # the client node is unharmed and still talks to good hosts
        await still_serves(client, host_node)
        assert client.running
