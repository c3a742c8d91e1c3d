"""1,000 concurrent sessions from one process, paid from a pre-funded deposit.

One client process (this one) opens 1,000 sessions at once with ``create_session(payment=
"deposit")`` against four reference host processes (250 sessions each, under the host's
``max_sessions`` of 256), asks each one question, checks the exact answer and settles it with
``Session.complete()`` (the host's final proof, then the user's ``completeSessionJob``).

Target: 0 errors. An error is an exception, a warning in a host's log (a failed or dropped
transaction is one), or wrong money: every session's settlement is checked to the base unit
against the tokens its host served (billed ``max(served, proof interval)`` as the host's
ledger bills, host payment, 10% treasury fee, host net, refund; the job on chain says the
same), and the payer's deposit balance, each host's earnings and the treasury's fees must
have moved by exactly the sums of those settlements. A session settled before its host's
final proof was mined bills nothing: that is lost money, so it is an error too.

The devnet mines a block every second (``BLOCK_TIME``), as a model of Base, which mines one
every 2 s: every transaction of a second shares a block, as on a real chain. anvil's default,
one block per transaction, is no such model and cannot carry this crowd: its automine
stalled with over 1,100 ready transactions in its pool and no block for minutes (a manual
``evm_mine`` then mined 144 of them at once; the clients' final checkpoints timed out and
hundreds of sessions settled unbilled). ``--automine`` runs it that way all the same.

The figure is the wall time from the first ``create_session`` to the last settlement; each
phase's median and maximum per session are printed beside it (open, answer, settle). Run
with ``python -m benchmarks --only sessions-1000`` or ``--large``: it takes minutes on a
loaded machine, so the default run leaves it out. ``python -m benchmarks.crowd N
[--per-host K] [--block-time S | --automine] [--settle S] [--keep-logs DIR]`` runs another
size.
"""

from __future__ import annotations

import asyncio
import collections
import shutil
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from fabstir_sdk import FabstirSDK, SessionJob, SessionState, Settlement
from fabstir_sdk.config import SessionTimeouts
from fabstir_sdk.devnet import Devnet

from ._report import Row
from .sessions import BUILTIN, portal

SESSIONS = 1000
PER_HOST = 250
DEPOSIT = "0.5"  # the marketplace's minimum USDC deposit
PAYER, FIRST_HOST = 1, 2
BLOCK_TIME = 1.0  # seconds between blocks: a devnet model of Base (a block every ~2 s)
PRICE_PRECISION, FEE_BPS, BASIS = 1000, 1000, 10_000  # the marketplace's: 10% to the treasury


@dataclass(frozen=True)
class Settled:
    """One session as the client saw it end: who served it, how many tokens, the split."""

    index: int
    host: str
    served: int  # the host's usage figure for the answer
    reported: int  # what the client counted (stream_end, capped at what the text holds)
    settlement: Settlement


def _expected(i: int) -> str:
    n = i % 20 + 1
    return " ".join(str(k) for k in range(1, n + 1))


def _split(job: SessionJob, served: int) -> tuple[int, int, int]:
    """What the session must cost: (tokens billed, host payment, treasury fee)."""
    tokens = min(max(served, job.proof_interval), job.max_tokens) if served else 0
    payment = tokens * job.price_per_token // PRICE_PRECISION
    return tokens, payment, payment * FEE_BPS // BASIS


def audit(done: Settled, job: SessionJob) -> list[str]:
    """How the settlement of ``done`` differs from what its host served (empty: exact)."""
    s = done.settlement
    tokens, payment, fee = _split(job, done.served)
    want = {
        "tokens served (client's count)": (done.reported, done.served),
        "status": (job.status, SessionState.COMPLETED),
        "host": (job.host.lower(), done.host.lower()),
        "tokens billed (event)": (s.tokens_used, tokens),
        "tokens billed (job)": (job.tokens_used, tokens),
        "host payment": (s.host_payment, payment),
        "paid to host (job)": (job.withdrawn_by_host, payment),
        "treasury fee": (s.treasury_fee, fee),
        "host net": (s.host_net, payment - fee),
        "refund": (s.refund, job.deposit - payment),
        "refunded (job)": (job.refunded_to_user, job.deposit - payment),
    }
    return [
        f"session {done.index} (job {job.id}): {what} {got} != {expected}"
        for what, (got, expected) in want.items()
        if got != expected
    ]


