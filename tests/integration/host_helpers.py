"""Helpers for the reference-host tests: a private devnet with host processes, paying users,
and a thin websockets client driving :class:`~fabstir_sdk.protocol.ClientSession`.

The host tests use their own devnet, without per-test snapshots: host processes are
long-lived and serve jobs across tests, so job ids must never be reused (an ``evm_revert``
would hand a live host a different job under an id it already bills).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

from fabstir_sdk import FabstirSDK, SessionJob
from fabstir_sdk.devnet import Devnet, RunningHost
from fabstir_sdk.errors import HostError
from fabstir_sdk.protocol import (
    CheckpointFailed,
    ClientSession,
    Connected,
    HostErrorEvent,
    ProofSubmitted,
    ResponseDone,
    SessionInitAck,
    StreamEnd,
    TokenChunk,
)

PRICE = 2000  # micro-USDC per 1000 tokens
USER, STRANGER = 1, 3
BUILTIN = "fabstir/builtin:toy-1.gguf"
#: How long a frame from the host may take before the test fails: only against a hang (the
#: host is another process, and a loaded machine runs it late).
HANG = 60.0


async def open_job(
    net: Devnet,
    host: str,
    *,
    user: int = USER,
    model: str = BUILTIN,
    deposit: str = "1",
    proof_interval: int = 1000,
) -> int:
    """A USDC session job of ``user`` with ``host``; returns its id."""
    async with FabstirSDK(net.sdk_config()) as sdk:
        await sdk.authenticate(net.accounts[user].private_key)
        pm = sdk.get_payment_manager()
        usdc = net.addresses.usdc_token
        await pm.approve_usdc(usdc, deposit)
        job = await pm.create_usdc_session_job(
            host, usdc, deposit, PRICE, 3600, proof_interval, model=model
        )
        return job.job_id


async def read_job(net: Devnet, job_id: int) -> SessionJob:
    async with FabstirSDK(net.sdk_config()) as sdk:
        return await sdk.get_payment_manager().get_session_job(job_id)


async def wait_for_job(net: Devnet, job_id: int, check: Any) -> SessionJob:
    """Poll the job until ``check(job)`` holds (the host works in its own process, on the
    chain: nothing to await but the job's change). No deadline of its own: on a loaded
    machine the host's settlement can take many times what it takes on a quiet one, and a
    job that never gets there is ended by pytest's timeout."""
    while True:
        job = await read_job(net, job_id)
        if check(job):
            return job
        await asyncio.sleep(0.1)


async def host_net_credit(net: Devnet, job_id: int) -> int:
    """What the host was credited in HostEarnings when ``job_id`` settled (from the logs)."""
    from eth_utils.crypto import keccak

    from fabstir_sdk.chain.abi import Contract
    from fabstir_sdk.chain.rpc import JsonRpcClient

    topic = "0x" + keccak(b"SessionCompleted(uint256,uint256,uint256,uint256)").hex()
    rpc = JsonRpcClient(net.rpc_url)
    try:
        logs = await rpc.call(
            "eth_getLogs",
            {
                "address": net.addresses.job_marketplace,
                "fromBlock": "0x0",
                "topics": [topic, "0x" + job_id.to_bytes(32, "big").hex()],
            },
        )
        (log,) = logs
        receipt = await rpc.call("eth_getTransactionReceipt", log["transactionHash"])
    finally:
        await rpc.aclose()
    earnings = Contract("HostEarnings", net.addresses.host_earnings)
    (credit,) = earnings.events(receipt, "EarningsCredited")
    return int(credit["amount"])


class Client:
    """One WebSocket connection to a host, driven by a ClientSession."""

    def __init__(self, ws: Any, proto: ClientSession) -> None:
        self.ws = ws
        self.proto = proto
        self.notices: list[Any] = []

    @classmethod
    async def connect(cls, host: RunningHost, proto: ClientSession) -> Client:
        ws = await websockets.connect(host.ws_url, max_size=None, compression=None)
        client = cls(ws, proto)
        assert isinstance(proto.receive(await ws.recv()), Connected)
        return client

    @classmethod
    async def session(
        cls,
        net: Devnet,
        host: RunningHost,
        job_id: int,
        *,
        signer: int = USER,
        model: str = BUILTIN,
        **options: Any,
    ) -> Client:
        """Connected and initialised (raises HostError if the host refuses)."""
        proto = encrypted(net, host, job_id, signer=signer, model=model, **options)
        client = await cls.connect(host, proto)
        await client.init()
        return client

    async def init(self) -> SessionInitAck:
        await self.ws.send(self.proto.init_frame())
        event = await self.next()
        assert isinstance(event, SessionInitAck)
        return event

    async def next(self) -> Any:
        """The next event that is not a proof notice (those are kept in ``notices``)."""
        while True:
            frame = await asyncio.wait_for(self.ws.recv(), HANG)
            event = self.proto.receive(frame)
            if isinstance(event, HostErrorEvent | CheckpointFailed):
                raise event.error  # the core hands error frames over as events
            if event is None:
                continue  # a frame of an answer given up
            if isinstance(event, ProofSubmitted) and event.type == "proof_submitted":
                self.notices.append(event)
                continue
            return event

    async def ask(self, prompt: str, **options: Any) -> tuple[str, StreamEnd, list[TokenChunk]]:
        """Send a prompt, read the whole answer: (text, stream_end, chunks)."""
        await self.ws.send(self.proto.prompt_frame(prompt, **options))
        chunks: list[TokenChunk] = []
        done = None
        while True:
            event = await self.next()
            if isinstance(event, TokenChunk):
                chunks.append(event)
            elif isinstance(event, ResponseDone):
                done = event
            elif isinstance(event, StreamEnd):
                if self.proto.encrypted and event.reason == "complete":
                    assert done is not None and done.finish_reason == event.finish_reason
                return "".join(c.text for c in chunks), event, chunks

    async def error_code(self, frame: str | bytes) -> str:
        """Send a frame the host must refuse; the refusal's code."""
        await self.ws.send(frame)
        try:
            event = await self.next()
        except HostError as exc:
            return exc.code
        raise AssertionError(f"expected an error frame, got {event!r}")

    async def raw(self, frame: str | bytes) -> dict[str, Any]:
        await self.ws.send(frame)
        reply: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), HANG))
        return reply

    async def close(self) -> None:
        await self.ws.close()


def encrypted(
    net: Devnet,
    host: RunningHost,
    job_id: int,
    *,
    signer: int = USER,
    model: str = BUILTIN,
    **options: Any,
) -> ClientSession:
    fields: dict[str, Any] = {
        "job_id": job_id,
        "chain_id": net.chain_id,
        "host_public_key": host.public_key,
        "client_private_key": net.accounts[signer].private_key,
        "model_name": model,
        "price_per_token": PRICE,
    }
    return ClientSession(**{**fields, **options})


DROPPED = "dropping a WebSocket client that stopped reading"  # the host's DEBUG log line


def log_mark(host: RunningHost) -> int:
    """Where the host's log ends now: :func:`host_logged` ``since`` it reads only what
    the host logs from here on."""
    return host.log_path.stat().st_size


async def host_logged(host: RunningHost, line: str, *, count: int = 1, since: int = 0) -> None:
    """Wait until the host's log holds ``line`` ``count`` times (after byte ``since``; the
    host logs each event as it happens: this waits on it, whatever the machine's speed)."""
    while _log_from(host, since).count(line) < count:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # another process's file: nothing to await but its change


def _log_from(host: RunningHost, since: int) -> str:
    with host.log_path.open("rb") as log:
        log.seek(since)
        return log.read().decode(errors="replace")
