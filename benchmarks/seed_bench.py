"""Time the seed generator: 1,000,000 users x 1 month (six CSVs) into a temp dir.

Usage: python benchmarks/seed_bench.py [--users N] [--months M] [--seed S]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from streamflow.seeds.generator import generate_months


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--months", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="seed_bench_") as tmp:
        start = time.perf_counter()
        dirs = generate_months(Path(tmp), args.months, args.users, args.seed)
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for d in dirs for p in d.iterdir())
    rate = args.users * args.months / seconds
    print(
        f"generated {args.users:,} users x {args.months} month(s) in {seconds:.2f} s "
        f"({rate:,.0f} user-months/s, {size / 1e6:.0f} MB of CSV)"
    )


if __name__ == "__main__":
    main()
