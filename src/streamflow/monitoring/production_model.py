"""A registered model version as the monitor scores it: its ONNX artefact (never the pickled
scikit-learn model), its validation AUC, its CBPE calibration and the users it was trained on
(the last two written at training time by ``streamflow.training.artifacts``).

MLflow artefacts of a training run that this module reads (``docs/CONTRACTS.md``;
paths and hash tags in ``streamflow.model.artifacts``):

* ``onnx/model.onnx`` — the compiled pipeline (written by training);
* ``cbpe/calibration.json`` — :class:`~streamflow.model.cbpe.CBPECalibration` fitted on the
  validation split's probabilities **of the ONNX model** (what is served and what the monitor
  scores with; they agree with the scikit-learn pipeline within 1e-5);
* ``cbpe/trained_user_ids.txt.gz`` — the user ids of the training rows, one per line. A random
  forest memorises its training rows: its next-month scores for those users are over-confident
  and CBPE over-estimates AUC on them (+0.02 … +0.04 on generated months without drift). The
  estimate is therefore made on the month's *unseen* users, the population the validation AUC
  and the calibration describe.

Every artefact is verified before use: its bytes must hash to the sha256 training recorded (run
tag = model-version tag), and for the deployed version also to the hashes of its deployment record
(PostgreSQL, written when it was promoted). A mismatch, a missing hash or a recorded artefact that
is gone raises :class:`~streamflow.model.artifacts.ArtifactIntegrityError` (an OperationalError:
the monitor stops with one line, exit 1 — it never scores with tampered bytes).

"Production" here is the **deployed** version (``model_deployments``, what the API serves), not
whatever the MLflow alias points at: the two differ only when the alias was moved outside
``streamflow promote``, and then the monitor measures what is really served.

A version whose run has no CBPE artefacts (calibration failed at training) still loads:
``calibration`` / ``trained_user_ids`` are None and ``notes`` says why (the estimate is then null,
never a crash).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd

from streamflow.core.progress import ProgressCallback, no_progress
from streamflow.core.settings import Settings
from streamflow.model.artifacts import (
    CBPE_ARTIFACT,
    ONNX_ARTIFACT,
    TRAINED_USERS_ARTIFACT,
    ArtifactIntegrityError,
)
from streamflow.model.cbpe import CBPECalibration
from streamflow.model.onnx_model import OnnxModel, score_in_batches
from streamflow.training.registry import (
    ModelArtifactError,
    UnknownModelVersionError,
    deployed,
    verified_version,
)

log = logging.getLogger(__name__)

__all__ = [
    "CBPE_ARTIFACT",
    "ONNX_ARTIFACT",
    "TRAINED_USERS_ARTIFACT",
    "ArtifactIntegrityError",
    "ModelArtifactError",
    "ScoringModel",
    "UnknownModelVersionError",
    "load_model_version",
    "load_production_model",
    "production_model_version",
]


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
    sha256: dict[str, str] = field(default_factory=dict)  # artefact path → verified sha256

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


def load_model_version(settings: Settings, version: str) -> ScoringModel:
    """Version ``version`` of ``settings.model_name``: ONNX runtime (``settings.score_threads``
    threads: the monitor scores whole months) + what the monitor needs, every
    artefact verified (see the module docstring); the deployed version is also checked against its
    deployment record."""
    current = deployed(settings)
    expected = current.artifact_sha256 if current is not None and current.version == str(version) else None
    if expected is not None and current is not None:
        expected = {**expected, ONNX_ARTIFACT: current.onnx_sha256}
    found = verified_version(settings, str(version), expected=expected)
    name, run_id = settings.model_name, found.run_id
    try:
        onnx = OnnxModel(found.onnx, threads=settings.score_threads)
    except Exception as exc:
        raise ModelArtifactError(
            f"{name} v{found.version}: cannot load {ONNX_ARTIFACT} of run {run_id} ({type(exc).__name__}: {exc})"
        ) from exc
    notes: dict[str, str] = {}
    calibration: CBPECalibration | None = None
    raw_calibration = found.artifacts.get(CBPE_ARTIFACT)
    if raw_calibration is not None:
        try:
            calibration = CBPECalibration.from_dict(json.loads(raw_calibration))
        except (ValueError, OSError) as exc:
            notes["calibration"] = f"{CBPE_ARTIFACT} of v{found.version} is unreadable ({exc})"
    else:
        reason = found.run_tags.get("cbpe_calibration_error")
        notes["calibration"] = f"v{found.version} has no {CBPE_ARTIFACT}: " + (
            f"calibration failed at training ({reason})" if reason else "trained before CBPE was wired in"
        )
    trained: frozenset[str] | None = None
    raw_users = found.artifacts.get(TRAINED_USERS_ARTIFACT)
    if raw_users is not None:
        text = gzip.decompress(raw_users).decode("utf-8")
        trained = frozenset(line for line in text.splitlines() if line)
    else:
        notes["trained_users"] = f"v{found.version} has no {TRAINED_USERS_ARTIFACT}"
    val_auc = found.metrics.get("val_auc")
    return ScoringModel(
        name=name,
        version=found.version,
        run_id=run_id,
        trained_as_of=found.as_of,
        validation_auc=float(val_auc) if val_auc is not None and math.isfinite(val_auc) else None,
        onnx=onnx,
        calibration=calibration,
        trained_user_ids=trained,
        notes=notes,
        onnx_bytes=found.onnx,
        sha256=dict(found.sha256),
    )


def production_model_version(settings: Settings) -> str | None:
    """The deployed version (``model_deployments``: what the API serves); None when none is."""
    current = deployed(settings)
    return current.version if current is not None else None


def load_production_model(settings: Settings) -> ScoringModel | None:
    """The deployed version, or None when nothing is deployed."""
    version = production_model_version(settings)
    return load_model_version(settings, version) if version is not None else None
