"""The monthly monitor at scale: the Spark engine (``local[2]``) next to the single-machine path on
the same generated months.

    .venv/bin/python benchmarks/spark_bench.py --users 1000000 [--engines spark-csv,spark-lake,local]
        [--workdir DIR] [--seeds DIR] [--driver-memory 4g]

One fresh STREAMFLOW_HOME (its own embedded PostgreSQL and MLflow): a production model is trained on
a small generated month (``--train-users``, as_of 2023-12-31, the default forest); then two months
of ``--users`` users are generated with planted drift (month_001: ``--drift``). Each engine runs
the whole monitor (validation or PostgreSQL reads, point-in-time features, scoring, drift,
performance, decision, summary) in a child process, with a step runner that times every step; the
parent samples the resident memory of the child's whole process tree (Python, the JVM, Spark's
Python workers) every 0.25 s.

* ``spark-csv``: ``run_spark_monitor`` reading the two months' CSVs (validated on Spark);
* ``spark-lake``: ``lake export`` of both months (timed apart), then the monitor from Parquet;
* ``local``: both months ingested into PostgreSQL (``ingest_month``, timed apart), then
  ``run_monitor`` (Feast point-in-time datasets, ONNX scoring, Evidently).

The machine is shared: every run reports the 1-minute load average before → after."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

MONTHS = (("month_000", "2024-01-31"), ("month_001", "2024-02-29"))
TRAIN_AS_OF = date(2023, 12, 31)
DEFAULT_DRIFT = "watch_hours_30d*0.8,rebuffer_events_7d+1@1"


# ---- child side -----------------------------------------------------------------------------------
class Timer:
    def __init__(self) -> None:
        self.steps: dict[str, float] = defaultdict(float)

    def __call__(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.steps[name] += time.perf_counter() - t0


def _child(engine: str, home: str, seeds: str) -> dict[str, Any]:
    from streamflow.core.settings import Settings
    from streamflow.monitoring.monitor import MonitorRequest, run_monitor

    settings = Settings(home=Path(home))  # type: ignore[call-arg]
    request = MonitorRequest.build(
        settings, as_of_ref=MONTHS[0][1], as_of_cur=MONTHS[1][1], report_dir=Path(home) / "reports" / engine
    )
    timer = Timer()
    lines: list[str] = []
    if engine == "local":
        from streamflow.ingest.loader import ingest_month

        for month, as_of in MONTHS:
            timer(f"ingest {month} (PostgreSQL)", ingest_month, Path(seeds) / month, as_of, settings)
        t0 = time.perf_counter()
        summary = run_monitor(request, settings, emit=lines.append, step=timer)
    else:
        from streamflow.spark.lake import export_month
        from streamflow.spark.monitor import SparkInputs, run_spark_monitor
        from streamflow.spark.session import spark_session

        with spark_session(settings) as spark:
            if engine == "spark-lake":
                for month, as_of in MONTHS:
                    timer(f"lake export {month}", export_month, spark, settings, str(Path(seeds) / month), as_of)
                inputs = SparkInputs()
            else:
                inputs = SparkInputs(str(Path(seeds) / MONTHS[0][0]), str(Path(seeds) / MONTHS[1][0]))
            t0 = time.perf_counter()
            summary = run_spark_monitor(request, inputs, settings, emit=lines.append, step=timer)
    monitor_seconds = time.perf_counter() - t0
    perf = summary["performance"]
    return {
        "steps": dict(timer.steps),
        "monitor_seconds": monitor_seconds,
        "decision": summary["decision"],
        "drifted": [f["feature"] for f in summary["drifted_features"]],
        "scores": {f["feature"]: f["score"] for f in summary["feature_scores"]},
        "realized_auc": (perf.get("realized") or {}).get("auc"),
        "estimated_auc": (perf.get("estimated") or {}).get("auc"),
        "prediction_drift": (summary.get("prediction_drift") or {}).get("score"),
        "n_cur": summary["n_cur"],
        "lines": [ln for ln in lines if ln.startswith(("[Drift]", "[Evidently] drifted", "[Performance]"))],
    }


def child_main(engine: str, home: str, seeds: str) -> None:
    from streamflow.core.logging_setup import setup_logging

    setup_logging("WARNING")
    out = _child(engine, home, seeds)
    print("BENCH_RESULT " + json.dumps(out, default=str), flush=True)


# ---- parent side ----------------------------------------------------------------------------------
def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def run_engine(engine: str, home: Path, seeds: Path, env: dict[str, str]) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    cmd = [sys.executable, __file__, "--child", engine, str(home), str(seeds)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {
            "engine": engine,
            "failed": f"exit {proc.returncode}",
            "wall_seconds": wall,
            "peak_rss_mb": peak / 2**20,
        }
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH_RESULT "))
    data = json.loads(line.removeprefix("BENCH_RESULT "))
    data.update(
        engine=engine,
        wall_seconds=wall,
        peak_rss_mb=peak / 2**20,
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )
    return data


def prepare(home: Path, seeds: Path, users: int, train_users: int, drift: str) -> None:
    """Months of ``users`` users (planted drift in month_001) and a production model trained on a
    small earlier month, in ``home``."""
    from streamflow.core.settings import Settings
    from streamflow.seeds.generator import generate_months, parse_drift_option
    from streamflow.training.train import train_model

    if not (seeds / "month_001" / "labels.csv").exists():
        t0 = time.perf_counter()
        generate_months(seeds, months=2, users=users, seed=7, drift=parse_drift_option(drift))
        print(f"generated 2 months × {users:,} users in {time.perf_counter() - t0:.1f}s", flush=True)
    settings = Settings(home=home)  # type: ignore[call-arg]
    train_seeds = home.parent / "train_seeds"
    generate_months(train_seeds, months=1, users=train_users, seed=11, start_as_of=TRAIN_AS_OF)
    from streamflow.app.monthly import ingest_and_publish

    ingest_and_publish(train_seeds / "month_000", TRAIN_AS_OF.isoformat(), settings)  # + Feast's registry
    t0 = time.perf_counter()
    result = train_model(TRAIN_AS_OF.isoformat(), settings, promote_if_first=True)
    print(f"trained v{result.version} on {train_users:,} users in {time.perf_counter() - t0:.1f}s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--train-users", type=int, default=20_000)
    ap.add_argument("--engines", default="spark-csv,spark-lake,local")
    ap.add_argument("--drift", default=DEFAULT_DRIFT, help="planted drift of month_001 (seeds generate syntax)")
    ap.add_argument("--seeds", type=Path, help="reuse generated months (month_000, month_001) from here")
    ap.add_argument("--workdir", type=Path, help="where the home and the seeds go (default: system temp)")
    ap.add_argument("--driver-memory", default="4g", help="STREAMFLOW_SPARK_DRIVER_MEMORY of the Spark runs")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--child", nargs=3, metavar=("ENGINE", "HOME", "SEEDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(*args.child)
        return
    from streamflow.core.logging_setup import setup_logging
    from streamflow.core.settings import Settings
    from streamflow.db.engine import libpq_url, release_embedded

    setup_logging("WARNING")
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        home = Path(tmp) / "home"
        seeds = args.seeds or Path(tmp) / "seeds"
        settings = Settings(home=home)  # type: ignore[call-arg]
        libpq_url(settings)  # the embedded PostgreSQL, held by this process; the children attach to it
        results = []
        try:
            prepare(home, seeds, args.users, args.train_users, args.drift)
            env = dict(os.environ, STREAMFLOW_HOME=str(home), STREAMFLOW_SPARK_DRIVER_MEMORY=args.driver_memory)
            env.pop("MLFLOW_TRACKING_URI", None)
            for engine in engines:
                print(f"running {engine} …", flush=True)
                r = run_engine(engine, home, seeds, env)
                results.append(r)
                print(json.dumps({k: v for k, v in r.items() if k != "scores"}, indent=1, default=str), flush=True)
        finally:
            release_embedded(settings)
    print(f"\nusers={args.users:,} cpus={os.cpu_count()}")
    print("| engine | monitor wall time | steps | peak RSS (process tree) | load avg before→after | decision |")
    print("|---|---|---|---|---|---|")
    for r in results:
        if "failed" in r:
            print(f"| {r['engine']} | failed ({r['failed']}) after {r['wall_seconds']:.0f} s | | "
                  f"{r['peak_rss_mb']:,.0f} MB | | |")  # fmt: skip
            continue
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in r["steps"].items())
        print(
            f"| {r['engine']} | {r['monitor_seconds']:.1f} s | {steps} | {r['peak_rss_mb']:,.0f} MB | "
            f"{r['load_before']:.1f}→{r['load_after']:.1f} | {r['decision']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
