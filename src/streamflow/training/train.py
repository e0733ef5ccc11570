"""Train the churn model on one month's point-in-time dataset, log everything to
MLflow, register a version and (when none exists) give it the production alias."""

from __future__ import annotations

import json
import logging
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from streamflow.core.data_model import ENTITY, FEATURE_DTYPES, FEATURES, LABEL
from streamflow.core.dates import parse_as_of
from streamflow.core.errors import InputError
from streamflow.core.progress import ProgressCallback, ProgressEvent, no_progress
from streamflow.core.settings import Settings
from streamflow.features.dataset import build_point_in_time_dataset
from streamflow.model.artifacts import ONNX_ARTIFACT, SHA256_TAGS, sha256_hex
from streamflow.training.onnx_export import export_onnx
from streamflow.training.pipeline import ForestParams, build_pipeline, check_trusted_types, forest_params
from streamflow.training.registry import (
    PromotionConflict,
    configure_mlflow,
    deployed,
    ensure_experiment,
    production_version,
    promote,
)

log = logging.getLogger(__name__)
VAL_SIZE = 0.25
FIT_TASK = "fit forest"


@dataclass
class Split:
    X_train: pd.DataFrame
    X_val: pd.DataFrame
    y_train: pd.Series
    y_val: pd.Series


@dataclass
class TrainResult:
    as_of: date
    run_id: str
    version: str | None
    metrics: dict[str, float]
    promoted: bool
    pipeline: Pipeline = field(repr=False)
    split: Split = field(repr=False)


def split_dataset(df: pd.DataFrame, seed: int) -> Split:
    """Stratified 75/25 split with a fixed seed (the same split for every model of a month)."""
    X = df[FEATURES]
    y = df[LABEL].astype("int64")
    X_tr, X_va, y_tr, y_va = train_test_split(X, y, test_size=VAL_SIZE, stratify=y, random_state=seed)
    return Split(X_tr, X_va, y_tr, y_va)


def evaluate(model: Pipeline, X: pd.DataFrame, y: pd.Series) -> dict[str, float]:
    proba = model.predict_proba(X)[:, 1]
    pred = (proba >= 0.5).astype(int)
    return {
        "val_auc": float(roc_auc_score(y, proba)),
        "val_f1": float(f1_score(y, pred)),
        "val_acc": float(accuracy_score(y, pred)),
    }


def feature_schema() -> dict[str, object]:
    return {"features": [{"name": f, "dtype": FEATURE_DTYPES[f]} for f in FEATURES], "label": LABEL}


def fit_in_steps(pipe: Pipeline, X: pd.DataFrame, y: pd.Series, step: int, progress: ProgressCallback) -> Pipeline:
    """Fit ``pipe`` (preprocess + RandomForest) reporting the trees grown: the preprocessing once,
    then the forest ``step`` trees at a time (``warm_start``). scikit-learn draws the seeds of the
    new trees after skipping those of the existing ones, so the forest is identical to a single
    ``fit`` (a unit test checks it, probability for probability)."""
    preprocess, forest = pipe.steps[0][1], pipe.steps[-1][1]
    Xt = np.ascontiguousarray(preprocess.fit_transform(X), dtype=np.float32)  # the forest's own dtype
    total = int(forest.n_estimators)
    progress(ProgressEvent(FIT_TASK, 0, total, unit="trees"))
    forest.set_params(warm_start=True)
    try:
        with warnings.catch_warnings():
            # "balanced" + warm_start is discouraged when later fits see other data; ours see the same rows
            warnings.filterwarnings("ignore", message=".*class_weight presets.*", category=UserWarning)
            for n in range(min(step, total), total + step, step):
                forest.set_params(n_estimators=min(n, total))
                forest.fit(Xt, y)
                progress(ProgressEvent(FIT_TASK, len(forest.estimators_), total, unit="trees"))
                if len(forest.estimators_) >= total:
                    break
    finally:
        forest.set_params(warm_start=False, n_estimators=total)
    return pipe


