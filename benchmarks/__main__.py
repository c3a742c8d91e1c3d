"""Run every benchmark and print its table: ``python -m benchmarks [--runs N] [--report PATH]``.

``--report docs/benchmarks.md`` also writes the combined report (``make bench`` does).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from . import discovery, payments, sessions, storage
from ._report import Row, machine, render


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--runs", type=int, default=25, help="runs per operation (median)")
    benchmarks = {
        "payments": payments,
        "sessions": sessions,
        "storage": storage,
        "discovery": discovery,
    }
    parser.add_argument(
        "--only", choices=sorted(benchmarks), default=None, help="run one benchmark"
    )
    parser.add_argument(
        "--report", type=Path, default=None, help="write the markdown report to this path"
    )
    args = parser.parse_args()
    before = machine()
    rows: list[Row] = []
    for name, module in benchmarks.items():
        if args.only in (None, name):
            rows += asyncio.run(module.run(args.runs))
    if args.report is not None:
        skipped = [name for name in benchmarks if args.only not in (None, name)]
        args.report.write_text(render(rows, args.runs, before, machine(), skipped))
        print(f"\nwrote {args.report}")


if __name__ == "__main__":
    main()
