"""Run every benchmark and print a table: ``python -m benchmarks [--runs N]``."""

from __future__ import annotations

import argparse
import asyncio

from .payments import run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--runs", type=int, default=25, help="runs per operation (median)")
    args = parser.parse_args()
    asyncio.run(run(args.runs))


if __name__ == "__main__":
    main()
