"""Training settings by measurement: val AUC, fit time, peak RSS, ONNX size and ONNX scoring
speed of the course RandomForest for a grid of ``min_samples_leaf`` / ``max_depth`` /
``max_samples`` settings, on the course data and on generated months.

    .venv/bin/python benchmarks/train_grid.py --data course
    .venv/bin/python benchmarks/train_grid.py --data generated --users 1000000 \\
        --grid "min_samples_leaf=20,50,100;max_samples=25000,50000,100000"

Every setting runs in a fresh child process (its peak RSS is the child's ``ru_maxrss``) through
the project's own code: ``split_dataset`` (stratified 75/25, seed 42), ``fit_pipeline`` (the
pipeline of ``training/pipeline.py``, forest fitted as ``train_model`` fits it), ``export_onnx``
and onnxruntime scoring of the validation rows in batches (``score_in_batches``, 2 threads).
The month's frame is built from the month's CSVs (the five files joined on ``user_id``, the
canonical dtypes): the frame the dataset reader returns — on the course data the unbounded
forest reproduces the val AUC of training through the database, 0.8125.

``--split-seeds 42,1,2,3,4`` also reports the mean val AUC over those stratified splits (the
course's 1,761 validation rows give a single split's AUC an SD of about 0.011)."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COURSE_SEEDS = Path(os.environ.get("STREAMFLOW_COURSE_SEEDS", "/work/shared/data/streamflow-course/seeds"))
DEFAULT_GRID = {
    "course": "min_samples_leaf=1,5,10,20,50,100;max_depth=None",
    "generated": "min_samples_leaf=20,50,100;max_samples=25000,50000,100000",
}


def month_frame(month_dir: Path) -> object:
    """user_id, the 14 features (canonical dtypes) and churn_label of one month's CSVs."""
    import pandas as pd

    from streamflow.core.data_model import ENTITY, FEATURES, LABEL
    from streamflow.features.dataset import coerce_feature_dtypes

    frame = pd.read_csv(month_dir / "subscriptions.csv", dtype={ENTITY: str})
    for name in ("usage_agg_30d", "payments_agg_90d", "support_agg_90d", "labels"):
        frame = frame.merge(pd.read_csv(month_dir / f"{name}.csv", dtype={ENTITY: str}), on=ENTITY, validate="1:1")
    frame = coerce_feature_dtypes(frame[[ENTITY, *FEATURES, LABEL]])
    frame[LABEL] = frame[LABEL].astype(bool).astype("int64")
    return frame.sort_values(ENTITY).reset_index(drop=True)


def parse_grid(text: str) -> list[dict[str, int | None]]:
    axes: dict[str, list[int | None]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, values = part.split("=", 1)
        axes[name.strip()] = [None if v.strip() == "None" else int(v) for v in values.split(",")]
    return [dict(zip(axes, combo, strict=True)) for combo in itertools.product(*axes.values())]


# ---- child: one setting ---------------------------------------------------------------------
def child(frame_path: str, setting_json: str, split_seeds: str) -> None:
    import numpy as np
    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from streamflow.core.settings import Settings
    from streamflow.model.onnx_model import OnnxModel, score_in_batches
    from streamflow.training.onnx_export import export_onnx
    from streamflow.training.train import fit_pipeline, forest_size_metrics, split_dataset

    setting = json.loads(setting_json)
    df = pd.read_parquet(frame_path)
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home), **setting)  # type: ignore[arg-type]
        split = split_dataset(df, settings.random_seed)
        pipe, metrics, fit_seconds = fit_pipeline(split, settings)
        rss_fit = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        onnx_bytes = export_onnx(pipe, split.X_val)
        export_seconds = time.perf_counter() - t0
        onnx = OnnxModel(onnx_bytes, threads=settings.score_threads)
        t0 = time.perf_counter()
        proba = score_in_batches(onnx, split.X_val)
        score_seconds = time.perf_counter() - t0
        out: dict[str, object] = {
            **setting,
            "n_train": len(split.X_train),
            "val_auc": metrics["val_auc"],
            "onnx_val_auc": float(roc_auc_score(split.y_val, proba)),
            "fit_seconds": fit_seconds,
            "export_seconds": export_seconds,
            "onnx_mb": len(onnx_bytes) / 1e6,
            "score_rows_per_second": len(split.X_val) / score_seconds,
            "peak_rss_fit_mb": rss_fit,
            **{k: int(v) for k, v in forest_size_metrics(pipe).items()},
        }
        seeds = [int(s) for s in split_seeds.split(",") if s]
        if seeds:
            aucs = []
            for seed in seeds:
                s = split_dataset(df, seed)
                aucs.append(fit_pipeline(s, settings)[1]["val_auc"])
            out["split_seeds"] = seeds
            out["val_auc_mean"] = float(np.mean(aucs))
            out["val_auc_sd"] = float(np.std(aucs, ddof=1)) if len(aucs) > 1 else 0.0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("GRID_RESULT " + json.dumps(out), flush=True)


