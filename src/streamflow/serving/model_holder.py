"""The model being served: the ONNX artefact of the run behind ``models:/{name}@{alias}``,
hot-swapped when the alias moves (background poll, or ``POST /admin/reload``).

Swapping is a single attribute assignment; a request reads ``holder.current`` once and
keeps using that object, so in-flight requests finish on the model they started with.
A failed load keeps the previous model serving and increments
``api_model_load_failures_total``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from streamflow.onnx_layout import NUMERIC_INPUT, STRING_INPUT
from streamflow.registry_client import registry_client, version_by_alias
from streamflow.schema import CATEGORICAL_FEATURES, FEATURES
from streamflow.serving.metrics import ApiMetrics
from streamflow.serving.onnx_model import OnnxModel
from streamflow.serving.poller import PeriodicTask
from streamflow.settings import Settings

log = logging.getLogger(__name__)

ONNX_ARTIFACT = "onnx/model.onnx"
# The layout of the feature mirror: the model's inputs are built from these columns.
MIRROR_STRINGS: list[str] = list(CATEGORICAL_FEATURES)
MIRROR_NUMERIC: list[str] = [f for f in FEATURES if f not in CATEGORICAL_FEATURES]
CheckResult = Literal["loaded", "unchanged", "missing", "failed"]


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
    # Column reorder from the mirror's layout to the model's, when they differ.
    string_cols: np.ndarray | None = field(default=None, repr=False)
    numeric_cols: np.ndarray | None = field(default=None, repr=False)
    version_json: bytes = field(init=False, repr=False)  # pre-encoded for the hot path

    def __post_init__(self) -> None:
        object.__setattr__(self, "version_json", json.dumps(self.version).encode())

    def feed(self, strings: np.ndarray, numeric: np.ndarray) -> dict[str, np.ndarray]:
        if self.string_cols is not None:
            strings = strings[:, self.string_cols]
        if self.numeric_cols is not None:
            numeric = numeric[:, self.numeric_cols]
        return {STRING_INPUT: strings, NUMERIC_INPUT: numeric}

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
        }


def _reorder(model_cols: list[str], mirror_cols: list[str], what: str) -> np.ndarray | None:
    if model_cols == mirror_cols:
        return None
    if sorted(model_cols) != sorted(mirror_cols):
        raise ValueError(f"model {what} inputs {model_cols} do not match the served features {mirror_cols}")
    return np.array([mirror_cols.index(c) for c in model_cols], dtype=np.intp)


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
) -> LoadedModel:
    """Open the ONNX bytes, check their inputs against the feature layout and smoke-test
    one all-missing row (imputers must handle it) before the model may be swapped in."""
    t0 = started if started is not None else time.perf_counter()
    onnx = OnnxModel(onnx_bytes, threads=1)
    lm = LoadedModel(
        name=name,
        alias=alias,
        version=version,
        run_id=run_id,
        as_of=as_of,
        metrics=metrics,
        onnx=onnx,
        loaded_at=time.time(),
        load_seconds=0.0,
        string_cols=_reorder(onnx.layout.strings, MIRROR_STRINGS, "string"),
        numeric_cols=_reorder(onnx.layout.numeric, MIRROR_NUMERIC, "numeric"),
    )
    probe = lm.predict(
        np.full((1, len(MIRROR_STRINGS)), "", dtype=object),
        np.full((1, len(MIRROR_NUMERIC)), np.nan, dtype=np.float32),
    )
    if probe.shape != (1,) or not np.isfinite(probe).all():
        raise ValueError(f"model smoke test returned {probe!r}")
    object.__setattr__(lm, "load_seconds", time.perf_counter() - t0)
    return lm


class ModelHolder:
    def __init__(self, settings: Settings, metrics: ApiMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self._lock = threading.Lock()  # one load at a time (poll thread vs /admin/reload)
        self._poll = PeriodicTask("model-poll", settings.model_poll_seconds, self.check, join_timeout=10)
        self._client: Any = None

    # MLflow ----------------------------------------------------------------------------
    def _mlflow(self) -> Any:
        if self._client is None:
            self._client = registry_client(self.settings)
        return self._client

    def _resolve(self) -> Any | None:
        """The model version behind the alias, or None when the alias does not exist."""
        return version_by_alias(self._mlflow(), self.settings.model_name, self.settings.model_alias)

    def _load(self, mv: Any) -> LoadedModel:
        t0 = time.perf_counter()
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        client = self._mlflow()
        run = client.get_run(mv.run_id)
        with tempfile.TemporaryDirectory(prefix="streamflow-onnx-") as tmp:
            local = client.download_artifacts(mv.run_id, ONNX_ARTIFACT, tmp)
            data = Path(local).read_bytes()
        return build_loaded_model(
            data,
            name=self.settings.model_name,
            alias=self.settings.model_alias,
            version=str(mv.version),
            run_id=str(mv.run_id),
            as_of=str(run.data.tags.get("as_of", "unknown")),
            metrics={k: float(v) for k, v in run.data.metrics.items() if k.startswith("val_")},
            started=t0,
        )

    def install(self, model: LoadedModel) -> None:
        """Swap the served model (one reference assignment) and publish it."""
        previous = self.current
        self.current = model
        self.last_error = None
        self.metrics.model_loads.inc()
        self.metrics.set_model_info(model.name, model.version, model.as_of, model.run_id)
        log.info(
            "event=model_loaded model=%s alias=%s version=%s run_id=%s as_of=%s previous_version=%s load_seconds=%.3f",
            model.name,
            model.alias,
            model.version,
            model.run_id,
            model.as_of,
            previous.version if previous else None,
            model.load_seconds,
        )

    def check(self, force: bool = False) -> CheckResult:
        """Load the alias's version if it differs from the served one (or ``force``).
        Never raises."""
        with self._lock:
            try:
                mv = self._resolve()
                if mv is None:
                    msg = f"registered model {self.settings.model_name!r} has no alias {self.settings.model_alias!r}"
                    if self.last_error != msg:
                        log.warning("event=model_missing reason=%r", msg)
                    self.last_error = msg
                    return "missing"
                cur = self.current
                if not force and cur is not None and cur.version == str(mv.version):
                    return "unchanged"
                model = self._load(mv)
            except Exception as exc:
                self.metrics.model_load_failures.inc()
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "event=model_load_failed model=%s alias=%s serving_version=%s error=%r",
                    self.settings.model_name,
                    self.settings.model_alias,
                    self.current.version if self.current else None,
                    self.last_error,
                )
                return "failed"
            self.install(model)
            return "loaded"

    # background poll -------------------------------------------------------------------
    def start(self) -> None:
        self._poll.start()

    def stop(self) -> None:
        self._poll.stop()
