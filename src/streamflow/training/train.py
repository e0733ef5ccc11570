"""Train the churn model on one month's point-in-time dataset, log everything to
MLflow, register a version and (when none exists) give it the production alias."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from streamflow.dates import parse_as_of
from streamflow.errors import InputError
from streamflow.features.dataset import build_point_in_time_dataset
from streamflow.model_artifacts import ONNX_ARTIFACT, SHA256_TAGS, sha256_hex
from streamflow.schema import ENTITY, FEATURE_DTYPES, FEATURES, LABEL
from streamflow.settings import Settings
from streamflow.training.onnx_export import export_onnx
from streamflow.training.pipeline import build_pipeline, check_trusted_types
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
Progress = Callable[[str], None]


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


def fit_pipeline(split: Split, settings: Settings) -> tuple[Pipeline, dict[str, float], float]:
    pipe = build_pipeline(settings)
    t0 = time.perf_counter()
    pipe.fit(split.X_train, split.y_train)
    seconds = time.perf_counter() - t0
    metrics = evaluate(pipe, split.X_val, split.y_val)
    return pipe, metrics, seconds


def train_model(
    as_of: str | date,
    settings: Settings,
    *,
    promote_if_first: bool = True,
    dataset: pd.DataFrame | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    say = progress or (lambda _m: None)
    as_of_d = parse_as_of(as_of)
    say(f"building the point-in-time dataset for {as_of_d}")
    df = dataset if dataset is not None else build_point_in_time_dataset(as_of_d, settings)
    if df[LABEL].nunique() < 2:
        raise InputError(f"as_of={as_of_d}: labels have a single class; cannot train")
    split = split_dataset(df, settings.random_seed)

    experiment_id = ensure_experiment(settings)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"rf_{as_of_d}") as run:
        mlflow.set_tags({"as_of": str(as_of_d), "model_family": "random_forest", "trigger": "train"})
        mlflow.log_params(
            {
                "as_of": str(as_of_d),
                "n_estimators": settings.n_estimators,
                "class_weight": "balanced",
                "max_features": "sqrt",
                "random_state": settings.random_seed,
                "val_size": VAL_SIZE,
                "n_rows": len(df),
                "n_train": len(split.X_train),
                "n_val": len(split.X_val),
                "churn_rate": round(float(df[LABEL].mean()), 6),
            }
        )
        say(f"training RandomForest({settings.n_estimators}) on {len(split.X_train)} rows")
        pipe, metrics, seconds = fit_pipeline(split, settings)
        mlflow.log_metrics({**metrics, "train_time_seconds": seconds})
        mlflow.log_dict(feature_schema(), "feature_schema.json")

        trusted = check_trusted_types(pipe)  # before anything is logged: fixed list, in code

        say("logging the model (scikit-learn + ONNX) to MLflow")
        onnx_bytes = export_onnx(pipe, split.X_val)
        hashes = {ONNX_ARTIFACT: sha256_hex(onnx_bytes)}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(ONNX_ARTIFACT).name
            path.write_bytes(onnx_bytes)
            mlflow.log_artifact(str(path), artifact_path=str(Path(ONNX_ARTIFACT).parent))
        # CBPE calibration (fitted on the ONNX model's validation probabilities) + training user ids
        from streamflow.monitoring.production_model import log_quality_artifacts

        hashes.update(log_quality_artifacts(onnx_bytes, split.X_val, split.y_val, df.loc[split.X_train.index, ENTITY]))
        sha_tags = {SHA256_TAGS[p]: h for p, h in hashes.items()}
        mlflow.set_tags(sha_tags)  # the run records what it logged ...
        example = split.X_val.head(5)
        signature = infer_signature(example, pipe.predict(example))
        info = mlflow.sklearn.log_model(
            pipe,
            name="model",
            signature=signature,
            input_example=example,
            registered_model_name=settings.model_name,
            skops_trusted_types=trusted,
        )
        version = str(info.registered_model_version) if info.registered_model_version is not None else None
        run_id = run.info.run_id
        if version is not None:  # ... and so does the registered version (promotion checks both)
            client = configure_mlflow(settings)
            for key, value in {**sha_tags, "as_of": str(as_of_d)}.items():
                client.set_model_version_tag(settings.model_name, version, key, value)

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
