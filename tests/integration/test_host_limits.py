"""The reference host's per-client limits, against host processes on a private devnet:
frame size, concurrent sessions, frame rate, connections per IP, slow request heads,
idle WebSockets, and a flood of connections that must not starve an honest client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from urllib.parse import urlsplit

import pytest
import websockets

from fabstir_sdk.devnet import Devnet, RunningHost
from fabstir_sdk.host._limits import FrameRate
from fabstir_sdk.protocol import MAX_FRAME_BYTES

from .host_helpers import DROPPED, HANG, Client, encrypted, host_logged, log_mark, open_job

STRICT, FLOODED, REFILLING, HEADS = 2, 3, 4, 5


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start() as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def strict(net) -> RunningHost:
    """Tight limits, so that each one is reached in a few frames and a fraction of a second.
    One frame earned per 100 s: while a test runs none is, so that what the host allows and
    refuses is exact on a machine of any speed. The default request-head deadline (10 s):
    every test here opens WebSockets, and a short one would cut off a handshake that a
    loaded machine runs late (the deadline is tested on its own host, ``heads``)."""
    running = await net.start_host(
        account=STRICT,
        chain_poll=0.1,
        max_sessions=1,
        max_connections_per_ip=6,
        frames_per_second=0.01,
        frame_burst=10,
        idle_timeout=1.5,
        context_window=250_000,
        debug=True,  # its DEBUG log says when it frees a slot or drops a client: tests wait on it
    )
    yield running
    await running.stop()


@pytest.fixture(scope="module")
async def refilling(net) -> RunningHost:
    """A burst of 10 frames and one frame earned per second, and the default idle deadline
    (a test waits for a frame to be earned without sending anything)."""
    running = await net.start_host(account=REFILLING, frames_per_second=1, frame_burst=10)
    yield running
    await running.stop()


@pytest.fixture(scope="module")
async def heads(net) -> RunningHost:
    """A 2 s request-head deadline; its DEBUG log names each connection it cuts off."""
    running = await net.start_host(account=HEADS, header_timeout=2.0, debug=True)
    yield running
    await running.stop()


@pytest.fixture(scope="module")
async def flooded(net) -> RunningHost:
    """Default limits but a 3 s request-head deadline (the flood's slow heads are cut off
    and come back; an honest client's handshake must get through it on a loaded machine)."""
    running = await net.start_host(account=FLOODED, chain_poll=0.1, header_timeout=3.0)
    yield running
    await running.stop()


def test_frame_rate_is_a_token_bucket(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    rate = FrameRate(2.0, 3)
    assert [rate.allow() for _ in range(4)] == [True, True, True, False]
    clock[0] += 0.5  # one frame earned
    assert [rate.allow(), rate.allow()] == [True, False]
    clock[0] += 100  # never more than the burst
    assert [rate.allow() for _ in range(4)] == [True, True, True, False]


async def _ws(host: RunningHost) -> websockets.ClientConnection:
    ws = await websockets.connect(host.ws_url, max_size=None, compression=None)
    assert json.loads(await ws.recv())["type"] == "connected"
    return ws


async def test_oversized_frames(strict):
    ws = await _ws(strict)
    try:  # above the cap: a typed error and the connection goes on
        await ws.send('{"type":"ping","pad":"' + "x" * MAX_FRAME_BYTES + '"}')
        assert json.loads(await ws.recv())["code"] == "FRAME_TOO_LARGE"
        await ws.send('{"type":"ping"}')
        assert json.loads(await ws.recv()) == {"type": "pong"}
        # above twice the cap aiohttp stops reading it at all: close 1009 (message too big)
        with contextlib.suppress(websockets.ConnectionClosed, OSError):  # closed mid-send
            await ws.send("x" * (2 * MAX_FRAME_BYTES + 1))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), HANG)
        assert ws.close_code in (1009, 1006)  # 1006: the reset overtook the close frame
    finally:
        await ws.close()


async def test_max_sessions_refuses_one_more_until_one_ends(net, strict):
    first_job = await open_job(net, strict.address)
    first = await Client.session(net, strict, first_job)
    second_job = await open_job(net, strict.address)
    second = await Client.connect(strict, encrypted(net, strict, second_job))
    try:
        assert await second.error_code(second.proto.init_frame()) == "HOST_BUSY"
        assert (await first.ask("count to 3"))[0] == "1 2 3"
        await first.close()
        # the host's own event: it has seen the close and no longer counts the first session
        gone = f"job {first_job} has no connection left"
        await asyncio.wait_for(host_logged(strict, gone), HANG)
        await second.init()  # accepted at once
        assert (await second.ask("count to 2"))[0] == "1 2"
    finally:
        await first.close()
        await second.close()


PING = '{"type":"ping"}'


async def _replies(ws: websockets.ClientConnection, count: int) -> list[object]:
    """The next ``count`` replies: "pong" or the error code."""
    out = []
    for _ in range(count):
        reply = json.loads(await asyncio.wait_for(ws.recv(), HANG))
        out.append("pong" if reply == {"type": "pong"} else reply.get("code"))
    return out


