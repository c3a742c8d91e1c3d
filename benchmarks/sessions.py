"""Sessions against one reference host on the devnet, each beside its raw baseline.

The host serves the built-in toy model generating as fast as it can (no token delay) and
also allows plaintext sessions, so in one run we can compare:

- streaming through ``Session.stream`` (E2EE: XChaCha20-Poly1305 per token, S5 bookkeeping)
  with a raw ``websockets`` client reading the same host in plaintext: time to first token
  and time per token (targets: <= 2 ms and <= 25 us added);
- ``create_session`` (host and price read, the job's checks, create job, S5 metadata,
  WebSocket and E2EE init) with its raw cost: approve + create signed with eth-account and
  sent with web3.py, plus one WebSocket handshake (target: <= 0.6x). The SDK approves an
  allowance budget once (``approval_budget``), so a session normally costs it one
  transaction where the baseline, approving each deposit, sends two;
- 100 sessions opened, used and ended concurrently from one process (target: no error).

Proofs are made rare (one checkpoint per million tokens) so that the host's chain and S5
work does not compete with streaming for the machine's CPUs; both paths are billed alike.
The S5 portal runs as its own process (``fabstir s5 serve``), as a remote portal would: in
this process it would bill its server work to the SDK's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

import websockets
from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3

from fabstir_sdk import FabstirSDK
from fabstir_sdk.chain.abi import Contract
from fabstir_sdk.chain.model_id import model_id
from fabstir_sdk.devnet import Devnet, RunningHost

from ._report import Row

BUILTIN = "fabstir/builtin:toy-1.gguf"
PRICE = 2000
WORDS = 1000  # tokens per streamed answer
PROMPT = f"write {WORDS} words"
SHORT = "count to 3"  # for the time to first token
CONCURRENT = 100
COMPLETES = 5  # of each kind: one waits for the chain's proof rate limit (up to a second)
# A short answer's final proof claims the proof interval (1000 tokens); the toy model's rate
# limit, 1000 tokens/s, times the contract's burst of 2 allows it one second after the start.
CLAIM, CLAIM_SECONDS = 1000, 1
USER, HOST, RAW, CROWD = 1, 2, 3, 4


async def _raw_job(net: Devnet, w3: AsyncWeb3, account: Any, host: str) -> None:
    """approve + createSessionJobForModelWithToken, signed with eth-account, sent and
    confirmed with web3.py: the transactions ``create_session`` sends, nothing else."""
    usdc, marketplace = net.addresses.usdc_token, net.addresses.job_marketplace
    calls = [
        Contract("TestUSDC", usdc).call("approve", marketplace, 1_000_000),
        Contract("JobMarketplace", marketplace).call(
            "createSessionJobForModelWithToken",
            host,
            model_id(BUILTIN),
            usdc,
            1_000_000,
            PRICE,
            3600,
            1000,
            300,
        ),
    ]
    for call in calls:
        nonce = await w3.eth.get_transaction_count(account.address, "pending")
        gas_price = await w3.eth.gas_price
        signed = account.sign_transaction(
            {
                "to": call.to,
                "data": call.data,
                "gas": 1_000_000,
                "gasPrice": gas_price,
                "nonce": nonce,
                "chainId": net.chain_id,
            }
        )
        tx = await w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = await w3.eth.wait_for_transaction_receipt(tx, poll_latency=0.002)
        assert receipt["status"] == 1


class RawClient:
    """A plaintext session read with nothing but ``websockets`` and ``json``."""

    def __init__(self, ws: Any, job_id: int) -> None:
        self.ws, self.job_id = ws, job_id

    @classmethod
    async def open(cls, host: RunningHost, job_id: int, user: str, chain_id: int) -> RawClient:
        ws = await websockets.connect(host.ws_url, max_size=None, compression=None)
        await ws.recv()  # connected
        init = {"type": "session_init", "job_id": str(job_id), "chain_id": chain_id}
        await ws.send(json.dumps({**init, "user_address": user}))
        ack = json.loads(await ws.recv())
        assert ack["type"] == "session_init_ack", ack
        return cls(ws, job_id)

    async def ask(self, prompt: str) -> tuple[float, float, int, float]:
        """(seconds to the first token, seconds from the first to the last, tokens,
        this process's CPU seconds for the whole answer)."""
        frame = {"type": "prompt", "prompt": prompt, "session_id": str(self.job_id), "id": 1}
        cpu = time.process_time()
        sent = time.perf_counter()
        await self.ws.send(json.dumps(frame))
        first = last = 0.0
        tokens = 0
        while True:
            message = json.loads(await self.ws.recv())
            kind = message["type"]
            if kind == "stream_chunk" and message["content"]:
                last = time.perf_counter()
                first = first or last
                tokens += 1
            elif kind == "stream_end":
                return first - sent, last - first, tokens, time.process_time() - cpu
            elif kind == "error":
                raise RuntimeError(message)


async def _sdk_ask(session: Any, prompt: str) -> tuple[float, float, int, float]:
    """The same measures through ``Session.stream`` (E2EE)."""
    first = last = 0.0
    tokens = 0
    cpu = time.process_time()
    started = time.perf_counter()
    async with session.stream(prompt) as stream:
        async for _chunk in stream:
            last = time.perf_counter()
            first = first or last
            tokens += 1
    return first - started, last - first, tokens, time.process_time() - cpu


async def _streaming(
    net: Devnet, host: RunningHost, sdk: FabstirSDK, runs: int
) -> dict[str, float]:
    sm = await sdk.get_session_manager()
    session = await sm.create_session(model=BUILTIN, host=host.address, deposit="10")
    async with FabstirSDK(sdk.config) as raw_user:
        await raw_user.authenticate(net.accounts[RAW].private_key)
        pm = raw_user.get_payment_manager()
        await pm.approve_usdc(net.addresses.usdc_token, "10")
        job = await pm.create_usdc_session_job(
            host.address, net.addresses.usdc_token, "10", PRICE, 3600, 1000, model=BUILTIN
        )
    raw = await RawClient.open(host, job.job_id, net.accounts[RAW].address, net.chain_id)
    samples: dict[str, list[tuple[float, float, int, float]]] = {}
    # Short answers first, for the time to the first token: the host re-reads the whole
    # history at each prompt, so long answers would make every later TTFT longer.
    for prompt, tokens in ((SHORT, 3), (PROMPT, WORDS)):
        for i in range(runs + 1):  # interleaved so that load changes hit both alike
            s, r = await _sdk_ask(session, prompt), await raw.ask(prompt)
            assert s[2] == r[2] == tokens, (s, r)
            if i:  # the first pair warms up
                samples.setdefault(f"sdk {prompt}", []).append(s)
                samples.setdefault(f"raw {prompt}", []).append(r)
    await raw.ws.close()
    await session.end()

    def ttft_ms(who: str) -> float:
        return statistics.median(s[0] for s in samples[f"{who} {SHORT}"]) * 1000

    def per_token_us(who: str) -> float:
        return (
            statistics.median(span / (n - 1) for _, span, n, _ in samples[f"{who} {PROMPT}"]) * 1e6
        )

    def cpu_per_token_us(who: str) -> float:
        """This process's CPU time (user + system, all threads) per token of the long answer."""
        return statistics.median(cpu / n for _, _, n, cpu in samples[f"{who} {PROMPT}"]) * 1e6

    return {
        "sdk_ttft": ttft_ms("sdk"),
        "raw_ttft": ttft_ms("raw"),
        "sdk_token_us": per_token_us("sdk"),
        "raw_token_us": per_token_us("raw"),
        "sdk_cpu_us": cpu_per_token_us("sdk"),
        "raw_cpu_us": cpu_per_token_us("raw"),
    }


async def _create(net: Devnet, host: RunningHost, sdk: FabstirSDK, runs: int) -> dict[str, float]:
    """create_session beside its raw cost, interleaved so that load changes hit both alike.

    The session's background S5 metadata write is waited for (untimed) before the raw
    operations are timed, so that they do not pay for the SDK's leftover work; each session
    is ended (untimed) before the next, as a user would use one.
    """
    sm = await sdk.get_session_manager()
    w3 = AsyncWeb3(AsyncHTTPProvider(net.rpc_url))
    raw_account = Account.from_key(net.accounts[RAW].private_key)
    samples: dict[str, list[float]] = {"create_session": [], "raw_txs": [], "handshake": []}

    async def create() -> None:
        session = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
        opened.append(session)

    async def settle_down() -> None:  # untimed: the metadata write create_session started
        await sm.get_session_data(opened[-1].session_id, "metadata")

    async def raw_txs() -> None:
        await _raw_job(net, w3, raw_account, host.address)

    async def handshake() -> None:
        ws = await websockets.connect(host.ws_url, max_size=None, compression=None)
        await ws.recv()  # the host's "connected": the handshake is done
        await ws.close()

    opened: list[Any] = []
    try:
        for i in range(runs + 1):
            for name, op in (
                ("create_session", create),
                ("raw_txs", raw_txs),
                ("handshake", handshake),
            ):
                start = time.perf_counter()
                await op()
                if i:  # the first round warms up
                    samples[name].append((time.perf_counter() - start) * 1000)
                if op is create:
                    await settle_down()
            await opened.pop().end()
    finally:
        await w3.provider.disconnect()

    completes: dict[str, list[float]] = {"complete": [], "complete_young": [], "clock": []}
    pm = sdk.get_payment_manager()
    for i in range(4 * COMPLETES):
        session = await sm.create_session(model=BUILTIN, host=host.address, deposit="1")
        key = "complete_young" if i % 2 else "complete"
        if key == "complete":
            await _rate_limit_allows(net)
        await session.send_prompt(SHORT)
        started = (await pm.get_session_job(session.job_id)).start_time
        wall, start = time.time(), time.perf_counter()
        settlement = await session.complete()
        completes_ms = (time.perf_counter() - start) * 1000
        assert settlement.tokens_used == CLAIM, settlement
        # The final proof claims CLAIM tokens: the contract allows it in the first block
        # stamped started + CLAIM_SECONDS or later, and anvil stamps blocks with the wall
        # clock's whole seconds. That wait is the chain's, not the SDK's.
        clock = max(0.0, started + CLAIM_SECONDS - wall) * 1000
        # a "young" job whose first second had passed already is not young: not counted
        if (key == "complete" or clock > 0) and len(completes[key]) < COMPLETES:
            completes[key].append(completes_ms)
            if key == "complete_young":
                completes["clock"].append(clock)
        if min(len(completes["complete"]), len(completes["complete_young"])) == COMPLETES:
            break
    result = {name: statistics.median(values) for name, values in samples.items()}
    result["paired_ratio"] = statistics.median(
        c / (r + h)
        for c, r, h in zip(
            samples["create_session"], samples["raw_txs"], samples["handshake"], strict=True
        )
    )
    own = [t - c for t, c in zip(completes["complete_young"], completes["clock"], strict=True)]
    return {
        **result,
        **{key: statistics.median(values) for key, values in completes.items()},
        "complete_young_own": statistics.median(own),
    }


async def _rate_limit_allows(net: Devnet) -> None:
    """Wait (untimed) until the contract's proof rate limit allows a claim of the proof
    interval on the job just created (the latest block): 1000 tokens at 1000 tokens/s x 2
    need the chain's clock one second past the job's start."""
    w3 = AsyncWeb3(AsyncHTTPProvider(net.rpc_url))
    try:
        started = (await w3.eth.get_block("latest"))["timestamp"]
        while (await w3.eth.get_block("pending"))["timestamp"] < started + 1:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    finally:
        await w3.provider.disconnect()


async def _crowd(net: Devnet, host: RunningHost, config: Any) -> dict[str, float]:
    """CONCURRENT sessions from one SDK at once: create, one prompt each, end."""
    async with FabstirSDK(config) as sdk:
        await sdk.authenticate(net.accounts[CROWD].private_key)
        sm = await sdk.get_session_manager()

        async def one(i: int) -> str:
            session = await sm.create_session(model=BUILTIN, host=host.address, deposit="0.5")
            try:
                return (await session.send_prompt(f"count to {i % 20 + 1}")).text
            finally:
                await session.end()

        start = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(CONCURRENT)), return_exceptions=True)
        seconds = time.perf_counter() - start
    errors = [r for r in results if isinstance(r, BaseException)]
    for i, r in enumerate(results):
        if not isinstance(r, BaseException):
            n = i % 20 + 1
            assert r == " ".join(str(k) for k in range(1, n + 1)), (i, r)
    for error in errors[:3]:
        print(f"  error: {type(error).__name__}: {error}")
    return {"seconds": seconds, "errors": float(len(errors))}


