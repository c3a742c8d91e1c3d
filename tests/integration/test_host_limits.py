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

from .host_helpers import DROPPED, Client, encrypted, host_logged, open_job

STRICT, FLOODED = 2, 3


@pytest.fixture(scope="module")
async def net():
    async with Devnet.start() as devnet:
        yield devnet


@pytest.fixture(scope="module")
async def strict(net) -> RunningHost:
    """Tight limits, so that each one is reached in a few frames and a fraction of a second."""
    running = await net.start_host(
        account=STRICT,
        chain_poll=0.1,
        max_sessions=1,
        max_connections_per_ip=6,
        frames_per_second=1,
        frame_burst=10,
        header_timeout=0.5,
        idle_timeout=1.5,
        context_window=250_000,
        debug=True,  # its DEBUG log says when it drops a client: a test waits on that
    )
    yield running
    await running.stop()


@pytest.fixture(scope="module")
async def flooded(net) -> RunningHost:
    """Default limits but a 1 s request-head deadline."""
    running = await net.start_host(account=FLOODED, chain_poll=0.1, header_timeout=1.0)
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
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code in (1009, 1006)  # 1006: the reset overtook the close frame
    finally:
        await ws.close()


async def test_max_sessions_refuses_one_more_until_one_ends(net, strict):
    first = await Client.session(net, strict, await open_job(net, strict.address))
    second_job = await open_job(net, strict.address)
    second = await Client.connect(strict, encrypted(net, strict, second_job))
    try:
        assert await second.error_code(second.proto.init_frame()) == "HOST_BUSY"
        assert (await first.ask("count to 3"))[0] == "1 2 3"
        await first.close()
        for _ in range(100):  # the host sees the close
            await asyncio.sleep(0.05)
            try:
                await second.init()
                break
            except Exception as exc:  # HostError HOST_BUSY until the host noticed
                assert getattr(exc, "code", None) == "HOST_BUSY"
        assert (await second.ask("count to 2"))[0] == "1 2"
    finally:
        await first.close()
        await second.close()


async def test_frame_rate_limit(strict):
    ws = await _ws(strict)
    try:
        for _ in range(20):
            await ws.send('{"type":"ping"}')
        replies = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(20)]
        assert replies[:10] == [{"type": "pong"}] * 10  # the burst
        assert [r.get("code") for r in replies[10:]] == ["RATE_LIMITED"] * 10
        await asyncio.sleep(1.05)  # a frame is earned each second
        await ws.send('{"type":"ping"}')
        assert json.loads(await ws.recv()) == {"type": "pong"}
        # a client that goes on sending a burst's worth over the rate is cut off
        for _ in range(11):
            await ws.send('{"type":"ping"}')
        replies = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(10)]
        assert [r.get("code") for r in replies] == ["RATE_LIMITED"] * 10
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert (ws.close_code, ws.close_reason) == (1008, "rate")
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
        await open_.pop().close()
        await asyncio.sleep(0.05)
        open_.append(await _ws(strict))  # a slot is free again
    finally:
        for ws in open_:
            await ws.close()


async def _raw(host: RunningHost) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = urlsplit(host.api_url)
    assert url.hostname == "127.0.0.1"
    return await asyncio.open_connection("127.0.0.1", url.port)


async def _cut_off(reader: asyncio.StreamReader) -> bool:
    """The host closed the connection (EOF or reset) without answering a byte."""
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionError:
        return True


async def test_slow_request_heads_are_cut_off(strict):
    started = time.monotonic()
    silent = await _raw(strict)
    dribble = await _raw(strict)
    dribble[1].write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    try:
        for _ in range(20):  # one header byte every 0.1 s: the head never completes in time
            await asyncio.sleep(0.1)
            with contextlib.suppress(ConnectionError):
                dribble[1].write(b"X")
        assert await _cut_off(silent[0]) and await _cut_off(dribble[0])
        assert time.monotonic() - started < 15  # cut off, not left open (any machine speed)
        # a whole request within the deadline is served, on a keep-alive connection that the
        # deadline then closes once it idles
        reader, writer = await _raw(strict)
        writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 OK")
        length = int(
            next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(
                b":"
            )[1]
        )
        assert json.loads(await reader.readexactly(length)) == {"status": "healthy", "issues": None}
        assert await _cut_off(reader)
        writer.close()
    finally:
        for _, w in (silent, dribble):
            w.close()


