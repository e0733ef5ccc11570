"""An abusive admin client, run as its own process (so that its CPU and GIL do not distort the
latencies the load generator measures in another): rounds of ``--burst`` concurrent
``POST /admin/reload`` — without a token, with a wrong one, with the right one and
``force=true`` — plus one ``GET /metrics`` per round, for ``--seconds``. Prints one JSON line:
the statuses of the admin calls and of the /metrics calls, the slowest /metrics, rounds.

    python -m tests.helpers.abuse URL --token T --seconds 8 [--burst 40] [--pause 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

import httpx


async def _abuse(url: str, token: str, seconds: float, burst: int, pause: float, only: str) -> dict[str, object]:
    admin: Counter[str] = Counter()
    metrics: Counter[str] = Counter()
    slowest_metrics = 0.0
    rounds = 0
    variants = [
        ({}, {}),  # no token
        ({"Authorization": "Bearer not-the-token-not-the-token"}, {}),
        ({"Authorization": f"Bearer {token}"}, {"force": "true"}),
    ]
    if only == "unauthorized":
        variants = variants[:2]
    elif only == "authorized":
        variants = variants[2:]
    limits = httpx.Limits(max_connections=burst + 1, max_keepalive_connections=burst + 1)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def call(i: int) -> str:
            headers, params = variants[i % len(variants)]
            try:
                r = await client.post("/admin/reload", headers=headers, params=params)
            except httpx.HTTPError as exc:
                return type(exc).__name__
            return str(r.status_code)

        async def scrape() -> tuple[str, float]:
            t0 = time.perf_counter()
            try:
                r = await client.get("/metrics")
            except httpx.HTTPError as exc:
                return type(exc).__name__, time.perf_counter() - t0
            return str(r.status_code), time.perf_counter() - t0

        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            results = await asyncio.gather(scrape(), *(call(i) for i in range(burst)))
            status, took = results[0]  # type: ignore[misc]
            metrics[status] += 1
            slowest_metrics = max(slowest_metrics, took)
            admin.update(results[1:])  # type: ignore[arg-type]
            rounds += 1
            await asyncio.sleep(pause)
    return {"admin": dict(admin), "metrics": dict(metrics), "slowest_metrics_s": slowest_metrics, "rounds": rounds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("url")
    ap.add_argument("--token", required=True)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--burst", type=int, default=40)
    ap.add_argument("--pause", type=float, default=0.25)
    ap.add_argument("--only", choices=("all", "unauthorized", "authorized"), default="all")
    args = ap.parse_args()
    result = asyncio.run(_abuse(args.url, args.token, args.seconds, args.burst, args.pause, args.only))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
