"""1,000 concurrent sessions from one process, paid from a pre-funded deposit.

One client process (this one) opens 1,000 sessions at once with ``create_session(payment=
"deposit")`` against four reference host processes (250 sessions each, under the host's
``max_sessions`` of 256), asks each one question, checks the exact answer and settles it with
``Session.complete()`` (the host's final proof, then the user's ``completeSessionJob``).
Target: 0 errors; the figure is the wall time from the first ``create_session`` to the last
settlement; each phase's median and maximum per session are printed beside it (open, answer,
settle). Run with ``python -m benchmarks --only sessions-1000`` or ``--large``: it takes
minutes on a loaded machine, so the default run leaves it out. ``python -m benchmarks.crowd
N [--per-host K] [--settle S] [--keep-logs DIR]`` runs another size.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import time
import traceback
from decimal import Decimal
from pathlib import Path

from fabstir_sdk import FabstirSDK
from fabstir_sdk.config import SessionTimeouts
from fabstir_sdk.devnet import Devnet

from ._report import Row
from .sessions import BUILTIN, portal

SESSIONS = 1000
PER_HOST = 250
DEPOSIT = "0.5"  # the marketplace's minimum USDC deposit
PAYER, FIRST_HOST = 1, 2


def _expected(i: int) -> str:
    n = i % 20 + 1
    return " ".join(str(k) for k in range(1, n + 1))


def _keep(directory: Path, logs: list[Path]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for log in logs:
        shutil.copy(log, directory)


async def run(runs: int) -> list[Row]:
    del runs  # one pass: the figure is the wall time of the whole crowd
    return await crowd(SESSIONS, PER_HOST)


async def crowd(
    sessions: int,
    per_host: int,
    *,
    settle: float | None = None,
    keep_logs: Path | None = None,
    block_time: float | None = None,
) -> list[Row]:
    """``sessions`` concurrent sessions, ``per_host`` on each host process. A smaller crowd
    shows the same faults sooner: ``python -m benchmarks.crowd 250 --settle 5``, ``settle``
    being how long ``complete()`` waits for the host's final proof."""
    hosts_needed = -(-sessions // per_host)
    async with Devnet.start(block_time=block_time) as net, portal() as portal_url:
        hosts = await asyncio.gather(
            *(
                net.start_host(
                    account=FIRST_HOST + k,
                    models=[BUILTIN],
                    checkpoint_tokens=1_000_000,
                    s5_portal_url=portal_url,
                )
                for k in range(hosts_needed)
            )
        )
        timeouts = SessionTimeouts() if settle is None else SessionTimeouts(settle=settle)
        config = net.sdk_config(s5_portal_url=portal_url, session_timeouts=timeouts)
        async with FabstirSDK(config) as sdk:
            await sdk.authenticate(net.accounts[PAYER].private_key)
            pm = sdk.get_payment_manager()
            total = str(Decimal(DEPOSIT) * sessions)
            await pm.approve_usdc(net.addresses.usdc_token, total)
            await pm.deposit(total, net.addresses.usdc_token)
            sm = await sdk.get_session_manager()

            phases: dict[str, list[float]] = {"open": [], "answer": [], "settle": []}

            async def one(i: int) -> int:
                began = time.perf_counter()
                session = await sm.create_session(
                    model=BUILTIN,
                    host=hosts[i // per_host].address,
                    payment="deposit",
                    deposit=DEPOSIT,
                )
                opened = time.perf_counter()
                phases["open"].append(opened - began)
                try:
                    answer = (await session.send_prompt(f"count to {i % 20 + 1}")).text
                    if answer != _expected(i):
                        raise AssertionError(f"session {i}: {answer!r}")
                    answered = time.perf_counter()
                    phases["answer"].append(answered - opened)
                    tokens = (await session.complete()).tokens_used
                    phases["settle"].append(time.perf_counter() - answered)
                    return tokens
                except BaseException:
                    await session.end()
                    raise

            start = time.perf_counter()
            results = await asyncio.gather(
                *(one(i) for i in range(sessions)), return_exceptions=True
            )
            seconds = time.perf_counter() - start
        for host in hosts:
            await host.stop()
        if keep_logs is not None:  # the hosts' logs die with the devnet's directory
            await asyncio.to_thread(_keep, keep_logs, [host.log_path for host in hosts])
    errors = [r for r in results if isinstance(r, BaseException)]
    # settled with nothing proven: the host's final proof missed complete()'s settle
    # deadline, so the session closed unbilled (the user paid nothing, the host lost it)
    unbilled = sum(1 for r in results if r == 0)
    kinds = collections.Counter(f"{type(e).__name__}: {e}"[:160] for e in errors)
    for kind, count in kinds.most_common(10):
        print(f"  {count} x error: {kind}")
    for error in errors[:3]:  # where the first ones came from
        print("".join(traceback.format_exception(error)[-6:]))
    print(f"\n# {sessions} concurrent sessions, {hosts_needed} host processes, deposit-funded")
    print(f"{'wall time (s)':<44} {seconds:10.2f}")
    print(f"{'errors (target 0)':<44} {len(errors):10d}")
    print(f"{'settled without the host final proof':<44} {unbilled:10d}")
    for phase, took in phases.items():
        if took:
            took.sort()
            median, worst = took[len(took) // 2], took[-1]
            print(f"{phase + ' per session: median / max (s)':<44} {median:10.2f} {worst:8.2f}")
    name = f"{sessions} concurrent sessions (deposit, {hosts_needed} hosts): open, answer, settle"
    outcome = f"{len(errors)} errors, {unbilled} settled unbilled (no final proof in time)"
    return [
        Row("sessions-1000", f"{name}: wall time; {outcome}", seconds * 1000, errors=len(errors))
    ]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.crowd")
    parser.add_argument("sessions", type=int, nargs="?", default=SESSIONS)
    parser.add_argument("--per-host", type=int, default=PER_HOST)
    parser.add_argument("--settle", type=float, default=None, help="complete()'s wait (s)")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy host logs here")
    parser.add_argument("--block-time", type=float, default=None, help="interval mining (s)")
    args = parser.parse_args()
    asyncio.run(
        crowd(
            args.sessions,
            args.per_host,
            settle=args.settle,
            keep_logs=args.keep_logs,
            block_time=args.block_time,
        )
    )
