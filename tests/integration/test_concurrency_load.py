"""Load: one host process serves CLIENTS concurrent sessions for DURATION seconds.

Every client holds its own session (its own paid job and WebSocket) open the whole time and
keeps prompting; every answer must be exact, every session settles to the base unit, and
the peak RSS of the host process and of this (client) process stay under generous bounds.
The backend is the builtin toy model paced at TOKEN_DELAY, and each client pauses THINK
seconds between prompts, so two cores cope. Figures go to the log and to
``FABSTIR_LOAD_REPORT`` (a JSON file) when that is set; docs/reliability.md quotes them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
import time
from pathlib import Path

import pytest

from fabstir_sdk import FabstirSDK, SessionState, SessionTimeouts
from fabstir_sdk.devnet import Devnet

from .host_helpers import BUILTIN, PRICE

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

CLIENTS = 200
DURATION = 60.0  # seconds of sustained load (the figure)
TOKEN_DELAY = 0.02
THINK = 2.0
PROMPT, ANSWER = "count to 5", "1 2 3 4 5"
USER, HOST = 1, 2
HOST_RSS_BOUND = 400 << 20  # measured: 89 MiB
CLIENT_RSS_BOUND = 1024 << 20  # measured: 107 MiB alone (a full run loads more)
MiB = 1 << 20


def rss_of(pid: int) -> int:
    """Resident set size in bytes, from /proc (Linux, like the CI machine)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def write_report(figures: dict[str, float]) -> None:
    if os.environ.get("FABSTIR_LOAD_REPORT"):
        Path(os.environ["FABSTIR_LOAD_REPORT"]).write_text(json.dumps(figures, indent=2))


class PeakRss:
    """Samples the RSS of some processes every ``every`` seconds; keeps the maximum."""

    def __init__(self, pids: dict[str, int], every: float = 0.25) -> None:
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0)
        self.every = every
        self.task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        for name, pid in self.pids.items():
            self.peak[name] = max(self.peak[name], rss_of(pid))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every)

    def __enter__(self) -> PeakRss:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        self.sample()


@pytest.mark.parametrize(
    ("clients", "duration"),
    [(20, 5.0), pytest.param(CLIENTS, DURATION, marks=pytest.mark.long)],
    ids=lambda v: f"{v:g}",
)
async def test_one_host_serves_many_clients_for_a_while(clients: int, duration: float):
    """The default run: 20 clients for 5 s; ``-m long`` (CI): 200 for 60 s."""
    async with Devnet.start() as net:
        host = await net.start_host(
            account=HOST, models=[BUILTIN], token_delay=TOKEN_DELAY, chain_poll=1.0
        )
        async with FabstirSDK(net.sdk_config()) as sdk:
            await sdk.authenticate(net.accounts[USER].private_key)
            sm = await sdk.get_session_manager()
            pm = sdk.get_payment_manager()
            usdc = net.addresses.usdc_token
            before = await pm.get_token_balance(usdc)
            timeouts = SessionTimeouts(settle=120.0)
            with PeakRss({"host": host.pid, "client": os.getpid()}) as rss:
                started = time.monotonic()
                sessions = await asyncio.gather(
                    *(
                        sm.create_session(
                            model=BUILTIN, host=host.address, deposit="0.5", timeouts=timeouts
                        )
                        for _ in range(clients)
                    )
                )
                opened = time.monotonic() - started
                latencies: list[float] = []
                turns = [0] * clients
                deadline = time.monotonic() + duration

                async def client(i: int) -> None:
                    await asyncio.sleep(THINK * i / clients)  # spread the first prompts
                    while True:  # at least one turn each, however slow the machine
                        sent = time.monotonic()
                        reply = await sessions[i].send_prompt(PROMPT)
                        latencies.append(time.monotonic() - sent)
                        assert reply.text == ANSWER
                        turns[i] += 1
                        if time.monotonic() >= deadline:
                            break
                        await asyncio.sleep(THINK)

                await asyncio.gather(*(client(i) for i in range(clients)))
                loaded = time.monotonic() - started - opened
                settled_at = time.monotonic()
                settlements = await asyncio.gather(*(s.complete() for s in sessions))
                settled = time.monotonic() - settled_at
            assert host.running
            for session, settlement, n in zip(sessions, settlements, turns, strict=True):
                # every turn answered and counted (how many fit depends on the machine)
                assert n >= 1 and session.tokens_reported == 5 * n
                assert settlement.tokens_used == 1000  # padded to the proof interval
                assert (settlement.host_payment, settlement.refund) == (2000, 498_000)
            assert await pm.get_token_balance(usdc) == before - clients * 1000 * PRICE // 1000
            job = await pm.get_session_job(sessions[-1].job_id)
            assert job.status is SessionState.COMPLETED

    figures = {
        "clients": clients,
        "duration_s": round(loaded, 1),
        "turns": sum(turns),
        "turn_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "turn_p99_ms": round(statistics.quantiles(latencies, n=100)[98] * 1000, 1),
        "open_all_s": round(opened, 1),
        "settle_all_s": round(settled, 1),
        "host_peak_rss_mib": round(rss.peak["host"] / MiB, 1),
        "client_peak_rss_mib": round(rss.peak["client"] / MiB, 1),
    }
    log.warning("load figures: %s", figures)
    write_report(figures)
    assert rss.peak["host"] < HOST_RSS_BOUND, figures
    assert rss.peak["client"] < CLIENT_RSS_BOUND, figures