async def test_frame_rate_limit(strict):
    """The burst, then RATE_LIMITED for each frame over it, then the connection is closed
    once a burst's worth (10) has been refused in a row."""
    ws = await _ws(strict)
    try:
        for _ in range(20):
            await ws.send(PING)
        assert await _replies(ws, 20) == ["pong"] * 10 + ["RATE_LIMITED"] * 10
        await ws.send(PING)  # the 11th refused in a row: cut off, unanswered
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), HANG)
        assert (ws.close_code, ws.close_reason) == (1008, "rate")
    finally:
        await ws.close()


async def test_frame_rate_refills_and_an_allowed_frame_restarts_the_count(refilling):
    """One frame earned per second (1/s); after an allowed frame, a client is cut off only
    once 10 more are refused in a row. Exact on any machine: the test waits at least as long
    as a frame takes to earn, and checks the refusals counted since the last allowed frame,
    whatever a slow machine earned in between."""
    ws = await _ws(refilling)
    try:
        for _ in range(11):
            await ws.send(PING)
        seen = await _replies(ws, 11)
        assert seen[:10] == ["pong"] * 10  # the burst
        for _ in range(100):  # a slow machine earned frames meanwhile: spend them
            if seen[-1] == "RATE_LIMITED":
                break
            await ws.send(PING)
            seen += await _replies(ws, 1)
        assert seen[-1] == "RATE_LIMITED"  # the bucket is empty (under one frame)
        await asyncio.sleep(1.05)  # a frame is earned each second
        await ws.send(PING)
        seen += await _replies(ws, 1)
        assert seen[-1] == "pong"
        with pytest.raises(websockets.ConnectionClosed):
            for _ in range(100):  # until the host cuts it off (at once, unless frames are earned)
                for _ in range(11):
                    await ws.send(PING)
                for _ in range(11):
                    seen += await _replies(ws, 1)
        assert (ws.close_code, ws.close_reason) == (1008, "rate")
        # cut off after exactly 10 refusals since the last allowed frame
        assert seen[-11:] == ["pong"] + ["RATE_LIMITED"] * 10
    finally:
        await ws.close()


async def test_connections_per_ip(strict):
    open_ = [await _ws(strict) for _ in range(6)]
    try:
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(strict.ws_url)
        assert info.value.response.status_code == 429
        assert json.loads(info.value.response.body) == {
            "error": "too many connections from your address",
            "code": "BUSY",
        }
        closing = open_.pop()
        ip, port = closing.local_address[:2]
        mark = log_mark(strict)
        await closing.close()
        # a slot is free again once the host has seen the close: its own event, then at once
        freed = f"connection from {ip}:{port} closed"
        await asyncio.wait_for(host_logged(strict, freed, since=mark), HANG)
        open_.append(await _ws(strict))
    finally:
        for ws in open_:
            await ws.close()


async def _raw(host: RunningHost) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = urlsplit(host.api_url)
    assert url.hostname == "127.0.0.1"
    return await asyncio.open_connection("127.0.0.1", url.port)


async def _cut_off(host: RunningHost, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]):
    """The host cut the connection off for its request-head deadline (its own log says so),
    and closed it (EOF or reset) without answering a byte (any more)."""
    ip, port = conn[1].get_extra_info("sockname")[:2]
    await asyncio.wait_for(host_logged(host, f"cutting off {ip}:{port}: no request head"), HANG)
    try:
        return await asyncio.wait_for(conn[0].read(), HANG) == b""
    except ConnectionError:
        return True


async def test_slow_request_heads_are_cut_off(heads):
    # a head that completed: no deadline while it is served (a WebSocket, for as long as it
    # lasts); opened first, its deadline would have passed before the others' below
    ws = await _ws(heads)
    started = time.monotonic()  # before the host can arm a deadline
    silent = await _raw(heads)
    dribble = await _raw(heads)
    dribble[1].write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")

    async def dribbling() -> None:  # a header byte every 0.1 s: the head never completes
        while True:
            await asyncio.sleep(0.1)
            with contextlib.suppress(ConnectionError):
                dribble[1].write(b"X")

    sender = asyncio.create_task(dribbling())
    try:
        assert await _cut_off(heads, silent)
        assert await _cut_off(heads, dribble)  # though bytes kept coming
        assert time.monotonic() - started > 1.9  # not before the 2 s deadline (any speed)
        sender.cancel()
        await ws.send(PING)  # the host expires deadlines in order: the WebSocket's was off
        assert json.loads(await asyncio.wait_for(ws.recv(), HANG)) == {"type": "pong"}
        # a whole request is served, on a keep-alive connection that the deadline then closes
        # once it idles
        reader, writer = await _raw(heads)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG)
        assert head.startswith(b"HTTP/1.1 200 OK")
        length = int(
            next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(
                b":"
            )[1]
        )
        assert json.loads(await reader.readexactly(length)) == {"status": "healthy", "issues": None}
        assert await _cut_off(heads, (reader, writer))
        writer.close()
    finally:
        sender.cancel()
        await ws.close()
        for _, w in (silent, dribble):
            w.close()


