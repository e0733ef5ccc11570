"""The API over a large online store: start → ready, RSS, and p99 at ``wrk -c8`` — steady, during a
materialization, and during the mirror's reload that follows — for each way of reading the
online features (mirror, direct PostgreSQL, direct Redis).

    .venv/bin/python benchmarks/online_bench.py --home DIR [--modes mirror,direct-postgres,direct-redis]
        [--duration 20] [--reload] [--model-home DIR] [--json FILE]

``--home`` is a STREAMFLOW_HOME whose months are ingested and materialized (``scale_bench.py``
leaves none behind; prepare one with ``streamflow seeds generate`` + ``streamflow ingest``).
The model comes from ``--model-home`` (trained once on 7,043 generated users — the course size — with the default
forest, cached): serving cost depends on the model, not on the user base. ``direct-redis``
starts a ``redis-server`` on a free port and fills it with the bulk Redis writer (timed).
Every figure is printed with the 1-minute load average (the machine is shared).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

WINDOW_SECONDS = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load() -> float:
    return round(os.getloadavg()[0], 2)


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


@dataclass
class WrkRun:
    started: float
    seconds: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    load: float


def write_lua(path: Path, user_ids: list[str]) -> Path:
    ids = ",".join(json.dumps(u) for u in user_ids)
    path.write_text(
        f"""
