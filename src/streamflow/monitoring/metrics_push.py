"""Push the drift numbers of one report to the Prometheus Pushgateway (see docs/CONTRACTS.md).

Job ``streamflow_monitor``, grouping key = job only: every push replaces the previous
comparison's series (PUT), so the gateway always shows the latest run.
"""

from __future__ import annotations

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


def drift_metrics_registry(result: DriftResult) -> CollectorRegistry:
    """A fresh registry holding the CONTRACTS drift gauges for ``result``."""
    registry = CollectorRegistry()
    pair = {"as_of_ref": result.as_of_ref, "as_of_cur": result.as_of_cur}

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(name, doc, PAIR_LABELS, registry=registry).labels(**pair).set(value)

    gauge(DRIFT_SHARE, "Share of the 14 model features with drift detected (Evidently).", result.drift_share)
    gauge(DRIFTED_FEATURES, "Number of model features with drift detected (Evidently).", result.drifted_count)
    gauge(TARGET_DRIFT, "Absolute difference of churn rates, current vs reference.", result.target_drift)
    gauge(TARGET_VALUE_DRIFT, "Evidently ValueDrift score of churn_label.", result.target_value_drift)
    gauge(
        DRIFT_DECISION,
        "1 = RETRAINING_TRIGGERED, 0 = NO_ACTION.",
        1.0 if result.decision is Decision.RETRAINING_TRIGGERED else 0.0,
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
    return registry


def push_drift_metrics(result: DriftResult, gateway_url: str, *, timeout: float = 10.0) -> None:
    """Push (PUT, grouping key job only) the drift gauges of ``result`` to ``gateway_url``
    (``http://host:port`` or ``host:port``). Raises on HTTP/connection errors."""
    push_to_gateway(gateway_url, job=JOB, registry=drift_metrics_registry(result), timeout=timeout)