async def test_a_client_that_stops_reading_is_dropped(net, strict):
    """The host's sends block once the buffers fill; after the idle deadline it lets go."""
    client = await Client.session(net, strict, await open_job(net, strict.address))
    try:
        # ~200 bytes a frame: some 40 MB, far more than the socket buffers hold
        frame = client.proto.prompt_frame("write 200000 words", max_tokens=200_000)
        mark = log_mark(strict)
        await client.ws.send(frame)
        # read nothing until the host says it dropped us (an event, not a guess of how long
        # that takes on this machine; the bound only turns a hang into a failure)
        await asyncio.wait_for(host_logged(strict, DROPPED, since=mark), 120)
        received = 0
        with pytest.raises(websockets.ConnectionClosed):
            while True:  # what the buffers held, then the end: the host let go
                frame = await asyncio.wait_for(client.ws.recv(), HANG)
                assert '"stream_end"' not in frame  # the answer never completes
                received += 1
        assert 16 < received < 200_000
        assert client.ws.close_code in (None, 1006)  # aborted, no closing handshake
    finally:
        await client.close()


async def test_idle_websocket_is_closed(strict):
    started = time.monotonic()  # before the host can start its idle clock
    ws = await _ws(strict)
    with pytest.raises(websockets.ConnectionClosed):  # the bound only turns a hang into a failure
        await asyncio.wait_for(ws.recv(), HANG)
    assert (ws.close_code, ws.close_reason) == (1008, "idle")  # the idle deadline closed it
    assert time.monotonic() - started > 1.4  # not before the 1.5 s deadline (any speed)


#: The flood, run as its own process until its stdin closes: slow request heads, half-done
#: WebSocket handshakes and WebSockets sending garbage as fast as they can, each reopened
#: as soon as the host drops it. Prints "started", then "on" once it has reached full force
#: (more than the first round of heads and handshakes: the host cut them off and they came
#: back; over 1000 garbage frames), and at the end what it did as one JSON line.
FLOOD = """
import asyncio, json, os, sys, websockets
port = int(sys.argv[1])
done = {"heads": 0, "handshakes": 0, "frames": 0}
async def raw(head, key):
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head)
            done[key] += 1
            await asyncio.wait_for(reader.read(), 30)
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()
async def garbage():
    while True:
        try:
            async with websockets.connect(f"ws://127.0.0.1:{port}/v1/ws") as ws:
                while True:
                    await ws.send('{"type":"teleport"}')
                    done["frames"] += 1
                    if done["frames"] % 20 == 0:
                        await asyncio.sleep(0)
        except (websockets.ConnectionClosed, OSError):
            pass
async def full_force():
    while not (done["heads"] > 200 and done["handshakes"] > 20 and done["frames"] > 1000):
        await asyncio.sleep(0.05)
    print("on", flush=True)
async def main():
    print("started", flush=True)
    jobs = [raw(b"GET /health HTTP/1.1\\r\\n", "heads") for _ in range(200)]
    half = b"GET /v1/ws HTTP/1.1\\r\\nUpgrade: websocket\\r\\n"
    jobs += [raw(half, "handshakes") for _ in range(20)]
    jobs += [garbage() for _ in range(10)]
    tasks = [asyncio.ensure_future(j) for j in [*jobs, full_force()]]
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until closed
    print(json.dumps(done), flush=True)
    os._exit(0)  # no closing handshakes with a host that stopped reading us
asyncio.run(main())
"""


async def test_a_flood_of_connections_does_not_starve_an_honest_client(net, flooded):
    """While another process floods the host (230 connections at a time, reopened as they
    are dropped), an honest client opens a session and gets its whole answer: its handshake
    beats the host's request-head deadline, and the answer comes before the flood stops.
    How fast is a benchmark's question, not this test's (the bounds only turn a hang into
    a failure)."""
    job_id = await open_job(net, flooded.address)
    port = str(urlsplit(flooded.api_url).port)
    flood = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FLOOD,
        port,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert flood.stdin is not None and flood.stdout is not None
    try:
        assert await asyncio.wait_for(flood.stdout.readline(), HANG) == b"started\n"
        # the flood at full force (an event: however long this machine takes to get there)
        assert await asyncio.wait_for(flood.stdout.readline(), 120) == b"on\n"
        started = time.monotonic()
        client = await asyncio.wait_for(Client.session(net, flooded, job_id), HANG)
        try:
            text, end, _ = await asyncio.wait_for(client.ask("count to 30"), HANG)
        finally:
            await client.close()
        elapsed = time.monotonic() - started
        assert text == " ".join(str(i) for i in range(1, 31))
        assert end.tokens_used == 30
        flood.stdin.close()  # the flood ran alongside until now
        report = json.loads(await asyncio.wait_for(flood.stdout.readline(), HANG))
        assert report["heads"] > 200 and report["handshakes"] > 20 and report["frames"] > 1000
        print(f"flood {report}; honest session + answer in {elapsed:.2f} s")
    finally:
        if flood.returncode is None:
            flood.kill()
        await flood.wait()
