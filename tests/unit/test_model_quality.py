"""Model-quality numbers without any service (issue 9): realized metrics and calibration bins,
the CBPE estimate's wrapping, the ``month`` / ``unseen`` populations with a real ONNX artefact of
the project's pipeline on a generated month, and the model-quality gauges of the monitor's push.
The database, MLflow and the monitor run in tests/integration/test_model_quality.py."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from streamflow.core.data_model import FEATURES, LABEL
from streamflow.core.settings import Settings
from streamflow.model.cbpe import CBPECalibration, estimate
from streamflow.model.onnx_model import OnnxModel
from streamflow.monitoring.decision import Decision
from streamflow.monitoring.drift import DriftResult, FeatureDrift, PredictionDrift, TargetDrift
from streamflow.monitoring.metrics_push import (
    METRIC_NAMES,
    PREDICTION_METRIC_NAMES,
    QUALITY_METRIC_NAMES,
    ModelQuality,
    drift_metrics_registry,
)
from streamflow.monitoring.performance import (
    ESTIMATED_METRICS,
    POPULATION_MONTH,
    POPULATION_UNSEEN,
    REALIZED_METRICS,
    Measurement,
    NoLabelsError,
    calibration_bins,
    estimated_metrics,
    measure_estimated,
    measure_realized,
    realized_metrics,
)
from streamflow.monitoring.production_model import ScoringModel
from streamflow.seeds import generator
from streamflow.training.artifacts import onnx_probabilities
from streamflow.training.onnx_export import export_onnx
from streamflow.training.pipeline import build_pipeline
from streamflow.training.train import split_dataset
from tests.helpers.data import month_frame


# ---- realized metrics ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    p = rng.beta(2, 4, 5000)
    y = (rng.random(5000) < p).astype(np.int64)
    return y, p


def test_realized_metrics_are_sklearn_s(scores: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scores
    pred = (p >= 0.5).astype(int)
    m = realized_metrics(y, p)
    assert tuple(m) == REALIZED_METRICS
    assert m == pytest.approx(
        {
            "auc": roc_auc_score(y, p),
            "f1": f1_score(y, pred),
            "precision": precision_score(y, pred),
            "recall": recall_score(y, pred),
            "accuracy": accuracy_score(y, pred),
            "brier": brier_score_loss(y, p),
            "predicted_churn_rate": p.mean(),
            "predicted_positive_rate": pred.mean(),
            "actual_churn_rate": y.mean(),
            "n": 5000,
        },
        abs=1e-12,
    )


def test_undefined_metrics_are_none_or_zero() -> None:
    m = realized_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert m["auc"] is None  # one class
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        realized_metrics([0, 1], [0.2, 1.2])
    with pytest.raises(ValueError, match="0/1"):
        realized_metrics([0, 2], [0.2, 0.3])
    with pytest.raises(ValueError, match="no rows"):
        realized_metrics([], [])


def test_calibration_bins_are_ten_equal_width_bins() -> None:
    p = np.array([0.0, 0.05, 0.1, 0.15, 0.95, 1.0, 0.55])
    y = np.array([0, 0, 1, 0, 1, 1, 0])
    bins = calibration_bins(y, p)
    assert [b.lower for b in bins] == pytest.approx([i / 10 for i in range(10)])
    assert [b.upper for b in bins] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert [b.count for b in bins] == [2, 2, 0, 0, 0, 1, 0, 0, 0, 2]  # 0.1 opens bin 1; 1.0 closes bin 9
    assert bins[0].mean_predicted == pytest.approx(0.025) and bins[0].observed_rate == 0.0
    assert bins[1].mean_predicted == pytest.approx(0.125) and bins[1].observed_rate == 0.5
    assert bins[9].mean_predicted == pytest.approx(0.975) and bins[9].observed_rate == 1.0
    assert bins[2].mean_predicted is None and bins[2].observed_rate is None


def test_measurement_rows_are_flat_metric_names(scores: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scores
    m = Measurement("3", "2024-02-29", "realized", "month", realized_metrics(y, p), calibration_bins(y, p))
    names = [name for name, _ in m.rows()]
    assert names[: len(REALIZED_METRICS)] == list(REALIZED_METRICS)
    assert names[len(REALIZED_METRICS) :][:3] == [
        "calibration_bin_0_mean_predicted",
        "calibration_bin_0_observed_rate",
        "calibration_bin_0_count",
    ]
    assert len(names) == len(set(names)) == len(REALIZED_METRICS) + 30
    assert m.flat()["n"] == 5000 and isinstance(m.flat()["n"], int) and m.n == 5000
    with pytest.raises(ValueError, match="source"):
        Measurement("3", "2024-02-29", "guessed", "month", {})
    with pytest.raises(ValueError, match="population"):
        Measurement("3", "2024-02-29", "realized", "everyone", {})


def test_estimated_metrics_wrap_cbpe(scores: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scores
    calibration = CBPECalibration.fit(p, y)
    month = np.clip(p * 1.1, 0, 1)
    m = estimated_metrics(calibration, month)
    assert tuple(m) == ESTIMATED_METRICS
    raw = estimate(calibration, month)
    for key in ("auc", "f1", "accuracy", "precision", "recall", "auc_sampling_error"):
        assert m[key] == raw[key]
    assert m["expected_churn_rate"] == raw["expected_positive_rate"]
    assert m["predicted_churn_rate"] == pytest.approx(month.mean())
    assert m["n"] == 5000


# ---- one model on one month: populations, ONNX -------------------------------------------------
USERS = 1600


@dataclasses.dataclass(frozen=True)
class Trained:
    model: ScoringModel
    month0: pd.DataFrame
    month1: pd.DataFrame
    validation_users: set[str]
    pipeline: object


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Two generated months; the project's pipeline (20 trees) trained on month 0's 75 % split,
    exported to ONNX and calibrated on the validation split's ONNX probabilities — what training logs."""
    root = tmp_path_factory.mktemp("quality_months")
    generator.generate_months(root, 2, USERS, 5)
    month0 = month_frame(root / "month_000").sort_values("user_id").reset_index(drop=True)
    month1 = month_frame(root / "month_001").sort_values("user_id").reset_index(drop=True)
    settings = Settings(home=root / "home", n_estimators=20)
    split = split_dataset(month0, settings.random_seed)
    pipe = build_pipeline(settings, n_jobs=1).fit(split.X_train, split.y_train)
    onnx_bytes = export_onnx(pipe, split.X_val)
    calibration = CBPECalibration.fit(onnx_probabilities(onnx_bytes, split.X_val), split.y_val.to_numpy())
    model = ScoringModel(
        name="churn",
        version="1",
        run_id="r1",
        trained_as_of="2024-01-31",
        validation_auc=float(roc_auc_score(split.y_val, pipe.predict_proba(split.X_val)[:, 1])),
        onnx=OnnxModel(onnx_bytes),
        calibration=calibration,
        trained_user_ids=frozenset(month0.loc[split.X_train.index, "user_id"]),
    )
    return Trained(model, month0, month1, set(month0.loc[split.X_val.index, "user_id"]), pipe)


