"""A hostile client of the reference host: each attack a coroutine that returns what the
host answered, so a test can run them beside an honest user and check both sides.

Built on tests/integration/host_helpers.py (a websockets client driving the real
:class:`~fabstir_sdk.protocol.ClientSession`); nothing here bypasses the crypto except
where the attack is to send bytes that are not the protocol at all.
"""

from __future__ import annotations

import asyncio
import contextlib

import websockets

from fabstir_sdk.devnet import Devnet, RunningHost
from fabstir_sdk.protocol import MAX_FRAME_BYTES
from tests.integration.host_helpers import STRANGER, Client, encrypted

MALFORMED = [
    b"\xff\xfe not json",
    "{",
    "[]",
    '{"type": 7}',
    '{"type": "teleport"}',
    '{"type": "encrypted_message", "payload": {}}',
    '{"type": "prompt"}',
    "null",
]


async def refused_init(net: Devnet, host: RunningHost, job_id: int, **options: object) -> str:
    """Open a session on ``job_id`` with ``options`` (``signer``, ``chain_id``, ...): the
    host's refusal code, or ``"ACCEPTED"``."""
    proto = encrypted(net, host, job_id, **options)  # type: ignore[arg-type]
    client = await Client.connect(host, proto)
    try:
        return await client.error_code(proto.init_frame())
    except AssertionError:
        return "ACCEPTED"
    finally:
        await client.close()


async def stranger_init(net: Devnet, host: RunningHost, job_id: int) -> str:
    """Someone else's job, with the stranger's own valid signature."""
    return await refused_init(net, host, job_id, signer=STRANGER)


async def malformed_frames(net: Devnet, host: RunningHost, rounds: int = 25) -> list[str]:
    """Every frame of MALFORMED, ``rounds`` times, on one connection: the codes answered."""
    client = await Client.connect(host, encrypted(net, host, 1))
    codes = []
    try:
        for _ in range(rounds):
            for frame in MALFORMED:
                codes.append(await client.error_code(frame))
    finally:
        await client.close()
    return codes


async def huge_frame(host: RunningHost) -> int | None:
    """One frame twice the limit: the close code the host answers with."""
    async with websockets.connect(host.ws_url, max_size=None) as ws:
        await ws.recv()  # connected
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send("x" * (2 * MAX_FRAME_BYTES + 1))
            await ws.recv()
        return ws.close_code


async def connection_flood(host: RunningHost, count: int) -> int:
    """Open ``count`` WebSockets and keep them open, silent; how many the host accepted.
    Returns the open connections' context: close them with :func:`close_all`."""
    opened = await asyncio.gather(
        *(websockets.connect(host.ws_url) for _ in range(count)), return_exceptions=True
    )
    connections = [ws for ws in opened if not isinstance(ws, BaseException)]
    FLOODS.extend(connections)
    return len(connections)


FLOODS: list[websockets.ClientConnection] = []


async def close_all() -> None:
    while FLOODS:
        with contextlib.suppress(Exception):
            await FLOODS.pop().close()


async def never_read(net: Devnet, host: RunningHost, job_id: int, words: int) -> Client:
    """A paid session that asks for a long answer and then never reads a byte of it."""
    client = await Client.session(net, host, job_id)
    await client.ws.send(client.proto.prompt_frame(f"write {words} words", max_tokens=words))
    return client
