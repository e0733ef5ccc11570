"""Push the numbers of one monitor run to the Prometheus Pushgateway (see docs/CONTRACTS.md):
the drift gauges of the report and, when the monitor measured the production model, the
model-quality gauges (realized and estimated metrics, the AUC drop below the validation AUC, the
policy thresholds, prediction drift).

Job ``streamflow_monitor``, grouping key = job only: every push replaces the previous
comparison's series (PUT), so the gateway always shows the latest run. Labels are bounded:
``as_of_ref``/``as_of_cur``/``as_of`` (months), ``feature`` (14), ``metric`` (a fixed set),
``source`` (realized | estimated), ``model_version`` (registered versions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from streamflow.monitoring.decision import Decision
from streamflow.monitoring.drift import DriftResult

JOB = "streamflow_monitor"
PAIR_LABELS = ("as_of_ref", "as_of_cur")

DRIFT_SHARE = "streamflow_drift_share"
DRIFTED_FEATURES = "streamflow_drifted_features"
FEATURE_DRIFT_SCORE = "streamflow_feature_drift_score"
TARGET_DRIFT = "streamflow_target_drift"
TARGET_VALUE_DRIFT = "streamflow_target_value_drift"
DRIFT_DECISION = "streamflow_drift_decision"
DRIFT_THRESHOLD = "streamflow_drift_threshold"
LAST_RUN = "streamflow_drift_last_run_timestamp_seconds"

METRIC_NAMES: tuple[str, ...] = (
    DRIFT_SHARE,
    DRIFTED_FEATURES,
    FEATURE_DRIFT_SCORE,
    TARGET_DRIFT,
    TARGET_VALUE_DRIFT,
    DRIFT_DECISION,
    DRIFT_THRESHOLD,
    LAST_RUN,
)

MODEL_PERFORMANCE = "streamflow_model_performance"
MODEL_VALIDATION_AUC = "streamflow_model_validation_auc"
MODEL_AUC_DROP = "streamflow_model_auc_drop"
MODEL_MIN_AUC = "streamflow_model_min_auc"
MODEL_MAX_AUC_DROP = "streamflow_model_max_auc_drop"
PREDICTION_DRIFT_SCORE = "streamflow_prediction_drift_score"
PREDICTION_DRIFT_DETECTED = "streamflow_prediction_drift_detected"
PREDICTION_MEAN = "streamflow_prediction_mean"

QUALITY_METRIC_NAMES: tuple[str, ...] = (
    MODEL_PERFORMANCE,
    MODEL_VALIDATION_AUC,
    MODEL_AUC_DROP,
    MODEL_MIN_AUC,
    MODEL_MAX_AUC_DROP,
)
PREDICTION_METRIC_NAMES: tuple[str, ...] = (PREDICTION_DRIFT_SCORE, PREDICTION_DRIFT_DETECTED, PREDICTION_MEAN)


@dataclass(frozen=True)
class ModelQuality:
    """The production model's numbers on the current month, as the monitor measured them.

    ``realized`` (population ``month``) / ``estimated`` (CBPE) are flat metric → value maps (None:
    not measured); a None value is not pushed."""

    model_version: str
    as_of: str
    validation_auc: float | None
    realized: Mapping[str, float | int | None] | None
    estimated: Mapping[str, float | int | None] | None
    min_auc: float
    max_auc_drop: float


def _finite(value: float | int | None) -> bool:
    return value is not None and math.isfinite(float(value))


def _add_quality(registry: CollectorRegistry, quality: ModelQuality) -> None:
    performance = Gauge(
        MODEL_PERFORMANCE,
        "Production model's performance on a month: realized (labels) or estimated (CBPE).",
        ("metric", "source", "model_version", "as_of"),
        registry=registry,
    )
    drop = Gauge(
        MODEL_AUC_DROP,
        "Validation AUC minus the realized/estimated AUC on a month (positive = worse).",
        ("source", "model_version", "as_of"),
        registry=registry,
    )
    for source, values in (("realized", quality.realized), ("estimated", quality.estimated)):
        for metric, value in (values or {}).items():
            if _finite(value):
                performance.labels(
                    metric=metric, source=source, model_version=quality.model_version, as_of=quality.as_of
                ).set(float(value))  # type: ignore[arg-type]
        auc = (values or {}).get("auc")
        if _finite(auc) and _finite(quality.validation_auc):
            drop.labels(source=source, model_version=quality.model_version, as_of=quality.as_of).set(
                float(quality.validation_auc) - float(auc)  # type: ignore[arg-type]
            )
    if _finite(quality.validation_auc):
        Gauge(
            MODEL_VALIDATION_AUC,
            "Validation AUC of a model version (its training run).",
            ("model_version",),
            registry=registry,
        ).labels(model_version=quality.model_version).set(float(quality.validation_auc))  # type: ignore[arg-type]
    Gauge(MODEL_MIN_AUC, "Realized AUC below this triggers retraining (policy).", registry=registry).set(
        quality.min_auc
    )
    Gauge(
        MODEL_MAX_AUC_DROP, "AUC this far below the validation AUC triggers retraining (policy).", registry=registry
    ).set(quality.max_auc_drop)


def _add_prediction_drift(registry: CollectorRegistry, result: DriftResult, model_version: str) -> None:
    pred = result.prediction
    if pred is None:
        return
    labels = {"model_version": model_version, "as_of_ref": result.as_of_ref, "as_of_cur": result.as_of_cur}
    names = tuple(labels)
    Gauge(
        PREDICTION_DRIFT_SCORE,
        f"Evidently ValueDrift score of the predicted probabilities ({pred.method}).",
        names,
        registry=registry,
    ).labels(**labels).set(pred.score)
    Gauge(
        PREDICTION_DRIFT_DETECTED,
        "1 = the predicted probabilities drifted (Evidently's test).",
        names,
        registry=registry,
    ).labels(**labels).set(1.0 if pred.drifted else 0.0)
    mean = Gauge(
        PREDICTION_MEAN,
        "Mean predicted churn probability of the production model on a month.",
        ("model_version", "as_of"),
        registry=registry,
    )
    mean.labels(model_version=model_version, as_of=result.as_of_ref).set(pred.ref_mean)
    mean.labels(model_version=model_version, as_of=result.as_of_cur).set(pred.cur_mean)


def drift_metrics_registry(
    result: DriftResult, *, decision: Decision | None = None, quality: ModelQuality | None = None
) -> CollectorRegistry:
    """A fresh registry holding the CONTRACTS drift gauges for ``result`` — ``decision`` (default:
    the drift rule's) is the monitor's decision — plus, with ``quality``, the model-quality and
    prediction-drift gauges."""
    registry = CollectorRegistry()
    pair = {"as_of_ref": result.as_of_ref, "as_of_cur": result.as_of_cur}

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(name, doc, PAIR_LABELS, registry=registry).labels(**pair).set(value)

    final = result.decision if decision is None else decision
    gauge(DRIFT_SHARE, "Share of the 14 model features with drift detected (Evidently).", result.drift_share)
    gauge(DRIFTED_FEATURES, "Number of model features with drift detected (Evidently).", result.drifted_count)
    if result.target is not None:  # a month without labels has no target drift
        gauge(TARGET_DRIFT, "Absolute difference of churn rates, current vs reference.", result.target_drift)
        gauge(TARGET_VALUE_DRIFT, "Evidently ValueDrift score of churn_label.", result.target_value_drift)
    gauge(
        DRIFT_DECISION,
        "The monitor's decision: 1 = RETRAINING_TRIGGERED, 0 = NO_ACTION.",
        1.0 if final is Decision.RETRAINING_TRIGGERED else 0.0,
    )
    gauge(DRIFT_THRESHOLD, "drift_share threshold that triggers retraining.", result.threshold)
    gauge(LAST_RUN, "Unix time the drift report was generated.", result.generated_at.timestamp())

    per_feature = Gauge(
        FEATURE_DRIFT_SCORE,
        "Evidently drift score per model feature (method-specific).",
        ("feature", *PAIR_LABELS),
        registry=registry,
    )
    for fd in result.feature_drifts:
        per_feature.labels(feature=fd.feature, **pair).set(fd.score)
    if quality is not None:
        _add_quality(registry, quality)
        _add_prediction_drift(registry, result, quality.model_version)
    return registry


def push_drift_metrics(
    result: DriftResult,
    gateway_url: str,
    *,
    timeout: float = 10.0,
    decision: Decision | None = None,
    quality: ModelQuality | None = None,
) -> list[str]:
    """Push (PUT, grouping key job only) the gauges of :func:`drift_metrics_registry` to
    ``gateway_url`` (``http://host:port`` or ``host:port``); returns the names of the metric
    families pushed. Raises on HTTP/connection errors."""
    registry = drift_metrics_registry(result, decision=decision, quality=quality)
    push_to_gateway(gateway_url, job=JOB, registry=registry, timeout=timeout)
    return [family.name for family in registry.collect()]
