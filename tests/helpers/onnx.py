"""Comparing the ONNX runtime with the scikit-learn pipeline it was exported from."""

from __future__ import annotations

import numpy as np
import pandas as pd

from streamflow.model.onnx_model import OnnxModel


def max_proba_diff(pipe: object, model: OnnxModel, X: pd.DataFrame) -> float:
    """max |P_onnx(churn) - P_sklearn(churn)| over the rows of ``X``."""
    ref = pipe.predict_proba(X)[:, 1]  # type: ignore[attr-defined]
    got = model.predict_proba(X)
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max())