# ---- parent ---------------------------------------------------------------------------------
def run_setting(frame_path: Path, setting: dict[str, int | None], split_seeds: str) -> dict[str, object]:
    load_before = os.getloadavg()[0]
    cmd = [sys.executable, __file__, "--child", str(frame_path), json.dumps(setting), split_seeds]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"setting {setting} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("GRID_RESULT "))
    result: dict[str, object] = json.loads(line.removeprefix("GRID_RESULT "))
    result["load"] = f"{load_before:.1f}→{os.getloadavg()[0]:.1f}"
    return result


def fmt(value: object) -> str:
    return "None" if value is None else str(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=("course", "generated"), default="course")
    ap.add_argument("--users", type=int, default=200_000, help="generated users (seed 7, month_000)")
    ap.add_argument("--seeds", type=Path, help="month directories (month_000) to use instead")
    ap.add_argument("--grid", help="axes 'name=v1,v2;name=v1' over min_samples_leaf, max_depth, max_samples, ...")
    ap.add_argument("--split-seeds", default="", help="also report the mean val AUC over these split seeds")
    ap.add_argument("--workdir", type=Path, help="where generated months and cached frames go")
    ap.add_argument("--json", type=Path, help="append every result (one JSON per line) here")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return

    from streamflow.core.logging_setup import setup_logging

    setup_logging("WARNING")
    grid = parse_grid(args.grid or DEFAULT_GRID[args.data])
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = args.workdir or Path(tmp)
        if args.seeds is not None:
            month, label = args.seeds / "month_000", f"{args.seeds}"
        elif args.data == "course":
            month, label = COURSE_SEEDS / "month_000", "course data (7,043 users, 2024-01-31)"
        else:
            from streamflow.seeds.generator import generate_months

            seeds = work / f"generated-{args.users}"
            if not (seeds / "month_000").is_dir():
                generate_months(seeds, months=1, users=args.users, seed=7)
            month, label = seeds / "month_000", f"generated month_000, {args.users:,} users, seed 7"
        frame_path = work / f"frame-{abs(hash(str(month.resolve())))}.parquet"
        if not frame_path.exists():
            month_frame(month).to_parquet(frame_path)  # type: ignore[attr-defined]
        print(f"{label}: {len(grid)} settings", flush=True)
        results = []
        for setting in grid:
            r = run_setting(frame_path, setting, args.split_seeds)
            results.append(r)
            print(json.dumps(r), flush=True)
            if args.json:
                with args.json.open("a") as fh:
                    fh.write(json.dumps({"data": label, **r}) + "\n")

    keys = list(grid[0])
    head = " | ".join(keys)
    extra = " | mean val AUC over splits" if args.split_seeds else ""
    print(f"\n{label}, cpus={os.cpu_count()}")
    print(f"| {head} | val AUC | fit | nodes | ONNX | ONNX scoring | peak RSS | load{extra} |")
    print("|" + "---|" * (len(keys) + 7 + (1 if extra else 0)))
    for r in results:
        cells = " | ".join(fmt(r.get(k)) for k in keys)
        mean = f" | {r['val_auc_mean']:.4f} ± {r['val_auc_sd']:.4f}" if "val_auc_mean" in r else ""
        print(
            f"| {cells} | {r['val_auc']:.4f} | {r['fit_seconds']:.1f} s | {r['forest_nodes']:,} | "
            f"{r['onnx_mb']:.1f} MB | {r['score_rows_per_second']:,.0f} rows/s | {r['peak_rss_mb']:,.0f} MB | "
            f"{r['load']}{mean} |"
        )
    best = max(float(r["val_auc"]) for r in results)  # type: ignore[arg-type]
    near = [{k: r[k] for k in keys} for r in results if best - float(r["val_auc"]) <= 0.005]  # type: ignore[arg-type]
    print(f"best val AUC {best:.4f}; settings within 0.005 of it: {near}")


if __name__ == "__main__":
    main()
