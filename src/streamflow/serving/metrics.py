"""Prometheus metrics of the prediction API (names, types, labels and buckets are the
contract in docs/CONTRACTS.md), correct in single- and multi-process mode.

Multi-process mode (``streamflow serve --workers N``): the parent sets
``PROMETHEUS_MULTIPROC_DIR`` to a fresh directory *before* the workers import
prometheus_client; every worker writes its values to mmap files there, ``/metrics``
aggregates them with ``MultiProcessCollector``, and a worker that exits is marked dead
(its live gauges disappear, its counters keep counting in the totals).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from streamflow.core.processes import pid_alive

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
PROBABILITY_BUCKETS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 21))
KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
OTHER = "other"
# Families this process exposes (multi-process mode filters the shared directory by them).
METRIC_PREFIXES: tuple[str, ...] = ("api_", "streamflow_prediction_log_")
MODEL_LOAD_FAILURE_REASONS = ("integrity", "invalid_model", "source")  # serving.model_holder.FailureReason


def multiprocess_enabled() -> bool:
    """True when prometheus_client was imported with PROMETHEUS_MULTIPROC_DIR set."""
    return values.ValueClass is not values.MutexValue and bool(os.environ.get(MULTIPROC_ENV))


def prepare_multiprocess_dir(path: Path) -> Path:
    """Empty (or create) the directory and export it; call in the parent before the
    workers start (they read the variable when importing prometheus_client)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def reap_dead_workers() -> list[int]:
    """Mark every process whose live-gauge files remain but which no longer runs as dead
    (a worker killed without a clean shutdown). Returns the pids cleaned up."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory or not Path(directory).is_dir():
        return []
    pids: set[int] = set()
    for f in Path(directory).glob("gauge_live*_*.db"):
        try:
            pids.add(int(f.stem.rsplit("_", 1)[1]))
        except ValueError:
            continue
    dead = [pid for pid in pids if not pid_alive(pid)]
    for pid in dead:
        multiprocess.mark_process_dead(pid, directory)
    if dead:
        log.info("event=metrics_reaped_dead_workers pids=%s", ",".join(map(str, sorted(dead))))
    return dead


def mark_this_process_dead() -> None:
    directory = os.environ.get(MULTIPROC_ENV)
    if directory and multiprocess_enabled():
        multiprocess.mark_process_dead(os.getpid(), directory)


class _ApiMetricsOnly(Collector):
    """The shared multiprocess directory also receives the metrics that libraries define
    at import time (Feast does); expose only ours."""

    def __init__(self, inner: Collector) -> None:
        self.inner = inner

    def collect(self) -> Iterable[Metric]:
        return (m for m in self.inner.collect() if m.name.startswith(METRIC_PREFIXES))


class ApiMetrics:
    """All API metrics. Single-process mode: a private registry (several apps may live in
    one test process). Multi-process mode: values live in the shared mmap directory."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_enabled()
        reg: CollectorRegistry | None = None if self.multiprocess else CollectorRegistry(auto_describe=True)
        self.registry = reg
        if reg is not None:
            ProcessCollector(registry=reg)
        labels = ("endpoint", "method", "status")
        self.requests = Counter(
            "api_requests_total", "HTTP requests by route template, method and status.", labels, registry=reg
        )
        self.latency = Histogram(
            "api_request_latency_seconds",
            "HTTP request latency (seconds) by route template, method and status.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.in_flight = Gauge(
            "api_requests_in_flight", "Requests being served.", registry=reg, multiprocess_mode="livesum"
        )
        self.predictions = Counter(
            "api_predictions_total", "Predictions served, by predicted class.", ("prediction",), registry=reg
        )
        self.probability = Histogram(
            "api_churn_probability", "Predicted churn probability.", buckets=PROBABILITY_BUCKETS, registry=reg
        )
        self.lookup_misses = Counter(
            "api_feature_lookup_misses_total", "user_ids not found in the online store.", registry=reg
        )
        self.lookup_seconds = Histogram(
            "api_feature_lookup_seconds", "Online feature lookup time.", buckets=LATENCY_BUCKETS, registry=reg
        )
        self.inference_seconds = Histogram(
            "api_model_inference_seconds", "Model inference time.", buckets=LATENCY_BUCKETS, registry=reg
        )
        self.model_info = Gauge(
            "api_model_info",
            "1 for the model version being served (0 for versions served before).",
            ("model_name", "model_version", "as_of", "run_id"),
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.model_loads = Counter("api_model_loads_total", "Successful model loads.", registry=reg)
        self.model_load_failures = Counter(
            "api_model_load_failures_total",
            "Failed model loads, by reason (integrity: sha256 mismatch; invalid_model; source: deployment unreadable).",
            ("reason",),
            registry=reg,
        )
        for reason in MODEL_LOAD_FAILURE_REASONS:  # every series exists (at 0) from the start
            self.model_load_failures.labels(reason=reason)
        self.shed = Counter(
            "api_requests_shed",
            "Requests answered 503 by a concurrency limit (limit: client = per client address, server = per worker).",
            ("limit",),
            registry=reg,
        )
        # The prediction log (serving/prediction_log.py).
        self.log_written = Counter(
            "streamflow_prediction_log_written", "Predictions written to the predictions table.", registry=reg
        )
        self.log_dropped = Counter(
            "streamflow_prediction_log_dropped",
            "Predictions not recorded (reason: buffer_full, write_failed, shutdown).",
            ("reason",),
            registry=reg,
        )
        self.log_flush_seconds = Histogram(
            "streamflow_prediction_log_flush_seconds",
            "Duration of one write of buffered predictions (COPY), by outcome (ok, error).",
            ("outcome",),
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.log_buffered = Gauge(
            "streamflow_prediction_log_buffered_rows",
            "Predictions waiting to be written (sampled by the writer).",
            registry=reg,
            multiprocess_mode="livesum",
        )
        # Online features (serving/features.py): reloads of the mirror and staleness.
        self.feature_reloads = Counter(
            "api_feature_reloads_total", "Successful reloads of the feature mirror.", registry=reg
        )
        self.feature_reload_failures = Counter(
            "api_feature_reload_failures_total",
            "Failed reloads of the feature mirror (the previous one keeps serving).",
            registry=reg,
        )  # fmt: skip
        self.feature_last_reload = Gauge(
            "api_feature_last_reload_timestamp_seconds", "Unix time of the last successful mirror reload.",
            registry=reg, multiprocess_mode="livemax",
        )  # fmt: skip
        self.feature_reload_seconds = Gauge(
            "api_feature_reload_duration_seconds", "Duration of the last successful mirror reload.",
            registry=reg, multiprocess_mode="livemax",
        )  # fmt: skip
        self.features_as_of = Gauge(
            "api_features_as_of_timestamp_seconds", "as_of (midnight UTC, Unix time) of the online features served.",
            registry=reg, multiprocess_mode="livemin",
        )  # fmt: skip
        self.feature_users = Gauge(
            "api_feature_users", "Users held by the feature mirror (0 in direct mode).", registry=reg,
            multiprocess_mode="livemin",
        )  # fmt: skip
        self.features_stale = Gauge(
            "api_features_stale", "1 when the features served are older than the data path's newest (see /ready).",
            registry=reg, multiprocess_mode="livemax",
        )  # fmt: skip

        self._pred = {0: self.predictions.labels(prediction="0"), 1: self.predictions.labels(prediction="1")}
        self._shed = {limit: self.shed.labels(limit=limit) for limit in ("client", "server")}
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._info_labels: tuple[str, str, str, str] | None = None

    # hot path ------------------------------------------------------------------------
    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        pair = self._children.get(key)
        if pair is None:
            m = method if method in KNOWN_METHODS else OTHER
            label_values = (endpoint, m, str(status))
            pair = (self.requests.labels(*label_values), self.latency.labels(*label_values))
            self._children[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def observe_prediction(self, prediction: int, probability: float) -> None:
        self._pred[prediction].inc()
        self.probability.observe(probability)

    def observe_shed(self, limit: str) -> None:
        self._shed[limit].inc()

    # model info ----------------------------------------------------------------------
    def set_model_info(self, name: str, version: str, as_of: str, run_id: str) -> None:
        new = (name, version, as_of, run_id)
        old = self._info_labels
        if old is not None and old != new:
            if self.multiprocess:  # remove() cannot reach other processes' files
                self.model_info.labels(*old).set(0)
            else:
                self.model_info.remove(*old)
        self.model_info.labels(*new).set(1)
        self._info_labels = new

    # exposition ----------------------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        if self.multiprocess:
            reg = CollectorRegistry()
            reg.register(_ApiMetricsOnly(multiprocess.MultiProcessCollector(None)))
            return generate_latest(reg), CONTENT_TYPE_LATEST
        assert self.registry is not None
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
