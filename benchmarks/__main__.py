"""Run the benchmarks and print their tables: ``python -m benchmarks [--runs N] [--report PATH]``.

``--report docs/benchmarks.md`` also writes the combined report (``make bench`` does).
The 1,000-session crowd takes minutes: it runs with ``--large`` or ``--only sessions-1000``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from . import crowd, discovery, payments, sessions, storage
from ._report import Row, machine, render


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--runs", type=int, default=25, help="runs per operation (median)")
    benchmarks = {
        "payments": payments,
        "sessions": sessions,
        "storage": storage,
        "discovery": discovery,
        "sessions-1000": crowd,
    }
    large = {"sessions-1000"}
    parser.add_argument(
        "--only", choices=sorted(benchmarks), default=None, help="run one benchmark"
    )
    parser.add_argument(
        "--report", type=Path, default=None, help="write the markdown report to this path"
    )
    parser.add_argument(
        "--large", action="store_true", help="also run the 1,000-session crowd (minutes)"
    )
    args = parser.parse_args()

    def wanted(name: str) -> bool:
        if args.only is not None:
            return name == args.only
        return args.large or name not in large

    before = machine()
    rows: list[Row] = []
    for name, module in benchmarks.items():
        if wanted(name):
            rows += asyncio.run(module.run(args.runs))
    if args.report is not None:
        skipped = [name for name in benchmarks if not wanted(name)]
        args.report.write_text(render(rows, args.runs, before, machine(), skipped))
        print(f"\nwrote {args.report}")


if __name__ == "__main__":
    main()
