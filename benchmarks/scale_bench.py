"""Scale benchmark of the monthly data path (one machine, generated users).

    .venv/bin/python benchmarks/scale_bench.py --users 1000000 \
        --stages ingest,materialize,train,monitor [--repeat 3]

Each repeat starts from a fresh STREAMFLOW_HOME (its own embedded PostgreSQL, held by this
process) and runs the sequence of every selected stage over two generated months:
ingest month 0 → materialize → train (on month 0; its model becomes production) → ingest
month 1 → materialize → monitor (month 0 vs month 1, the production model). Every step runs
in a child process (the library function, as the CLI runs it) whose wall time, peak RSS and
rows/s are recorded; the table shows the median over the repeats and the load average around
each step.

Stages are a registry (``CHILD`` + ``MONTHS_OF``): adding one (serve) is a function taking the
home, the month's directory and its as_of, returning the rows it processed, and the months it
runs on."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MONTHS = (("month_000", "2024-01-31"), ("month_001", "2024-02-29"))


@dataclass
class Context:
    home: Path
    seeds: Path
    users: int


@dataclass
class StepResult:
    stage: str
    month: str
    seconds: float
    peak_rss_mb: float
    rows: int
    load_before: float
    load_after: float
    detail: dict[str, object] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


# ---- child side: one step, in its own process -------------------------------------------------
def _child_ingest(home: str, month_dir: str, as_of: str) -> dict[str, object]:
    from streamflow.core.settings import Settings
    from streamflow.ingest.loader import ingest_month

    r = ingest_month(Path(month_dir), as_of, Settings(home=Path(home)))  # type: ignore[call-arg]
    return {
        "rows": sum(r.rows.values()),
        "validate_seconds": round(r.seconds_validate, 2),
        "load_seconds": round(r.seconds_load, 2),
    }


def _child_materialize(home: str, _month_dir: str, _as_of: str) -> dict[str, object]:
    from streamflow.core.settings import Settings
    from streamflow.features.store import materialize_online

    r = materialize_online(Settings(home=Path(home)))  # type: ignore[call-arg]
    return {"rows": r.rows, "writer": r.writer, "as_of": str(r.as_of)}


def _child_serve(home: str, _month_dir: str, _as_of: str) -> dict[str, object]:
    """The API in mirror mode over this home's online store (``online_bench.py``): start → ready, RSS,
    p99 at wrk -c8 steady and while a materialization and the mirror's reload run."""
    sys.path.insert(0, str(Path(__file__).parent))
    import online_bench

    root = Path(home)
    env = dict(os.environ, MLFLOW_TRACKING_URI=online_bench.ensure_model(root.parent / "model_home"))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    work = root.parent / "online_bench"
    work.mkdir(exist_ok=True)
    lua = online_bench.write_lua(work / "predict.lua", online_bench.sample_user_ids(root, 100_000))
    r = online_bench.measure(root, "mirror", env, lua, 20, True, work / "api-serve.log")
    worst = max((w.p99_ms for w in r.during_reload), default=float("nan"))
    return {
        "rows": r.users,
        "start_to_ready_s": r.start_to_ready_s,
        "api_rss_mb": max(r.rss_ready_mb, r.rss_after_mb),
        "p99_ms": r.steady.p99_ms,
        "p99_during_reload_ms": worst,
        "p99_during_materialize_ms": max((w.p99_ms for w in r.during_materialize), default=float("nan")),
        "reload_s": r.reload_s,
    }


def _child_train(home: str, _month_dir: str, as_of: str) -> dict[str, object]:
    from streamflow.core.settings import Settings
    from streamflow.training.train import train_model

    settings = Settings(home=Path(home))  # type: ignore[call-arg]
    r = train_model(as_of, settings)
    import mlflow

    run = mlflow.get_run(r.run_id)
    m, p = run.data.metrics, run.data.params
    return {
        "rows": len(r.split.X_train) + len(r.split.X_val),
        "val_auc": round(r.metrics["val_auc"], 4),
        "fit_seconds": round(m["train_time_seconds"], 1),
        "onnx_mb": round(m["onnx_bytes"] / 1e6, 1),
        "onnx_export_seconds": round(m["onnx_export_seconds"], 1),
        "forest_nodes": int(m["forest_nodes"]),
        "min_samples_leaf": p["min_samples_leaf"],
        "max_depth": p["max_depth"],
        "bootstrap_rows_per_tree": p["bootstrap_rows_per_tree"],
        "version": r.version,
    }


def _child_monitor(home: str, _month_dir: str, as_of: str) -> dict[str, object]:
    from typing import Any

    from streamflow.core.settings import Settings
    from streamflow.monitoring.monitor import MonitorRequest, run_monitor

    settings = Settings(home=Path(home))  # type: ignore[call-arg]
    request = MonitorRequest.build(settings, as_of_ref=MONTHS[0][1], as_of_cur=as_of)
    steps: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            steps[name] = round(steps.get(name, 0.0) + time.perf_counter() - t0, 1)

    summary = run_monitor(request, settings, emit=lambda _line: None, step=timed)
    perf = summary["performance"]
    return {
        "rows": summary["n_ref"] + summary["n_cur"],
        "drift_share": round(summary["drift_share"], 4),
        "decision": summary["decision"],
        "sample": f"{summary['sample']['reference']['rows']:,}+{summary['sample']['current']['rows']:,}",
        "realized_auc": round(perf["realized"]["auc"], 4) if perf["realized"] else None,
        "estimated_auc": round(perf["estimated"]["auc"], 4) if perf["estimated"] else None,
        "steps": steps,
    }