@contextlib.asynccontextmanager
async def portal() -> AsyncIterator[str]:
    """A local S5 portal in its own process; yields its URL."""
    with tempfile.TemporaryDirectory() as root:
        argv = [sys.executable, "-m", "fabstir_sdk.cli", "s5", "serve", "--port", "0"]
        proc = subprocess.Popen(  # noqa: ASYNC220 (started once, outside any timing)
            [*argv, "--json", "--dir", root], stdout=subprocess.PIPE
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.to_thread(proc.stdout.readline)
            yield str(json.loads(line)["url"])
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 10)


async def run(runs: int) -> list[Row]:
    async with Devnet.start() as net, portal() as portal_url:
        host = await net.start_host(
            account=HOST,
            models=[BUILTIN],
            allow_plaintext=True,
            accept_any_signer=True,  # the raw client's plaintext init names a job it paid
            checkpoint_tokens=1_000_000,
            context_window=10_000_000,
            s5_portal_url=portal_url,
        )
        config = net.sdk_config(s5_portal_url=portal_url)
        async with FabstirSDK(config) as sdk:
            await sdk.authenticate(net.accounts[USER].private_key)
            stream = await _streaming(net, host, sdk, runs)
            create = await _create(net, host, sdk, runs)
        crowd = await _crowd(net, host, config)
        await host.stop()

    added_ttft = stream["sdk_ttft"] - stream["raw_ttft"]
    added_token = stream["sdk_token_us"] - stream["raw_token_us"]
    raw_create = create["raw_txs"] + create["handshake"]
    ratio = create["create_session"] / raw_create
    print(f"\n# sessions: one host, built-in model at full speed; median of {runs} runs")
    print(f"{'operation':<44} {'SDK':>10} {'raw':>10} {'added':>10} {'target':>12}")
    print(
        f"{'time to first token (ms)':<44} {stream['sdk_ttft']:10.3f} {stream['raw_ttft']:10.3f} "
        f"{added_ttft:10.3f} {'<= 2 ms':>12}"
    )
    print(
        f"{'time per token (us)':<44} {stream['sdk_token_us']:10.1f} "
        f"{stream['raw_token_us']:10.1f} {added_token:10.1f} {'<= 25 us':>12}"
    )
    cpu_ratio = stream["sdk_cpu_us"] / stream["raw_cpu_us"]
    print(
        f"{'client CPU per token (us)':<44} {stream['sdk_cpu_us']:10.1f} "
        f"{stream['raw_cpu_us']:10.1f} {cpu_ratio:9.2f}x {'<= 1.5x':>12}"
    )
    print(
        f"{'tokens/s':<44} {1e6 / stream['sdk_token_us']:10.0f} "
        f"{1e6 / stream['raw_token_us']:10.0f}"
    )
    print(
        f"{'create_session (ms) vs 2 raw txs + handshake':<44} {create['create_session']:10.2f} "
        f"{raw_create:10.2f} {ratio:9.2f}x {'<= 0.6x':>12}"
    )
    print(f"{'  median of the ratios of each round':<44} {'':>21} {create['paired_ratio']:9.2f}x")
    print(f"{'  raw: 2 web3.py transactions (ms)':<44} {'':>10} {create['raw_txs']:10.2f}")
    print(f"{'  raw: 1 WebSocket handshake (ms)':<44} {'':>10} {create['handshake']:10.2f}")
    print(f"{'complete (final proof + settle) (ms)':<44} {create['complete']:10.2f}")
    print(f"{'  complete, job < 1 s old (rate limit) (ms)':<44} {create['complete_young']:10.2f}")
    print(f"{'    of which the chain clock (ms)':<44} {create['clock']:10.2f}")
    print(f"{'    the rest (ms)':<44} {create['complete_young_own']:10.2f}")
    print(
        f"{f'{CONCURRENT} concurrent sessions (s), errors':<44} {crowd['seconds']:10.2f} "
        f"{'':>10} {int(crowd['errors']):>10d} {'0 errors':>12}"
    )
    return [
        Row(
            "sessions",
            "create_session",
            create["create_session"],
            "2 raw web3.py txs + 1 WebSocket handshake",
            raw_create,
        ),
        Row(
            "sessions",
            "first token (TTFT), E2EE",
            stream["sdk_ttft"],
            "raw websockets, plaintext",
            stream["raw_ttft"],
        ),
        Row(
            "sessions",
            "per token, E2EE",
            stream["sdk_token_us"] / 1000,
            "raw websockets, plaintext",
            stream["raw_token_us"] / 1000,
        ),
        Row(
            "sessions",
            f"client CPU per token, E2EE ({WORDS}-token answer)",
            stream["sdk_cpu_us"] / 1000,
            "raw websockets, plaintext, same host",
            stream["raw_cpu_us"] / 1000,
        ),
        Row("sessions", "complete (final proof + settle)", create["complete"]),
        Row(
            "sessions",
            "complete, job younger than the proof rate limit allows",
            create["complete_young"],
        ),
        Row(
            "sessions",
            "  of which waiting for the chain's clock (the contract's rate limit)",
            create["clock"],
        ),
        Row(
            "sessions",
            "  the rest: SDK, host and chain work",
            create["complete_young_own"],
        ),
        Row("sessions", f"{CONCURRENT} concurrent sessions, wall time", crowd["seconds"] * 1000),
    ]
