"""Ingest time of one generated month at scale (default 1,000,000 users).

Generates the month with the project's seed generator into a temporary directory,
starts a private embedded PostgreSQL under a temporary STREAMFLOW_HOME and times
`ingest_month` (validation + COPY + upsert + snapshots in one transaction), then the
Feast materialization of the online store separately (--materialize).

    .venv/bin/python benchmarks/ingest_bench.py [--users 1000000] [--materialize]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from streamflow.db.engine import release_embedded
from streamflow.features.store import materialize_latest
from streamflow.ingest.loader import ingest_month
from streamflow.logging_setup import setup_logging
from streamflow.seeds.generator import generate_months
from streamflow.settings import Settings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--materialize", action="store_true", help="also time Feast materialization")
    args = ap.parse_args()
    setup_logging("WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        (month,) = generate_months(Path(tmp) / "seeds", months=1, users=args.users, seed=7)
        gen_s = time.perf_counter() - t0
        settings = Settings(home=Path(tmp) / "home")
        try:
            first = ingest_month(month, "2024-01-31", settings, materialize=False)
            again = ingest_month(month, "2024-01-31", settings, materialize=False)  # upsert path, idempotent
            print(f"users={args.users:,} generate={gen_s:.1f}s")
            for label, r in (("ingest (empty db)", first), ("re-ingest (upsert path)", again)):
                total = r.seconds_validate + r.seconds_load
                print(
                    f"{label:<24} {total:.1f}s = validate {r.seconds_validate:.1f}s + one-transaction load "
                    f"{r.seconds_load:.1f}s  rows={sum(r.rows.values()):,}"
                )
            if args.materialize:
                t1 = time.perf_counter()
                materialize_latest(settings)
                print(f"feast materialize       {time.perf_counter() - t1:.1f}s")
        finally:
            release_embedded(settings)


if __name__ == "__main__":
    main()
