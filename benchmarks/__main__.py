"""Run every benchmark and print a table: ``python -m benchmarks [--runs N]``."""

from __future__ import annotations

import argparse
import asyncio

from . import discovery, payments, storage


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--runs", type=int, default=25, help="runs per operation (median)")
    benchmarks = {"payments": payments, "storage": storage, "discovery": discovery}
    parser.add_argument(
        "--only", choices=sorted(benchmarks), default=None, help="run one benchmark"
    )
    args = parser.parse_args()
    for name, module in benchmarks.items():
        if args.only in (None, name):
            asyncio.run(module.run(args.runs))


if __name__ == "__main__":
    main()
