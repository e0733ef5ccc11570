"""The ONNX runtime of the model: an onnxruntime session over the bytes that
``streamflow.training.onnx_export.export_onnx`` logged at training time, with the input layout
read back from the model's metadata (format: ``streamflow.model.onnx_layout``); batched scoring of a
frame (:func:`score_in_batches`: the training-time calibration, the monitor, the Spark engine) and
the checks a model must pass before the API may serve it (:func:`open_servable`: the API's
model holder, and ``training.registry.promote`` before it publishes a version).

A neutral module below the stages (numpy, onnxruntime, ``streamflow.model.onnx_layout`` /
``schema`` / ``progress``): serving, training and monitoring all import it, and the API process
imports it without the training stack."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from streamflow.core.data_model import CATEGORICAL_FEATURES, FEATURES
from streamflow.core.progress import ProgressCallback, ProgressEvent, no_progress
from streamflow.model.onnx_layout import LAYOUT_KEY, MISSING_STRING, NUMERIC_INPUT, PROBA_OUTPUT, STRING_INPUT

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class InputLayout:
    columns: list[str]
    strings: list[str]
    numeric: list[str]


class OnnxModel:
    """An onnxruntime session over exported bytes, on one thread."""

    def __init__(self, model_bytes: bytes, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if LAYOUT_KEY not in meta:
            raise ValueError(f"ONNX model lacks {LAYOUT_KEY!r} metadata: not produced by export_onnx")
        raw = json.loads(meta[LAYOUT_KEY])
        self.layout = InputLayout(columns=raw["columns"], strings=raw[STRING_INPUT], numeric=raw[NUMERIC_INPUT])
        self._outputs = [PROBA_OUTPUT]
        self._run: Callable[[list[str], dict[str, np.ndarray]], list[np.ndarray]] = self.session.run

    def encode(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        """The graph feed for a frame with the model's columns (missing strings → "")."""
        feed: dict[str, np.ndarray] = {}
        if self.layout.strings:
            s = X[self.layout.strings].astype(object)
            feed[STRING_INPUT] = s.where(s.notna(), MISSING_STRING).to_numpy(dtype=object)
        if self.layout.numeric:
            feed[NUMERIC_INPUT] = X[self.layout.numeric].to_numpy(dtype=np.float32, na_value=np.nan)
        return feed

    def predict_proba_feed(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """P(class 1) for each row of an encoded feed (hot path: no pandas)."""
        return self._run(self._outputs, feed)[0][:, 1]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.predict_proba_feed(self.encode(X))


# ---- scoring a frame -----------------------------------------------------------------------------
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


# ---- what the API serves -------------------------------------------------------------------------
# The layout of the API's feature mirror: the model's inputs are built from these columns.
MIRROR_STRINGS: list[str] = list(CATEGORICAL_FEATURES)
MIRROR_NUMERIC: list[str] = [f for f in FEATURES if f not in CATEGORICAL_FEATURES]


def _reorder(model_cols: list[str], mirror_cols: list[str], what: str) -> npt.NDArray[np.intp] | None:
    if model_cols == mirror_cols:
        return None
    if sorted(model_cols) != sorted(mirror_cols):
        raise ValueError(f"model {what} inputs {model_cols} do not match the served features {mirror_cols}")
    return np.array([mirror_cols.index(c) for c in model_cols], dtype=np.intp)


@dataclass(frozen=True)
class ServableOnnx:
    """An ONNX model that passed :func:`open_servable`, with the column reorder from the mirror's
    layout to the model's (None when they agree)."""

    onnx: OnnxModel
    string_cols: npt.NDArray[np.intp] | None
    numeric_cols: npt.NDArray[np.intp] | None


def feed_from_mirror(
    strings: np.ndarray,
    numeric: np.ndarray,
    string_cols: npt.NDArray[np.intp] | None,
    numeric_cols: npt.NDArray[np.intp] | None,
) -> dict[str, np.ndarray]:
    """The graph feed for rows in the mirror's layout (columns reordered to the model's)."""
    if string_cols is not None:
        strings = strings[:, string_cols]
    if numeric_cols is not None:
        numeric = numeric[:, numeric_cols]
    return {STRING_INPUT: strings, NUMERIC_INPUT: numeric}


def open_servable(onnx_bytes: bytes, *, threads: int = 1) -> ServableOnnx:
    """Open the ONNX bytes, check their inputs against the feature mirror's layout and smoke-test
    two rows — all missing (imputers must handle it) and all zero — before the model may be
    served: each must give one probability in [0, 1] (a NaN is refused). Raises ValueError (or
    onnxruntime's error) otherwise."""
    onnx = OnnxModel(onnx_bytes, threads=threads)
    servable = ServableOnnx(
        onnx=onnx,
        string_cols=_reorder(onnx.layout.strings, MIRROR_STRINGS, "string"),
        numeric_cols=_reorder(onnx.layout.numeric, MIRROR_NUMERIC, "numeric"),
    )
    feed = feed_from_mirror(
        np.array([[MISSING_STRING] * len(MIRROR_STRINGS)] * 2, dtype=object),
        np.array([[np.nan] * len(MIRROR_NUMERIC), [0.0] * len(MIRROR_NUMERIC)], dtype=np.float32),
        servable.string_cols,
        servable.numeric_cols,
    )
    probe = np.asarray(onnx.predict_proba_feed(feed))
    if probe.shape != (2,) or not (np.isfinite(probe).all() and (probe >= 0).all() and (probe <= 1).all()):
        raise ValueError(f"model smoke test returned {probe.tolist()!r}, not two probabilities in [0, 1]")
    return servable