local ids = {{{ids}}}
local headers = {{["Content-Type"] = "application/json"}}
math.randomseed(42)
request = function()
  local id = ids[math.random(#ids)]
  return wrk.format("POST", "/predict", headers, '{{"user_id":"' .. id .. '"}}')
end
"""
    )
    return path


def run_wrk(url: str, lua: Path, seconds: int, connections: int = 8) -> WrkRun:
    started = time.time()
    before = load()
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), f"{url}/predict"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2 = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2.group(1)) if non2 else 0) + (sum(int(x) for x in errs.groups()) if errs else 0)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return WrkRun(started, seconds, total, errors, rps, _ms(lat["50"]), _ms(lat["99"]), before)


def rss_mb(pid: int) -> float:
    import psutil

    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


def metric(url: str, name: str) -> float:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        for s in family.samples:
            if s.name == name:
                return float(s.value)
    return 0.0


# ---- components -------------------------------------------------------------------------------
@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    import redis

    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(300):
            with contextlib.suppress(redis.RedisError):
                if redis.Redis.from_url(url).ping():
                    break
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def ensure_model(model_home: Path) -> str:
    """A production model trained on 7,043 generated users (the course size, the default forest); its tracking URI."""
    from streamflow.app.monthly import ingest_and_publish
    from streamflow.core.settings import Settings
    from streamflow.db.engine import release_embedded
    from streamflow.training.registry import production_version
    from streamflow.training.train import train_model

    settings = Settings(home=model_home)  # type: ignore[call-arg]
    try:
        if production_version(settings) is None:
            from streamflow.seeds.generator import generate_months

            seeds = model_home / "seeds"
            if not (seeds / "month_000").is_dir():
                generate_months(seeds, months=1, users=7_043, seed=21)
            ingest_and_publish(seeds / "month_000", "2024-01-31", settings)
            train_model("2024-01-31", settings, promote_if_first=True)
    finally:
        release_embedded(settings)
    return settings.tracking_uri


def publish_model(home: Path, tracking: str) -> str:
    """Deploy the model home's production version in ``home`` (the API serves deployment records
    from its own database, verified against the artefacts in MLflow, as `streamflow promote` does)."""
    from streamflow.core.settings import Settings
    from streamflow.training.registry import deployed, production_version, promote

    settings = Settings(home=home, mlflow_tracking_uri=tracking)  # type: ignore[call-arg]
    info = production_version(settings)
    if info is None:
        raise SystemExit(f"no production model in {tracking}")
    current = deployed(settings)
    if current is None or current.version != info.version:
        promote(settings, info.version, "online_bench: the course-size model", allow_older=True)
    return str(info.version)


def sample_user_ids(home: Path, n: int) -> list[str]:
    import psycopg

    from streamflow.core.settings import Settings
    from streamflow.db.engine import libpq_url

    with psycopg.connect(libpq_url(Settings(home=home))) as conn:  # type: ignore[call-arg]
        return [r[0] for r in conn.execute("SELECT user_id FROM users TABLESAMPLE SYSTEM (20) LIMIT %s", (n,))]


def materialize(home: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "streamflow", "materialize", "--no-progress"],
        env={**env, "STREAMFLOW_HOME": str(home), "STREAMFLOW_LOG_LEVEL": "WARNING"},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


@dataclass
class ModeResult:
    mode: str
    users: int
    start_to_ready_s: float
    rss_ready_mb: float
    rss_after_mb: float
    steady: WrkRun
    load_at_start: float
    during_materialize: list[WrkRun] = field(default_factory=list)
    during_reload: list[WrkRun] = field(default_factory=list)
    materialize_s: float | None = None
    reload_s: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@contextlib.contextmanager
def api(home: Path, env: dict[str, str], log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], float]]:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = log.open("wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamflow.serving", "--host", "127.0.0.1", "--port", str(port)],
        env={**env, "STREAMFLOW_HOME": str(home)},
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"API exited ({proc.returncode}); see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            if time.perf_counter() - t0 > 900:
                raise SystemExit(f"API not ready after 900 s; see {log}")
            time.sleep(0.1)
        yield url, proc, time.perf_counter() - t0
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        out.close()


def measure(
    home: Path, mode: str, env: dict[str, str], lua: Path, duration: int, reload: bool, log: Path
) -> ModeResult:
    import httpx

    lookup, _, store = mode.partition("-")
    env = {**env, "STREAMFLOW_ONLINE_LOOKUP": lookup, "STREAMFLOW_ONLINE_STORE": store or "postgres",
           "STREAMFLOW_FEATURE_POLL_SECONDS": "1", "STREAMFLOW_LOG_LEVEL": "INFO"}  # fmt: skip
    load_at_start = load()
    with api(home, env, log) as (url, proc, ready_s):
        rss_ready = rss_mb(proc.pid)
        users = int(httpx.get(f"{url}/ready", timeout=5).json()["features"].get("users") or 0)
        run_wrk(url, lua, 3)  # warm-up
        steady = run_wrk(url, lua, duration)
        result = ModeResult(mode, users, round(ready_s, 2), rss_ready, rss_mb(proc.pid), steady, load_at_start)
        if reload and lookup == "mirror":
            reloads = metric(url, "api_feature_reloads_total")
            windows: list[WrkRun] = []
            stop = threading.Event()

            def traffic() -> None:
                while not stop.is_set():
                    windows.append(run_wrk(url, lua, WINDOW_SECONDS))

            thread = threading.Thread(target=traffic, daemon=True)
            thread.start()
            time.sleep(WINDOW_SECONDS)  # one window before the materialization starts
            t_mat = time.time()
            result.materialize_s = round(materialize(home, env), 1)
            t_mat_end = time.time()
            while metric(url, "api_feature_reloads_total") <= reloads:
                time.sleep(0.2)
            t_reload_end = time.time()
            result.reload_s = round(metric(url, "api_feature_reload_duration_seconds"), 2)
            time.sleep(WINDOW_SECONDS)
            stop.set()
            thread.join()
            for w in windows:
                end = w.started + w.seconds
                if w.started < t_mat_end and end > t_mat:
                    result.during_materialize.append(w)
                if w.started < t_reload_end and end > t_mat_end:
                    result.during_reload.append(w)
            result.rss_after_mb = max(result.rss_after_mb, rss_mb(proc.pid))
            result.notes["windows"] = len(windows)
            result.notes["rss_after_reload_mb"] = rss_mb(proc.pid)
    return result


def summary(r: ModeResult) -> str:
    def worst(ws: list[WrkRun]) -> str:
        if not ws:
            return "—"
        w = max(ws, key=lambda x: x.p99_ms)
        return f"p99 {w.p99_ms:.2f} ms (worst {WINDOW_SECONDS}-s window of {len(ws)}, load {w.load})"

    s = r.steady
    text = (
        f"{r.mode:<16} users={r.users:,} start→ready {r.start_to_ready_s:.1f} s, RSS {r.rss_ready_mb:.0f} MB "
        f"(after load {r.rss_after_mb:.0f} MB), steady {s.rps:,.0f} req/s p50 {s.p50_ms:.2f} p99 {s.p99_ms:.2f} ms "
        f"errors {s.errors} (load {s.load}; at start {r.load_at_start})"
    )
    if r.materialize_s is not None:
        text += (
            f"\n{'':<16} during materialization ({r.materialize_s} s): {worst(r.during_materialize)}; "
            f"during the reload ({r.reload_s} s): {worst(r.during_reload)}; RSS after reload "
            f"{r.notes.get('rss_after_reload_mb')} MB"
        )
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--modes", default="mirror,direct-postgres,direct-redis")
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--reload", action="store_true", help="mirror: also measure during a materialization + reload")
    ap.add_argument("--model-home", type=Path, help="where the model is trained once (default: beside --home)")
    ap.add_argument("--sample", type=int, default=100_000, help="random user ids the load generator asks for")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found (apt-get install -y wrk)")
    from streamflow.core.logging_setup import setup_logging

    setup_logging("WARNING")
    home = args.home.resolve()
    model_home = (args.model_home or home.parent / "model_home").resolve()
    tracking = ensure_model(model_home)
    print(f"model: v{publish_model(home, tracking)} deployed in {home}", flush=True)
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    ids = sample_user_ids(home, args.sample)
    random.Random(1).shuffle(ids)
    work = home.parent / "online_bench"
    work.mkdir(exist_ok=True)
    lua = write_lua(work / "predict.lua", ids)
    results = []
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    with contextlib.ExitStack() as stack:
        if any(m.endswith("redis") for m in modes):
            url = stack.enter_context(redis_server(work / "redis"))
            env["STREAMFLOW_REDIS_URL"] = url
            t0 = time.perf_counter()
            before = load()
            materialize(home, {**env, "STREAMFLOW_ONLINE_STORE": "redis"})
            import redis

            info = redis.Redis.from_url(url).info("memory")
            print(
                f"redis bulk materialization: {time.perf_counter() - t0:.1f} s (load {before}→{load()}), "
                f"Redis used_memory {info['used_memory'] / 2**20:.0f} MB",
                flush=True,
            )
        for mode in modes:
            r = measure(home, mode, env, lua, args.duration, args.reload, work / f"api-{mode}.log")
            print(summary(r), flush=True)
            results.append(r)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2, default=str))


if __name__ == "__main__":
    main()
