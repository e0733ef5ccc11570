"""A registered model version as the monitor scores it: its ONNX artefact (never the pickled
scikit-learn model), its validation AUC, its CBPE calibration and the users it was trained on —
and, at training time, the writing of the last two.

MLflow artefacts of a training run that this module reads (``docs/CONTRACTS.md``):

* ``onnx/model.onnx`` — the compiled pipeline (written by training);
* ``cbpe/calibration.json`` — :class:`~streamflow.monitoring.cbpe.CBPECalibration` fitted on the
  validation split's probabilities **of the ONNX model** (what is served and what the monitor
  scores with; they agree with the scikit-learn pipeline within 1e-5);
* ``cbpe/trained_user_ids.txt.gz`` — the user ids of the training rows, one per line. A random
  forest memorises its training rows: its next-month scores for those users are over-confident
  and CBPE over-estimates AUC on them (+0.02 … +0.04 on generated months without drift). The
  estimate is therefore made on the month's *unseen* users, the population the validation AUC
  and the calibration describe.

A model trained before these artefacts existed still loads: ``calibration`` / ``trained_user_ids``
are None and ``notes`` says why (the estimate is then null, never a crash).

This is the one module that imports the ONNX runtime class.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from streamflow.errors import InputError, OperationalError
from streamflow.monitoring.cbpe import CBPECalibration
from streamflow.progress import ProgressCallback, ProgressEvent, no_progress
from streamflow.schema import FEATURES
from streamflow.serving.onnx_model import OnnxModel  # the one import of the ONNX runtime class
from streamflow.settings import Settings

log = logging.getLogger(__name__)

ONNX_ARTIFACT = "onnx/model.onnx"
CBPE_DIR = "cbpe"
CBPE_ARTIFACT = f"{CBPE_DIR}/calibration.json"
TRAINED_USERS_ARTIFACT = f"{CBPE_DIR}/trained_user_ids.txt.gz"
_PROGRESS_BAR_VAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
SCORE_BATCH_ROWS = 50_000  # rows per onnxruntime call when scoring a month (memory bound, not a tunable)


def score_in_batches(
    onnx: OnnxModel,
    frame: pd.DataFrame,
    *,
    batch_rows: int = SCORE_BATCH_ROWS,
    progress: ProgressCallback = no_progress,
    task: str = "score",
) -> npt.NDArray[np.float64]:
    """P(churn) of every row of ``frame`` by ``onnx``, ``batch_rows`` at a time (the feed of one
    batch is a few MB whatever the month's size), reporting the rows scored; clipped into [0, 1]."""
    n = len(frame)
    out = np.empty(n, dtype=np.float64)
    features = frame[FEATURES]
    progress(ProgressEvent(task, 0, n))
    for start in range(0, n, batch_rows):
        stop = min(start + batch_rows, n)
        out[start:stop] = onnx.predict_proba(features.iloc[start:stop])
        progress(ProgressEvent(task, stop, n))
    return np.clip(out, 0.0, 1.0)


class UnknownModelVersionError(InputError, LookupError):
    """A model version that is not registered."""


class ModelArtifactError(OperationalError, RuntimeError):
    """A registered version whose ONNX artefact cannot be read or run."""


@dataclass(frozen=True)
class ScoringModel:
    """One registered version, ready to score frames holding the 14 features."""

    name: str
    version: str
    run_id: str
    trained_as_of: str | None
    validation_auc: float | None
    onnx: OnnxModel = field(repr=False)
    calibration: CBPECalibration | None = field(repr=False)
    trained_user_ids: frozenset[str] | None = field(repr=False)
    notes: dict[str, str] = field(default_factory=dict)  # "calibration" / "trained_users" → why missing
    onnx_bytes: bytes = field(default=b"", repr=False)  # the artefact itself (the Spark engine ships it to executors)

    def churn_probability(
        self, frame: pd.DataFrame, progress: ProgressCallback = no_progress, task: str = "score"
    ) -> npt.NDArray[np.float64]:
        """P(churn) per row, from the ONNX artefact (float32 sums clipped into [0, 1]), in batches."""
        return score_in_batches(self.onnx, frame, progress=progress, task=task)

    def predict_proba(self, X: pd.DataFrame) -> npt.NDArray[np.float64]:
        """scikit-learn's shape, ``[P(0), P(1)]`` per row (for code written against a pipeline)."""
        p1 = self.churn_probability(X)
        return np.column_stack([1.0 - p1, p1])

    def unseen(self, user_ids: Iterable[str]) -> npt.NDArray[np.bool_] | None:
        """Which of ``user_ids`` the model was not trained on (None: the training users are unknown)."""
        if self.trained_user_ids is None:
            return None
        trained = self.trained_user_ids
        if isinstance(user_ids, pd.Series):
            return ~user_ids.isin(trained).to_numpy(dtype=bool)  # hash lookups in C, not a Python loop
        return np.fromiter((u not in trained for u in user_ids), dtype=bool)

    def describe(self) -> str:
        auc = f"{self.validation_auc:.4f}" if self.validation_auc is not None else "n/a"
        return f"{self.name} v{self.version} (trained on {self.trained_as_of}, val AUC {auc})"


def _client(settings: Settings) -> Any:
    from streamflow.training.registry import configure_mlflow

    return configure_mlflow(settings)


def _artifact_paths(client: Any, run_id: str, directory: str) -> set[str]:
    try:
        return {a.path for a in client.list_artifacts(run_id, directory)}
    except Exception as exc:  # a missing directory is "no artefact", not an error
        log.debug("event=list_artifacts_failed run_id=%s dir=%s error=%r", run_id, directory, exc)
        return set()


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow draws a tqdm bar on stderr for every download, read from its own environment
    variable only: switch it off for the download and restore the variable as found."""
    saved = os.environ.get(_PROGRESS_BAR_VAR)
    os.environ[_PROGRESS_BAR_VAR] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(_PROGRESS_BAR_VAR, None)
        else:
            os.environ[_PROGRESS_BAR_VAR] = saved


def _download(client: Any, run_id: str, path: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="streamflow-artifact-") as tmp, _no_progress_bar():
        local = client.download_artifacts(run_id, path, tmp)
        return Path(local).read_bytes()


def load_model_version(settings: Settings, version: str) -> ScoringModel:
    """Version ``version`` of ``settings.model_name``: ONNX runtime (``settings.score_threads``
    threads: the monitor scores whole months) + what the monitor needs."""
    from mlflow.exceptions import MlflowException

    client = _client(settings)
    try:
        mv = client.get_model_version(settings.model_name, str(version))
    except MlflowException as exc:
        raise UnknownModelVersionError(
            f"model {settings.model_name!r} has no version {version!r} in the registry at {settings.tracking_uri}"
        ) from exc
    run = client.get_run(mv.run_id)
    try:
        onnx_bytes = _download(client, mv.run_id, ONNX_ARTIFACT)
        onnx = OnnxModel(onnx_bytes, threads=settings.score_threads)
    except Exception as exc:
        raise ModelArtifactError(
            f"{settings.model_name} v{mv.version}: cannot load {ONNX_ARTIFACT} of run {mv.run_id} "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    cbpe_files = _artifact_paths(client, mv.run_id, CBPE_DIR)
    notes: dict[str, str] = {}
    calibration: CBPECalibration | None = None
    if CBPE_ARTIFACT in cbpe_files:
        try:
            calibration = CBPECalibration.from_dict(json.loads(_download(client, mv.run_id, CBPE_ARTIFACT)))
        except (ValueError, OSError) as exc:
            notes["calibration"] = f"{CBPE_ARTIFACT} of v{mv.version} is unreadable ({exc})"
    else:
        reason = run.data.tags.get("cbpe_calibration_error")
        notes["calibration"] = f"v{mv.version} has no {CBPE_ARTIFACT}: " + (
            f"calibration failed at training ({reason})" if reason else "trained before CBPE was wired in"
        )
    trained: frozenset[str] | None = None
    if TRAINED_USERS_ARTIFACT in cbpe_files:
        raw = gzip.decompress(_download(client, mv.run_id, TRAINED_USERS_ARTIFACT)).decode("utf-8")
        trained = frozenset(line for line in raw.splitlines() if line)
    else:
        notes["trained_users"] = f"v{mv.version} has no {TRAINED_USERS_ARTIFACT}"
    val_auc = run.data.metrics.get("val_auc")
    return ScoringModel(
        name=settings.model_name,
        version=str(mv.version),
        run_id=str(mv.run_id),
        trained_as_of=run.data.tags.get("as_of"),
        validation_auc=float(val_auc) if val_auc is not None and math.isfinite(val_auc) else None,
        onnx=onnx,
        calibration=calibration,
        trained_user_ids=trained,
        notes=notes,
        onnx_bytes=onnx_bytes,
    )


def production_model_version(settings: Settings) -> str | None:
    """The version behind ``settings.model_alias`` (None when the alias is not set)."""
    from streamflow.training.registry import production_version

    info = production_version(settings)
    return info.version if info is not None else None


def load_production_model(settings: Settings) -> ScoringModel | None:
    """The version behind the production alias, or None when there is none."""
    version = production_model_version(settings)
    return load_model_version(settings, version) if version is not None else None


# ---- training time ------------------------------------------------------------------------------


def onnx_probabilities(
    onnx_bytes: bytes, X: pd.DataFrame, *, threads: int = 1, progress: ProgressCallback = no_progress
) -> npt.NDArray[np.float64]:
    """P(churn) of serialized ONNX ``onnx_bytes`` on ``X`` (clipped into [0, 1])."""
    return score_in_batches(OnnxModel(onnx_bytes, threads=threads), X, progress=progress, task="score validation")


def log_quality_artifacts(
    onnx_bytes: bytes,
    X_val: pd.DataFrame,
    y_val: pd.Series,
    trained_user_ids: Iterable[str],
    *,
    threads: int = 1,
    progress: ProgressCallback = no_progress,
) -> CBPECalibration | None:
    """In the active MLflow run: fit the CBPE calibration on the validation split's ONNX
    probabilities and log it (``cbpe/calibration.json``), and log the training rows' user ids
    (``cbpe/trained_user_ids.txt.gz``). A calibration that cannot be fitted (e.g. too few rows)
    is tagged ``cbpe_calibration_error`` and skipped: training never fails because of it."""
    import mlflow

    calibration: CBPECalibration | None = None
    try:
        proba = onnx_probabilities(onnx_bytes, X_val, threads=threads, progress=progress)
        calibration = CBPECalibration.fit(proba, y_val.to_numpy())
    except ValueError as exc:
        log.warning("event=cbpe_calibration_failed error=%r", str(exc))
        mlflow.set_tag("cbpe_calibration_error", str(exc)[:500])
    if calibration is not None:
        mlflow.log_dict(calibration.to_dict(), CBPE_ARTIFACT)
        mlflow.set_tag("cbpe_calibrated", str(calibration.calibrated).lower())
    users = sorted({str(u) for u in trained_user_ids})
    with tempfile.TemporaryDirectory(prefix="streamflow-cbpe-") as tmp:
        path = Path(tmp) / Path(TRAINED_USERS_ARTIFACT).name
        path.write_bytes(gzip.compress(("\n".join(users) + "\n").encode("utf-8"), mtime=0))
        mlflow.log_artifact(str(path), artifact_path=CBPE_DIR)
    return calibration
