"""The model being served: the ONNX bytes of the latest *deployment record* of
``(model_name, alias)`` in PostgreSQL (``streamflow.model.deployments``), verified and hot-swapped when
a new one is published (background poll, or ``POST /admin/reload``).

The API never talks to MLflow (nor imports it): promotion (``training.registry.promote``,
``streamflow promote VERSION``) verifies a version's artefacts against the sha256 recorded at
training and publishes the record; the holder re-hashes the bytes it reads and refuses them when
they differ from the record's ``onnx_sha256``.

Swapping is a single attribute assignment; a request reads ``holder.current`` once and
keeps using that object, so in-flight requests finish on the model they started with.
A failed load keeps the previous model serving, increments
``api_model_load_failures_total{reason}`` (``integrity``: sha256 mismatch; ``invalid_model``: the
bytes do not open, lack the input layout, or the smoke test is not a probability; ``source``: the
deployment table could not be read) and logs one ``event=model_load_failed reason=…`` line.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from streamflow.core.settings import Settings
from streamflow.model.artifacts import ArtifactIntegrityError, short, verify_sha256
from streamflow.model.deployments import Deployment, DeploymentHead, DeploymentSource
from streamflow.model.onnx_model import OnnxModel, feed_from_mirror, open_servable
from streamflow.serving.metrics import ApiMetrics
from streamflow.serving.poller import PeriodicTask

log = logging.getLogger(__name__)

CheckResult = Literal["loaded", "unchanged", "missing", "failed"]
FailureReason = Literal["integrity", "invalid_model", "source"]  # = metrics.MODEL_LOAD_FAILURE_REASONS


@dataclass(frozen=True)
class LoadedModel:
    name: str
    alias: str
    version: str
    run_id: str
    as_of: str
    metrics: dict[str, float]
    onnx: OnnxModel = field(repr=False)
    loaded_at: float
    load_seconds: float
    sha256: str | None = None  # of the ONNX bytes (checked against the deployment record)
    deployment_id: int | None = None
    promoted_at: str | None = None
    # Column reorder from the mirror's layout to the model's, when they differ.
    string_cols: np.ndarray | None = field(default=None, repr=False)
    numeric_cols: np.ndarray | None = field(default=None, repr=False)
    version_json: bytes = field(init=False, repr=False)  # pre-encoded for the hot path

    def __post_init__(self) -> None:
        object.__setattr__(self, "version_json", json.dumps(self.version).encode())

    def feed(self, strings: np.ndarray, numeric: np.ndarray) -> dict[str, np.ndarray]:
        return feed_from_mirror(strings, numeric, self.string_cols, self.numeric_cols)

    def predict(self, strings: np.ndarray, numeric: np.ndarray) -> np.ndarray:
        return self.onnx.predict_proba_feed(self.feed(strings, numeric))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "alias": self.alias,
            "version": self.version,
            "run_id": self.run_id,
            "as_of": self.as_of,
            "metrics": self.metrics,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            "load_seconds": round(self.load_seconds, 3),
            "format": "onnx",
            "sha256": self.sha256,
            "deployment_id": self.deployment_id,
            "promoted_at": self.promoted_at,
        }


def build_loaded_model(
    onnx_bytes: bytes,
    *,
    name: str,
    alias: str,
    version: str,
    run_id: str,
    as_of: str,
    metrics: dict[str, float],
    started: float | None = None,
    sha256: str | None = None,
    deployment_id: int | None = None,
    promoted_at: str | None = None,
) -> LoadedModel:
    """The model ready to be swapped in, once :func:`streamflow.model.onnx_model.open_servable` has
    opened the bytes, checked their inputs against the feature layout and smoke-tested them."""
    t0 = started if started is not None else time.perf_counter()
    servable = open_servable(onnx_bytes, threads=1)
    return LoadedModel(
        name=name,
        alias=alias,
        version=version,
        run_id=run_id,
        as_of=as_of,
        metrics=metrics,
        onnx=servable.onnx,
        loaded_at=time.time(),
        load_seconds=time.perf_counter() - t0,
        sha256=sha256,
        deployment_id=deployment_id,
        promoted_at=promoted_at,
        string_cols=servable.string_cols,
        numeric_cols=servable.numeric_cols,
    )


class ModelLoadError(Exception):
    """Why a deployment could not be swapped in (``reason`` is the metric label)."""

    def __init__(self, reason: FailureReason, message: str) -> None:
        super().__init__(message)
        self.reason: FailureReason = reason


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class ModelHolder:
    def __init__(self, settings: Settings, metrics: ApiMetrics, source: DeploymentSource | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.source = source or DeploymentSource(settings)
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()  # one load at a time (poll thread vs /admin/reload)
        self._poll = PeriodicTask("model-poll", settings.model_poll_seconds, self.check, join_timeout=10)
        # The latest deployment that failed to load: the poll does not fetch it again (records are
        # immutable; a new promotion is a new id). ``check(force=True)`` does.
        self._refused: tuple[int, str] | None = None

    def _load(self, head: DeploymentHead) -> LoadedModel:
        t0 = time.perf_counter()
        try:
            record, data = self.source.fetch(head.id)
        except Exception as exc:
            raise ModelLoadError("source", f"cannot read deployment #{head.id}: {_one_line(exc)}") from exc
        what = f"deployment #{record.id} ({record.model_name} v{record.version}, run {record.run_id})"
        try:
            sha = verify_sha256(data, record.onnx_sha256, what)
        except ArtifactIntegrityError as exc:
            raise ModelLoadError("integrity", str(exc)) from exc
        return self._open(record, data, sha, t0)

    def _open(self, record: Deployment, data: bytes, sha: str, t0: float) -> LoadedModel:
        try:
            return build_loaded_model(
                data,
                name=record.model_name,
                alias=record.alias,
                version=record.version,
                run_id=record.run_id,
                as_of=record.as_of.isoformat(),
                metrics={k: v for k, v in record.metrics.items() if k.startswith("val_")},
                started=t0,
                sha256=sha,
                deployment_id=record.id,
                promoted_at=record.promoted_at.isoformat(),
            )
        except Exception as exc:
            raise ModelLoadError(
                "invalid_model", f"deployment #{record.id} ({record.model_name} v{record.version}): {_one_line(exc)}"
            ) from exc

    def install(self, model: LoadedModel) -> None:
        """Swap the served model (one reference assignment) and publish it."""
        previous = self.current
        self.current = model
        self.last_error = None
        self._refused = None
        self.metrics.model_loads.inc()
        self.metrics.set_model_info(model.name, model.version, model.as_of, model.run_id)
        log.info(
            "event=model_loaded model=%s alias=%s version=%s run_id=%s as_of=%s deployment_id=%s sha256=%s "
            "previous_version=%s load_seconds=%.3f",
            model.name,
            model.alias,
            model.version,
            model.run_id,
            model.as_of,
            model.deployment_id,
            short(model.sha256),
            previous.version if previous else None,
            model.load_seconds,
        )

    def _failed(self, reason: FailureReason, message: str, deployment_id: int | None = None) -> CheckResult:
        self.metrics.model_load_failures.labels(reason=reason).inc()
        self.last_error = f"{reason}: {message}"
        log.warning(
            "event=model_load_failed reason=%s model=%s alias=%s deployment_id=%s serving_version=%s error=%r",
            reason,
            self.settings.model_name,
            self.settings.model_alias,
            deployment_id,
            self.current.version if self.current else None,
            message,
        )
        return "failed"

    def check(self, force: bool = False) -> CheckResult:
        """Load the latest deployment if it differs from the served model (or ``force``).
        Never raises."""
        with self._lock:
            try:
                head = self.source.head()
            except Exception as exc:
                return self._failed("source", f"deployment table unreadable: {_one_line(exc)}")
            if head is None:
                msg = (
                    f"no deployment of {self.settings.model_name!r}@{self.settings.model_alias!r} published yet "
                    "(train a model, or `streamflow promote VERSION`)"
                )
                if self.last_error != msg:
                    log.warning("event=model_missing reason=%r", msg)
                self.last_error = msg
                return "missing"
            cur = self.current
            if not force and cur is not None and (cur.version, cur.sha256) == (head.version, head.onnx_sha256):
                self.last_error = None  # a source error is over, or a refused deployment was withdrawn
                self._refused = None
                return "unchanged"
            if not force and self._refused == (head.id, head.onnx_sha256):
                return "failed"  # refused already; last_error still says why
            try:
                model = self._load(head)
            except ModelLoadError as exc:
                self._refused = (head.id, head.onnx_sha256) if exc.reason != "source" else None
                return self._failed(exc.reason, str(exc), head.id)
            except Exception as exc:  # never let the poll thread die
                return self._failed("invalid_model", _one_line(exc), head.id)
            self.install(model)
            return "loaded"

    # background poll -------------------------------------------------------------------
    def start(self) -> None:
        self._poll.start()

    def stop(self) -> None:
        self._poll.stop()
        self.source.close()
