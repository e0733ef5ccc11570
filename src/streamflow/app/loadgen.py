"""``streamflow load``: /predict traffic for real user ids (the course's curl loop, done
properly): bounded in count and time, optional rate limit, loopback or the configured
API URL only, a rich progress bar and a closing summary."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streamflow.core.errors import InputError
from streamflow.core.settings import Settings

MAX_REQUESTS = 1_000_000
MAX_CONCURRENCY = 256
MAX_DURATION_SECONDS = 3600.0
REQUEST_TIMEOUT_SECONDS = 10.0
PREDICT_PATH = "/predict"


class LoadTargetError(InputError, ValueError):
    """The URL is neither loopback nor the configured API URL."""


@dataclass
class LoadSummary:
    url: str
    requests: int
    ok: int
    errors: dict[str, int]
    status_counts: dict[str, int]
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    concurrency: int
    target_rps: float | None
    stopped_by: str
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    # 2xx answers per model version that served them (a hot swap under load shows as two entries)
    model_versions: dict[str, int] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("latencies_ms")
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def table(self) -> Table:
        t = Table(title=f"load summary — {self.url}", show_header=False)
        t.add_row("requests", str(self.requests))
        t.add_row("ok (2xx)", str(self.ok))
        t.add_row("errors", ", ".join(f"{k}: {v}" for k, v in sorted(self.errors.items())) or "none")
        t.add_row("duration", f"{self.seconds:.2f} s (stopped by {self.stopped_by})")
        t.add_row("throughput", f"{self.rps:.1f} req/s" + (f" (target {self.target_rps:g})" if self.target_rps else ""))
        t.add_row("latency p50 / p95 / p99", f"{self.p50_ms:.2f} / {self.p95_ms:.2f} / {self.p99_ms:.2f} ms")
        t.add_row("latency max", f"{self.max_ms:.2f} ms")
        t.add_row("concurrency", str(self.concurrency))
        if self.model_versions:
            t.add_row("served by", ", ".join(f"v{v}: {n:,}" for v, n in sorted(self.model_versions.items())))
        return t


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoadTargetError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname.lower(), port


def check_target(url: str, settings: Settings | None) -> str:
    """The /predict URL to hit; raises LoadTargetError for any other host than loopback
    or the configured ``settings.api_url``."""
    scheme, host, port = _origin(url)
    allowed = _loopback(host)
    if not allowed and settings is not None and settings.api_url:
        allowed = _origin(settings.api_url) == (scheme, host, port)
    if not allowed:
        raise LoadTargetError(
            f"refusing to send load to {host!r}: only loopback addresses or the configured "
            "STREAMFLOW_API_URL are allowed"
        )
    path = urlsplit(url).path.rstrip("/")
    return url.rstrip("/") if path.endswith(PREDICT_PATH) else url.rstrip("/") + PREDICT_PATH


def load_user_ids(settings: Settings) -> list[str]:
    import sqlalchemy as sa

    from streamflow.db.engine import get_engine

    with get_engine(settings).connect() as conn:
        ids = [str(r[0]) for r in conn.execute(sa.text("SELECT user_id FROM users ORDER BY user_id"))]
    if not ids:
        raise LoadTargetError("no users in the database: ingest a month first (streamflow ingest)")
    return ids


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    k = min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


async def _drive(
    target: str,
    requests: int,
    concurrency: int,
    rps: float | None,
    deadline_s: float,
    user_ids: Sequence[str],
    seed: int,
    on_done: Callable[[], None],
    stop: threading.Event | None,
) -> tuple[list[float], Counter[str], int, float, str, Counter[str]]:
    rng = random.Random(seed)
    bodies = [json.dumps({"user_id": u}).encode() for u in user_ids]
    latencies: list[float] = []
    outcomes: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    issued = 0
    ok = 0
    stopped_by = "count"
    start = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_SECONDS, headers=headers) as client:

        async def worker() -> None:
            nonlocal issued, ok, stopped_by
            while True:
                if issued >= requests:
                    return
                if stop is not None and stop.is_set():
                    stopped_by = "stop"
                    return
                now = time.perf_counter() - start
                if now >= deadline_s:
                    stopped_by = "duration"
                    return
                k = issued
                issued += 1
                if rps:
                    delay = k / rps - now
                    if delay > 0:
                        if now + delay >= deadline_s:
                            stopped_by = "duration"
                            return
                        await asyncio.sleep(delay)
                body = bodies[rng.randrange(len(bodies))]
                t0 = time.perf_counter()
                try:
                    resp = await client.post(target, content=body)
                    key = str(resp.status_code)
                    if 200 <= resp.status_code < 300:
                        ok += 1
                        version = _served_version(resp.content)
                        if version is not None:
                            versions[version] += 1
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                latencies.append((time.perf_counter() - t0) * 1000.0)
                outcomes[key] += 1
                on_done()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, outcomes, ok, time.perf_counter() - start, stopped_by, versions


def _served_version(body: bytes) -> str | None:
    try:
        version = json.loads(body).get("model_version")
    except (ValueError, AttributeError):
        return None
    return str(version) if version is not None else None


def run_load(
    url: str,
    requests: int,
    concurrency: int,
    rps: float | None = None,
    duration: float | None = None,
    user_ids: Sequence[str] | None = None,
    settings: Settings | None = None,
    *,
    show_progress: bool = True,
    console: Console | None = None,
    seed: int = 0,
    stop: threading.Event | None = None,
) -> LoadSummary:
    """Send up to ``requests`` POST /predict (random real user ids) with ``concurrency``
    connections, at most ``rps`` per second, for at most ``duration`` seconds, or until ``stop``
    is set (e.g. by another thread). Shows a progress bar (``show_progress``); print
    ``summary.table()`` for the closing summary."""
    if not 1 <= requests <= MAX_REQUESTS:
        raise LoadTargetError(f"requests must be within 1..{MAX_REQUESTS}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise LoadTargetError(f"concurrency must be within 1..{MAX_CONCURRENCY}")
    if rps is not None and rps <= 0:
        raise LoadTargetError("rps must be positive")
    if duration is not None and not 0 < duration <= MAX_DURATION_SECONDS:
        raise LoadTargetError(f"duration must be within (0, {MAX_DURATION_SECONDS:g}] seconds")
    target = check_target(url, settings)
    if user_ids is None:
        from streamflow.core.settings import get_settings

        user_ids = load_user_ids(settings or get_settings())
    user_ids = [u for u in user_ids if u]
    if not user_ids:
        raise LoadTargetError("no user ids to send")
    deadline = duration if duration is not None else MAX_DURATION_SECONDS
    console = console or Console(stderr=True)

    progress = Progress(
        TextColumn("[bold]load[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.1f} req/s"),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
        transient=False,
    )
    with progress:
        task = progress.add_task(target, total=requests, rate=0.0)
        t_start = time.perf_counter()
        state = {"n": 0}

        def on_done() -> None:
            state["n"] += 1
            n = state["n"]
            if n % 50 == 0 or n == requests:
                elapsed = time.perf_counter() - t_start
                progress.update(task, completed=n, rate=n / elapsed if elapsed > 0 else 0.0)

        latencies, outcomes, ok, seconds, stopped_by, versions = asyncio.run(
            _drive(target, requests, concurrency, rps, deadline, user_ids, seed, on_done, stop)
        )
        progress.update(task, completed=len(latencies))
    lat = sorted(latencies)
    errors = {k: v for k, v in outcomes.items() if not (k.isdigit() and 200 <= int(k) < 300)}
    summary = LoadSummary(
        url=target,
        requests=len(lat),
        ok=ok,
        errors=errors,
        status_counts=dict(outcomes),
        seconds=seconds,
        rps=len(lat) / seconds if seconds > 0 else 0.0,
        p50_ms=_percentile(lat, 50),
        p95_ms=_percentile(lat, 95),
        p99_ms=_percentile(lat, 99),
        max_ms=lat[-1] if lat else math.nan,
        concurrency=concurrency,
        target_rps=rps,
        stopped_by=stopped_by,
        latencies_ms=latencies,
        model_versions=dict(versions),
    )
    return summary
