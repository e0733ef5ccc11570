"""The quality artefacts a training run logs next to its ONNX model (``docs/CONTRACTS.md``; paths
and hash tags in ``streamflow.model.artifacts``), read back by the monitor
(``monitoring/production_model.py``):

* ``cbpe/calibration.json`` — :class:`~streamflow.model.cbpe.CBPECalibration` fitted on the validation
  split's probabilities **of the ONNX model** (what is served and what the monitor scores with;
  they agree with the scikit-learn pipeline within 1e-5);
* ``cbpe/trained_user_ids.txt.gz`` — the user ids of the training rows, one per line (the monitor
  makes its label-free estimate on the month's *unseen* users).
"""

from __future__ import annotations

import gzip
import json
import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from streamflow.core.progress import ProgressCallback, no_progress
from streamflow.model.artifacts import CBPE_ARTIFACT, CBPE_DIR, SHA256_TAGS, TRAINED_USERS_ARTIFACT, sha256_hex
from streamflow.model.cbpe import CBPECalibration
from streamflow.model.onnx_model import OnnxModel, score_in_batches

log = logging.getLogger(__name__)


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
) -> dict[str, str]:
    """In the active MLflow run: fit the CBPE calibration on the validation split's ONNX
    probabilities and log it (``cbpe/calibration.json``), and log the training rows' user ids
    (``cbpe/trained_user_ids.txt.gz``). A calibration that cannot be fitted (e.g. too few rows)
    is tagged ``cbpe_calibration_error`` and skipped: training never fails because of it.

    Returns the sha256 of the exact bytes logged, per artefact path (training records them as
    run and model-version tags, ``streamflow.model.artifacts.SHA256_TAGS``)."""
    import mlflow

    logged: dict[str, bytes] = {}
    calibration: CBPECalibration | None = None
    try:
        proba = onnx_probabilities(onnx_bytes, X_val, threads=threads, progress=progress)
        calibration = CBPECalibration.fit(proba, y_val.to_numpy())
    except ValueError as exc:
        log.warning("event=cbpe_calibration_failed error=%r", str(exc))
        mlflow.set_tag("cbpe_calibration_error", str(exc)[:500])
    if calibration is not None:
        logged[CBPE_ARTIFACT] = json.dumps(calibration.to_dict(), indent=2, allow_nan=False).encode("utf-8")
        mlflow.set_tag("cbpe_calibrated", str(calibration.calibrated).lower())
    users = sorted({str(u) for u in trained_user_ids})
    logged[TRAINED_USERS_ARTIFACT] = gzip.compress(("\n".join(users) + "\n").encode("utf-8"), mtime=0)
    with tempfile.TemporaryDirectory(prefix="streamflow-cbpe-") as tmp:
        for path, data in logged.items():
            local = Path(tmp) / Path(path).name
            local.write_bytes(data)
            mlflow.log_artifact(str(local), artifact_path=CBPE_DIR)
    return {path: sha256_hex(data) for path, data in logged.items() if path in SHA256_TAGS}