async def test_a_client_that_stops_reading_is_dropped(net, strict):
    """The host's sends block once the buffers fill; after the idle deadline it lets go."""
    client = await Client.session(net, strict, await open_job(net, strict.address))
    try:
        # ~200 bytes a frame: some 40 MB, far more than the socket buffers hold
        frame = client.proto.prompt_frame("write 200000 words", max_tokens=200_000)
        await client.ws.send(frame)
        # read nothing until the host says it dropped us (an event, not a guess of how long
        # that takes on this machine; the bound only turns a hang into a failure)
        await asyncio.wait_for(host_logged(strict, DROPPED), 120)
        received = 0
        with pytest.raises(websockets.ConnectionClosed):
            while True:  # what the buffers held, then the end: the host let go
                frame = await asyncio.wait_for(client.ws.recv(), 10)
                assert '"stream_end"' not in frame  # the answer never completes
                received += 1
        assert 16 < received < 200_000
        assert client.ws.close_code in (None, 1006)  # aborted, no closing handshake
    finally:
        await client.close()


async def test_idle_websocket_is_closed(strict):
    ws = await _ws(strict)
    started = time.monotonic()
    with pytest.raises(websockets.ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 10)
    assert (ws.close_code, ws.close_reason) == (1008, "idle")
    assert 1.4 < time.monotonic() - started < 15  # not before the deadline; closed, not hung


#: The flood, run as its own process for ``seconds``: slow request heads, half-done
#: WebSocket handshakes and WebSockets sending garbage as fast as they can, each reopened
#: as soon as the host drops it. Prints what it did as one JSON line.
FLOOD = """
import asyncio, json, os, sys, websockets
port, seconds = int(sys.argv[1]), float(sys.argv[2])
done = {"heads": 0, "handshakes": 0, "frames": 0}
async def raw(head, key):
    while loop.time() < end:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head)
            done[key] += 1
            await asyncio.wait_for(reader.read(), max(0.01, end - loop.time()))
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()
async def garbage():
    while loop.time() < end:
        try:
            async with websockets.connect(f"ws://127.0.0.1:{port}/v1/ws") as ws:
                while loop.time() < end:
                    await ws.send('{"type":"teleport"}')
                    done["frames"] += 1
                    if done["frames"] % 20 == 0:
                        await asyncio.sleep(0)
        except (websockets.ConnectionClosed, OSError):
            pass
async def main():
    global loop, end
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    print("started", flush=True)
    jobs = [raw(b"GET /health HTTP/1.1\\r\\n", "heads") for _ in range(200)]
    half = b"GET /v1/ws HTTP/1.1\\r\\nUpgrade: websocket\\r\\n"
    jobs += [raw(half, "handshakes") for _ in range(20)]
    jobs += [garbage() for _ in range(10)]
    await asyncio.wait([asyncio.ensure_future(j) for j in jobs], timeout=seconds + 0.5)
    print(json.dumps(done), flush=True)
    os._exit(0)  # no closing handshakes with a host that stopped reading us
asyncio.run(main())
"""


async def test_a_flood_of_connections_does_not_starve_an_honest_client(net, flooded):
    """While another process floods the host (230 connections at a time, reopened as they
    are dropped), an honest client opens a session and gets its whole answer in time."""
    job_id = await open_job(net, flooded.address)
    port = str(urlsplit(flooded.api_url).port)
    flood = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FLOOD, port, "4", stdout=asyncio.subprocess.PIPE
    )
    assert flood.stdout is not None
    try:
        assert await asyncio.wait_for(flood.stdout.readline(), 20) == b"started\n"
        await asyncio.sleep(0.5)  # the flood is on
        started = time.monotonic()
        client = await asyncio.wait_for(Client.session(net, flooded, job_id), 10)
        try:
            text, end, _ = await asyncio.wait_for(client.ask("count to 30"), 10)
        finally:
            await client.close()
        elapsed = time.monotonic() - started
        assert text == " ".join(str(i) for i in range(1, 31))
        assert end.tokens_used == 30
        assert elapsed < 10
        report = json.loads(await asyncio.wait_for(flood.stdout.readline(), 30))
        # the flood really ran alongside: slow heads cut off and reopened, garbage streaming
        assert report["heads"] > 200 and report["handshakes"] > 20 and report["frames"] > 1000
        print(f"flood {report}; honest session + answer in {elapsed:.2f} s")
    finally:
        if flood.returncode is None:
            flood.kill()
        await flood.wait()