def test_onnx_scores_are_the_pipeline_s(trained: Trained) -> None:
    got = trained.model.churn_probability(trained.month1)
    want = trained.pipeline.predict_proba(trained.month1[FEATURES])[:, 1]  # type: ignore[attr-defined]
    assert np.abs(got - want).max() < 1e-5
    assert got.min() >= 0.0 and got.max() <= 1.0
    assert trained.model.predict_proba(trained.month1[FEATURES])[:, 1] == pytest.approx(got)


def test_realized_on_the_month_and_on_the_unseen_users(trained: Trained) -> None:
    month, unseen = measure_realized(trained.model, trained.month1, "2024-02-29")
    assert (month.population, unseen.population) == (POPULATION_MONTH, POPULATION_UNSEEN)
    assert month.n == USERS and unseen.n == len(trained.validation_users) == USERS // 4
    p = trained.model.churn_probability(trained.month1)
    mask = trained.month1["user_id"].isin(trained.validation_users).to_numpy()
    assert month.metrics["auc"] == pytest.approx(roc_auc_score(trained.month1[LABEL], p))
    assert unseen.metrics["auc"] == pytest.approx(roc_auc_score(trained.month1[LABEL][mask], p[mask]))
    assert sum(b.count for b in month.calibration_bins) == USERS
    # on the training month, the unseen users are exactly the validation split: its AUC is the validation AUC
    _, val = measure_realized(trained.model, trained.month0, "2024-01-31")
    assert val.metrics["auc"] == pytest.approx(trained.model.validation_auc, abs=1e-4)


def test_realized_needs_labels(trained: Trained) -> None:
    with pytest.raises(NoLabelsError, match="as_of=2024-02-29 has no labels yet") as exc:
        measure_realized(trained.model, trained.month1.drop(columns=[LABEL]), "2024-02-29")
    assert exc.value.exit_code == 2


