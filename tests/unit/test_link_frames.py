"""The session's WebSocket adapter (managers/_link.py) takes each message as the connection
parses it: messages that came with the handshake, fragmented ones, binary ones, a frame the
core refuses, and the close, against a real websockets server on loopback."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.server import ServerConnection, serve

from fabstir_sdk.errors import HostUnreachableError, ProtocolError
from fabstir_sdk.managers._link import Link
from fabstir_sdk.protocol import ClientSession, PongFrame, SessionInitAck, StreamEnd

USER = "0x" + "ab" * 20


async def test_messages_reach_the_core_in_order_however_they_are_framed() -> None:
    seen: list[dict[str, object]] = []
    done = asyncio.Event()

    async def host(ws: ServerConnection) -> None:
        await ws.send('{"type":"connected"}')  # before the client reads anything
        seen.append(json.loads(await ws.recv()))
        await ws.send(iter(['{"type":"session_init_ack",', '"status":"success"', "}"]))
        await ws.send(b'{"type":"pong"}')
        await ws.send("{not json")
        await ws.send(iter([b'{"type":"stream_end",', b'"tokens_used":3}']))
        await done.wait()
        await ws.close()

    async with serve(host, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        proto = ClientSession(job_id=7, chain_id=31337, encrypted=False, user_address=USER)
        link = await Link.open(f"ws://127.0.0.1:{port}/v1/ws", proto, within=60)
        assert seen == [
            {
                "type": "session_init",
                "jobId": "7",
                "session_id": "7",
                "chain_id": 31337,
                "user_address": USER,
            }
        ]
        assert proto.ready
        assert isinstance(await link.next_event(None), PongFrame)
        with pytest.raises(ProtocolError, match="not valid JSON"):
            await link.next_event(None)
        end = await link.next_event(None)
        assert isinstance(end, StreamEnd) and end.tokens_used == 3
        assert proto.tokens_reported == 3
        done.set()
        for _ in range(2):  # the close is seen by every later wait
            with pytest.raises(HostUnreachableError, match="closed the connection"):
                await link.next_event(None)
        assert link.closed
        await link.close()


async def test_a_wait_with_a_deadline_wakes_for_a_late_message() -> None:
    release = asyncio.Event()

    async def host(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(SessionInitAck(session_id="7").to_json())
        await release.wait()
        await ws.send('{"type":"pong"}')
        await ws.wait_closed()

    async with serve(host, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        proto = ClientSession(job_id=7, chain_id=31337, encrypted=False, user_address=USER)
        link = await Link.open(f"ws://127.0.0.1:{port}/v1/ws", proto, within=60)
        assert link.pending() is None
        waiting = asyncio.ensure_future(link.next_event(link.loop.time() + 3600, "pong", 3600))
        await asyncio.sleep(0)
        assert not waiting.done()
        release.set()
        assert isinstance(await waiting, PongFrame)
        await link.close()


async def test_queued_takes_plain_events_only() -> None:
    """The per-token path (``queued``) takes a plain event; a timer tick or an error at the
    head stays for ``next_event``, which checks the deadline or raises it."""
    from fabstir_sdk.managers import _link

    link = Link.__new__(Link)  # no connection needed: only the queue is used
    link.events = _link.deque()
    link._waiter = None
    link.loop = asyncio.get_running_loop()
    link._deadline, link._timer = None, None
    end = StreamEnd(tokens_used=3)
    assert link.queued() is None
    link._put(end)
    assert link.queued() is end and not link.events
    link._put(_link._TICK)
    link._put(end)
    assert link.queued() is None and len(link.events) == 2
    assert await link.next_event(None) is end  # the tick is skipped without a deadline
    error = HostUnreachableError("gone")
    link._put(error)
    assert link.queued() is None
    with pytest.raises(HostUnreachableError):
        await link.next_event(None)