def _warnings(logs: Iterable[Path]) -> list[str]:
    """The hosts' warnings and errors (a failed proof or settlement is logged as one)."""
    return [
        f"{log.name}: {line}"
        for log in logs
        for line in log.read_text(errors="replace").splitlines()
        if line.startswith(("WARNING", "ERROR", "CRITICAL", "Traceback"))
    ]


def _keep(directory: Path, logs: list[Path]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for log in logs:
        shutil.copy(log, directory)


def _median_max(took: list[float]) -> tuple[float, float]:
    took = sorted(took)
    return took[len(took) // 2], took[-1]


async def run(runs: int) -> list[Row]:
    del runs  # one pass: the figure is the wall time of the whole crowd
    return await crowd(SESSIONS, PER_HOST, block_time=BLOCK_TIME)


async def crowd(
    sessions: int,
    per_host: int,
    *,
    settle: float | None = None,
    keep_logs: Path | None = None,
    block_time: float | None = None,
) -> list[Row]:
    """``sessions`` concurrent sessions, ``per_host`` on each host process, a block every
    ``block_time`` s (None: one per transaction). A smaller crowd
    shows the same faults sooner: ``python -m benchmarks.crowd 250 --settle 5``, ``settle``
    being how long ``complete()`` waits for the host's final proof."""
    hosts_needed = -(-sessions // per_host)
    wrong: list[list[str]] = []  # per session settled with the wrong money, what differs
    problems: list[str] = []  # balances that moved by other than the settlements' sums
    async with Devnet.start(block_time=block_time) as net, portal() as portal_url:
        usdc = net.addresses.usdc_token
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
            pm, hm = sdk.get_payment_manager(), sdk.get_host_manager()
            treasury = sdk.get_treasury_manager()
            total = str(Decimal(DEPOSIT) * sessions)
            await pm.approve_usdc(usdc, total)
            await pm.deposit(total, usdc)

            async def balances() -> list[int]:
                return await asyncio.gather(
                    pm.get_deposit_balance(usdc),
                    treasury.get_accumulated_fees(usdc),
                    *(hm.get_host_earnings(usdc, host.address) for host in hosts),
                )

            before = await balances()
            sm = await sdk.get_session_manager()

            phases: dict[str, list[float]] = {"open": [], "answer": [], "settle": []}

            async def one(i: int) -> Settled:
                host = hosts[i // per_host].address
                began = time.perf_counter()
                session = await sm.create_session(
                    model=BUILTIN, host=host, payment="deposit", deposit=DEPOSIT
                )
                opened = time.perf_counter()
                phases["open"].append(opened - began)
                try:
                    result = await session.send_prompt(f"count to {i % 20 + 1}")
                    if result.text != _expected(i):
                        raise AssertionError(f"session {i}: {result.text!r}")
                    answered = time.perf_counter()
                    phases["answer"].append(answered - opened)
                    settlement = await session.complete()
                    phases["settle"].append(time.perf_counter() - answered)
                    served = result.usage.completion_tokens
                    return Settled(i, host, served, session.tokens_reported, settlement)
                except BaseException:
                    await session.end()
                    raise

            start = time.perf_counter()
            results = await asyncio.gather(
                *(one(i) for i in range(sessions)), return_exceptions=True
            )
            seconds = time.perf_counter() - start

            done = [r for r in results if isinstance(r, Settled)]
            jobs = {
                job.id: job
                for chunk in range(0, len(done), 200)
                for job in await pm.get_session_jobs(
                    [d.settlement.job_id for d in done[chunk : chunk + 200]]
                )
            }
            wrong = [diff for d in done if (diff := audit(d, jobs[d.settlement.job_id]))]
            after = await balances()
            # the sums every settlement must have moved, to the base unit
            splits = [(d, _split(jobs[d.settlement.job_id], d.served)) for d in done]
            moved = [
                -sum(pay for _, (_, pay, _) in splits),
                sum(fee for _, (_, _, fee) in splits),
                *(
                    sum(pay - fee for d, (_, pay, fee) in splits if d.host == host.address)
                    for host in hosts
                ),
            ]
            holders = ["payer's deposit", "treasury's fees"]
            holders += [f"host {host.address}'s earnings" for host in hosts]
            for holder, b, a, m in zip(holders, before, after, moved, strict=True):
                if a - b != m:
                    problems.append(f"{holder} moved {a - b}, the settlements say {m}")
        for host in hosts:
            await host.stop()
        logs = [host.log_path for host in hosts]
        host_warnings = await asyncio.to_thread(_warnings, logs)
        if keep_logs is not None:  # the hosts' logs die with the devnet's directory
            await asyncio.to_thread(_keep, keep_logs, logs)
    errors = [r for r in results if isinstance(r, BaseException)]
    kinds = collections.Counter(f"{type(e).__name__}: {e}"[:160] for e in errors)
    for kind, count in kinds.most_common(10):
        print(f"  {count} x error: {kind}")
    for error in errors[:3]:  # where the first ones came from
        print("".join(traceback.format_exception(error)[-6:]))
    for line in [*(d for diff in wrong[:3] for d in diff), *problems, *host_warnings[:10]]:
        print(f"  {line[:200]}")
    unbilled = sum(1 for d in done if d.settlement.tokens_used == 0)
    failed = len(errors) + len(wrong) + len(problems) + len(host_warnings)
    mining = f"a block every {block_time:g} s" if block_time else "one block per transaction"
    model = " (a model of Base: a block every ~2 s)" if block_time else " (anvil's automine)"
    print(f"\n# {sessions} concurrent sessions, {hosts_needed} host processes, deposit-funded")
    print(f"# devnet: anvil, {mining}{model}")
    print(f"{'wall time (s)':<44} {seconds:10.2f}")
    print(f"{'errors (target 0): all below':<44} {failed:10d}")
    print(f"{'  exceptions':<44} {len(errors):10d}")
    print(f"{'  sessions settled with the wrong money':<44} {len(wrong):10d}")
    print(f"{'    of them: settled without the final proof':<44} {unbilled:10d}")
    print(f"{'  balances off the settlements sums':<44} {len(problems):10d}")
    print(f"{'  host log warnings (failed/dropped tx)':<44} {len(host_warnings):10d}")
    for phase, took in phases.items():
        if took:
            median, worst = _median_max(took)
            print(f"{phase + ' per session: median / max (s)':<44} {median:10.2f} {worst:8.2f}")
    name = (
        f"{sessions} concurrent sessions (deposit, {hosts_needed} hosts, devnet {mining}"
        f"{model}): open, answer, settle"
    )
    outcome = (
        f"{failed} errors ({len(errors)} exceptions, {len(wrong)} settlements not exact, "
        f"{len(problems)} balances off, {len(host_warnings)} host warnings)"
    )
    return [Row("sessions-1000", f"{name}: wall time; {outcome}", seconds * 1000, errors=failed)]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.crowd")
    parser.add_argument("sessions", type=int, nargs="?", default=SESSIONS)
    parser.add_argument("--per-host", type=int, default=PER_HOST)
    parser.add_argument("--settle", type=float, default=None, help="complete()'s wait (s)")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy host logs here")
    mining = parser.add_mutually_exclusive_group()
    mining.add_argument("--block-time", type=float, default=BLOCK_TIME, help="interval mining (s)")
    mining.add_argument("--automine", action="store_true", help="one block per transaction")
    args = parser.parse_args()
    asyncio.run(
        crowd(
            args.sessions,
            args.per_host,
            settle=args.settle,
            keep_logs=args.keep_logs,
            block_time=None if args.automine else args.block_time,
        )
    )