def test_estimated_on_the_unseen_users_without_labels(trained: Trained) -> None:
    estimated, note = measure_estimated(trained.model, trained.month1.drop(columns=[LABEL]), "2024-02-29")
    assert note is None and estimated is not None
    assert (estimated.source, estimated.population, estimated.n) == ("estimated", POPULATION_UNSEEN, USERS // 4)
    p = trained.model.churn_probability(trained.month1)
    mask = trained.month1["user_id"].isin(trained.validation_users).to_numpy()
    assert estimated.metrics["auc"] == estimate(trained.model.calibration, p[mask])["auc"]  # type: ignore[arg-type]


def test_estimate_is_null_with_a_reason_for_an_old_model(trained: Trained) -> None:
    old = dataclasses.replace(
        trained.model,
        calibration=None,
        trained_user_ids=None,
        notes={"calibration": "v1 has no cbpe/calibration.json: trained before CBPE was wired in"},
    )
    estimated, note = measure_estimated(old, trained.month1, "2024-02-29")
    assert estimated is None and note is not None and "trained before CBPE" in note
    month_only = measure_realized(old, trained.month1, "2024-02-29")
    assert [m.population for m in month_only] == [POPULATION_MONTH]  # no unseen population without the users


def test_estimate_falls_back_to_every_user_and_says_so(trained: Trained) -> None:
    no_users = dataclasses.replace(trained.model, trained_user_ids=None, notes={"trained_users": "v1 has no list"})
    estimated, note = measure_estimated(no_users, trained.month1, "2024-02-29")
    assert estimated is not None and estimated.population == POPULATION_MONTH and estimated.n == USERS
    assert note == "v1 has no list: estimated on every user of the month"
    everyone = dataclasses.replace(trained.model, trained_user_ids=frozenset(trained.month1["user_id"]))
    none_left, why = measure_estimated(everyone, trained.month1, "2024-02-29")
    assert none_left is None and why is not None and "none left" in why


# ---- model-quality gauges -----------------------------------------------------------------------
def _drift_result(*, labels: bool = True) -> DriftResult:
    drifts = tuple(FeatureDrift(f, "psi", 0.01, 0.1, False) for f in FEATURES)
    return DriftResult(
        as_of_ref="2024-01-31",
        as_of_cur="2024-02-29",
        drift_share=0.0,
        drifted_count=0,
        feature_drifts=drifts,
        target=TargetDrift(0.2654, 0.2415, 0.0239) if labels else None,
        target_value_drift=0.019 if labels else math.nan,
        target_value_drift_method="Jensen-Shannon distance" if labels else None,
        threshold=0.3,
        decision=Decision.NO_ACTION,
        report_html=Path("r.html"),
        report_json=Path("r.json"),
        summary_json=Path("r.summary.json"),
        n_ref=7043,
        n_cur=7043,
        generated_at=datetime(2024, 3, 1, tzinfo=UTC),
        prediction=PredictionDrift("Wasserstein distance (normed)", 0.09, 0.1, False, 0.346, 0.345),
        labels_missing=() if labels else ("2024-02-29",),
    )


def _samples(result: DriftResult, **kwargs: object) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(drift_metrics_registry(result, **kwargs)).decode()  # type: ignore[arg-type]
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


QUALITY = ModelQuality(
    model_version="1",
    as_of="2024-02-29",
    validation_auc=0.8125,
    realized={"auc": 0.484, "f1": 0.258, "n": 7043, "undefined": None},
    estimated={"auc": 0.817, "auc_sampling_error": 0.0096, "n": 1761},
    min_auc=0.70,
    max_auc_drop=0.05,
)


def test_quality_gauges_with_bounded_labels() -> None:
    samples = _samples(_drift_result(), decision=Decision.RETRAINING_TRIGGERED, quality=QUALITY)
    names = {name for name, _ in samples}
    assert names == set(METRIC_NAMES) | set(QUALITY_METRIC_NAMES) | set(PREDICTION_METRIC_NAMES)

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    month = {"model_version": "1", "as_of": "2024-02-29"}
    assert value("streamflow_model_performance", metric="auc", source="realized", **month) == 0.484
    assert value("streamflow_model_performance", metric="n", source="estimated", **month) == 1761
    assert value("streamflow_model_auc_drop", source="realized", **month) == pytest.approx(0.3285)
    assert value("streamflow_model_auc_drop", source="estimated", **month) == pytest.approx(-0.0045)
    assert value("streamflow_model_validation_auc", model_version="1") == 0.8125
    assert value("streamflow_model_min_auc") == 0.70 and value("streamflow_model_max_auc_drop") == 0.05
    pair = {"model_version": "1", "as_of_ref": "2024-01-31", "as_of_cur": "2024-02-29"}
    assert value("streamflow_prediction_drift_score", **pair) == 0.09
    assert value("streamflow_prediction_drift_detected", **pair) == 0.0
    assert value("streamflow_prediction_mean", model_version="1", as_of="2024-01-31") == 0.346
    # the monitor's decision, not the drift rule's (NO_ACTION here)
    assert value("streamflow_drift_decision", as_of_ref="2024-01-31", as_of_cur="2024-02-29") == 1.0
    assert not any(dict(labels).get("metric") == "undefined" for _, labels in samples)  # None is not pushed
    allowed = {"metric", "source", "model_version", "as_of", "as_of_ref", "as_of_cur", "feature"}
    assert all(set(dict(labels)) <= allowed for _, labels in samples)


def test_without_labels_there_is_no_target_gauge() -> None:
    samples = _samples(_drift_result(labels=False), quality=dataclasses.replace(QUALITY, realized=None))
    names = {name for name, _ in samples}
    assert "streamflow_target_drift" not in names and "streamflow_target_value_drift" not in names
    assert not any(dict(labels).get("source") == "realized" for _, labels in samples)
    assert ("streamflow_drift_decision", frozenset({("as_of_ref", "2024-01-31"), ("as_of_cur", "2024-02-29")})) in (
        samples
    )
    # the drift push alone (no model) is what it always was
    assert {name for name, _ in _samples(_drift_result())} == set(METRIC_NAMES)