CHILD: dict[str, Callable[[str, str, str], dict[str, object]]] = {
    "ingest": _child_ingest,
    "materialize": _child_materialize,
    "train": _child_train,
    "monitor": _child_monitor,
    "serve": _child_serve,  # needs wrk; run after materialize
}
# Which months a stage runs on (default: every month): training on the first month (its model
# becomes production), the monitor once both months are in (first vs second).
MONTHS_OF: dict[str, tuple[str, ...]] = {"train": (MONTHS[0][0],), "monitor": (MONTHS[1][0],)}


def child_main(stage: str, home: str, month_dir: str, as_of: str) -> None:
    import resource

    from streamflow.core.logging_setup import setup_logging

    setup_logging("WARNING")
    # imports are process start-up, not the stage: load what the stage uses before timing it
    import streamflow.features.store
    import streamflow.ingest.loader

    if stage == "train":
        import mlflow.sklearn  # noqa: F401
        import skl2onnx  # noqa: F401

        import streamflow.training.train
    if stage == "monitor":
        import evidently.presets  # noqa: F401
        import onnxruntime  # noqa: F401

        import streamflow.monitoring.monitor  # noqa: F401

    t0 = time.perf_counter()
    out = CHILD[stage](home, month_dir, as_of)
    out["seconds"] = time.perf_counter() - t0
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("BENCH_RESULT " + json.dumps(out), flush=True)


# ---- parent side -----------------------------------------------------------------------------
def run_step(ctx: Context, stage: str, month: str, as_of: str) -> StepResult:
    load_before = os.getloadavg()[0]
    env = dict(os.environ, STREAMFLOW_HOME=str(ctx.home))
    cmd = [sys.executable, __file__, "--child", stage, str(ctx.home), str(ctx.seeds / month), as_of]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out = proc.stdout.read() if proc.stdout else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{stage} {month} failed (exit {proc.returncode})")
    line = next(ln for ln in out.splitlines() if ln.startswith("BENCH_RESULT "))
    data = json.loads(line.removeprefix("BENCH_RESULT "))
    return StepResult(
        stage=stage,
        month=month,
        seconds=float(data.pop("seconds")),
        peak_rss_mb=usage.ru_maxrss / 1024,
        rows=int(data.pop("rows")),
        load_before=load_before,
        load_after=os.getloadavg()[0],
        detail=data,
    )


def one_repeat(seeds: Path, users: int, stages: list[str], keep: Path | None) -> list[StepResult]:
    from streamflow.core.settings import Settings
    from streamflow.db.engine import libpq_url, release_embedded

    with tempfile.TemporaryDirectory(dir=keep) as tmp:
        settings = Settings(home=Path(tmp) / "home")  # type: ignore[call-arg]
        libpq_url(settings)  # start the embedded PostgreSQL; the children attach to it
        ctx = Context(home=settings.home, seeds=seeds, users=users)
        results = []
        try:
            for month, as_of in MONTHS:
                for stage in stages:
                    if month not in MONTHS_OF.get(stage, (month,)):
                        continue
                    r = run_step(ctx, stage, month, as_of)
                    print(
                        f"  {stage:<12} {month} {r.seconds:7.1f}s  {r.rows_per_second:12,.0f} rows/s  "
                        f"peak RSS {r.peak_rss_mb:6.0f} MB  load {r.load_before:.2f}→{r.load_after:.2f}  {r.detail}",
                        flush=True,
                    )
                    results.append(r)
        finally:
            release_embedded(settings)
        return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--stages", default="ingest,materialize,train,monitor", help=f"comma-separated, of {sorted(CHILD)}")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--seeds", type=Path, help="reuse generated months (month_000, month_001) from here")
    ap.add_argument("--workdir", type=Path, help="where temporary homes and seeds go (default: system temp)")
    ap.add_argument("--json", type=Path, help="also write every step's result here")
    ap.add_argument("--child", nargs=4, metavar=("STAGE", "HOME", "MONTH_DIR", "AS_OF"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_main(*args.child)
        return
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in CHILD]
    if unknown:
        raise SystemExit(f"unknown stage(s) {unknown}; known: {sorted(CHILD)}")

    from streamflow.core.logging_setup import setup_logging
    from streamflow.seeds.generator import generate_months

    setup_logging("WARNING")
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        seeds = args.seeds
        if seeds is None:
            seeds = Path(tmp) / "seeds"
            t0 = time.perf_counter()
            generate_months(seeds, months=2, users=args.users, seed=7)
            print(f"generated 2 months × {args.users:,} users in {time.perf_counter() - t0:.1f}s", flush=True)
        runs: list[list[StepResult]] = []
        for i in range(args.repeat):
            print(f"repeat {i + 1}/{args.repeat}", flush=True)
            runs.append(one_repeat(seeds, args.users, stages, args.workdir))
    print(f"\nusers={args.users:,} cpus={os.cpu_count()} repeats={args.repeat} (median)")
    print("| step | time | rows/s | peak RSS (child) | load avg before→after |")
    print("|---|---|---|---|---|")
    for j, step in enumerate(runs[0]):
        same = [r[j] for r in runs]
        secs = statistics.median(r.seconds for r in same)
        rss = statistics.median(r.peak_rss_mb for r in same)
        loads = ", ".join(f"{r.load_before:.1f}→{r.load_after:.1f}" for r in same)
        print(f"| {step.stage} {step.month} | {secs:.1f} s | {step.rows / secs:,.0f} | {rss:,.0f} MB | {loads} |")
    if args.json:
        args.json.write_text(json.dumps([[r.__dict__ for r in run] for run in runs], indent=2, default=str))


if __name__ == "__main__":
    main()