def fit_pipeline(
    split: Split, settings: Settings, progress: ProgressCallback | None = None
) -> tuple[Pipeline, dict[str, float], float]:
    """The pipeline fitted on the training split (forest bounded as :func:`forest_params` says
    for that many rows), its validation metrics and the fit's seconds."""
    pipe = build_pipeline(settings, n_train=len(split.X_train))
    t0 = time.perf_counter()
    fit_in_steps(pipe, split.X_train, split.y_train, settings.fit_chunk_trees, progress or no_progress)
    seconds = time.perf_counter() - t0
    metrics = evaluate(pipe, split.X_val, split.y_val)
    return pipe, metrics, seconds


def forest_run_params(params: ForestParams, settings: Settings, n_train: int) -> dict[str, object]:
    """What the run logs about the forest: its effective parameters, the settings they came from
    and how many rows each tree's bootstrap holds (subsampling is never silent)."""
    return {
        **params.as_params(),
        "max_samples_setting": "None" if settings.max_samples is None else settings.max_samples,
        "bootstrap_rows_per_tree": params.max_samples if params.max_samples is not None else n_train,
        "subsampled": params.max_samples is not None,
    }


def register_version(settings: Settings, info: Any, run_id: str, tags: dict[str, str]) -> str:
    """A new version of ``settings.model_name`` for the logged model ``info`` of run ``run_id``,
    with ``tags`` set at creation (the registered model is created on first use)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    client = configure_mlflow(settings)
    try:
        client.create_registered_model(settings.model_name)
    except MlflowException as exc:  # registered before (or by a concurrent training)
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    mv = client.create_model_version(
        settings.model_name, source=info.model_uri, run_id=run_id, tags=tags, model_id=info.model_id
    )
    return str(mv.version)


def train_model(
    as_of: str | date,
    settings: Settings,
    *,
    promote_if_first: bool = True,
    dataset: pd.DataFrame | None = None,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train on month ``as_of`` (or on ``dataset``), log and register the model. ``progress``
    receives the long steps (dataset rows read, trees grown, validation rows scored by the ONNX
    model) and a message per phase."""
    on_progress = progress or no_progress

    def say(message: str) -> None:
        on_progress(ProgressEvent("train", message=message))

    as_of_d = parse_as_of(as_of)
    say(f"building the point-in-time dataset for {as_of_d}")
    df = dataset if dataset is not None else build_point_in_time_dataset(as_of_d, settings, progress=on_progress)
    if df[LABEL].nunique() < 2:
        raise InputError(f"as_of={as_of_d}: labels have a single class; cannot train")
    split = split_dataset(df, settings.random_seed)
    params = forest_params(settings, len(split.X_train))

    experiment_id = ensure_experiment(settings)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"rf_{as_of_d}") as run:
        mlflow.set_tags({"as_of": str(as_of_d), "model_family": "random_forest", "trigger": "train"})
        mlflow.log_params(
            {
                "as_of": str(as_of_d),
                **forest_run_params(params, settings, len(split.X_train)),
                "random_state": settings.random_seed,
                "val_size": VAL_SIZE,
                "n_rows": len(df),
                "n_train": len(split.X_train),
                "n_val": len(split.X_val),
                "churn_rate": round(float(df[LABEL].mean()), 6),
            }
        )
        if params.max_samples is not None:
            mlflow.set_tag(
                "subsampling",
                f"each tree is grown on a bootstrap of {params.max_samples:,} of the {len(split.X_train):,} "
                "training rows (max_samples; its measured effect on val AUC: benchmarks/README.md, training)",
            )
        bounds = f"min_samples_leaf={params.min_samples_leaf}, max_depth={params.max_depth}"
        rows = f"{params.max_samples:,} rows per tree" if params.max_samples is not None else "all rows per tree"
        say(f"training RandomForest({params.n_estimators}, {bounds}) on {len(split.X_train):,} rows ({rows})")
        pipe, metrics, seconds = fit_pipeline(split, settings, on_progress)
        mlflow.log_metrics({**metrics, "train_time_seconds": seconds, **forest_size_metrics(pipe)})
        mlflow.log_dict(feature_schema(), "feature_schema.json")

        trusted = check_trusted_types(pipe)  # before anything is logged: fixed list, in code

        say("compiling the model to ONNX")
        t0 = time.perf_counter()
        onnx_bytes = export_onnx(pipe, split.X_val)
        mlflow.log_metrics({"onnx_bytes": len(onnx_bytes), "onnx_export_seconds": time.perf_counter() - t0})
        hashes = {ONNX_ARTIFACT: sha256_hex(onnx_bytes)}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(ONNX_ARTIFACT).name
            path.write_bytes(onnx_bytes)
            mlflow.log_artifact(str(path), artifact_path=str(Path(ONNX_ARTIFACT).parent))
        # CBPE calibration (fitted on the ONNX model's validation probabilities) + training user ids
        from streamflow.training.artifacts import log_quality_artifacts

        say("logging the model (scikit-learn + ONNX) to MLflow")
        hashes.update(
            log_quality_artifacts(
                onnx_bytes,
                split.X_val,
                split.y_val,
                df.loc[split.X_train.index, ENTITY],
                threads=settings.score_threads,
                progress=on_progress,
            )
        )
        sha_tags = {SHA256_TAGS[p]: h for p, h in hashes.items()}
        mlflow.set_tags(sha_tags)  # the run records what it logged ...
        # Integer features are declared as doubles: at inference a missing value (a user without
        # usage rows) arrives as NaN, which the pipeline imputes and an integer schema would refuse.
        example = split.X_val.head(5)
        example = example.astype({c: "float64" for c in example.select_dtypes("integer").columns})
        signature = infer_signature(example, pipe.predict(example))
        info = mlflow.sklearn.log_model(
            pipe,
            name="model",
            signature=signature,
            input_example=example,
            skops_trusted_types=trusted,
        )
        run_id = run.info.run_id
        # ... and so does the registered version (promotion checks both). Registered through the
        # client, not log_model(registered_model_name=…): that path prints "Successfully registered
        # model …" / "Created version …" on stderr, which is not ours to show.
        version = register_version(settings, info, run_id, {**sha_tags, "as_of": str(as_of_d)})

    promoted = False
    if version is not None and promote_if_first and deployed(settings) is None and production_version(settings) is None:
        try:
            promote(
                settings,
                version,
                f"first model (trained on {as_of_d}, val_auc={metrics['val_auc']:.4f})",
                expected_current=None,  # only if still nothing is deployed (another training may win)
            )
            promoted = True
        except PromotionConflict as exc:
            log.info("event=first_model_not_promoted version=%s reason=%r", version, str(exc))
    log.info(
        "event=trained as_of=%s run_id=%s version=%s val_auc=%.4f promoted=%s",
        as_of_d,
        run_id,
        version,
        metrics["val_auc"],
        promoted,
    )
    return TrainResult(as_of_d, run_id, version, metrics, promoted, pipe, split)


def forest_size_metrics(pipe: Pipeline) -> dict[str, float]:
    """Nodes and leaves of the fitted forest (what the ONNX artefact and its scoring cost scale with)."""
    trees = [e.tree_ for e in pipe.steps[-1][1].estimators_]
    return {
        "forest_nodes": float(sum(t.node_count for t in trees)),
        "forest_leaves": float(sum(t.n_leaves for t in trees)),
        "forest_max_depth": float(max(t.max_depth for t in trees)),
    }


def predict_proba(model: Pipeline, X: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict_proba(X[FEATURES])[:, 1])


def dump_json(result: TrainResult) -> str:
    return json.dumps(
        {
            "as_of": str(result.as_of),
            "run_id": result.run_id,
            "version": result.version,
            "metrics": result.metrics,
            "promoted": result.promoted,
        }
    )
