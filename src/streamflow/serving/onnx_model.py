"""The ONNX runtime of the served model: an onnxruntime session (one thread) over the bytes
that ``streamflow.training.onnx_export.export_onnx`` logged at training time, with the
input layout read back from the model's metadata (format: ``streamflow.onnx_layout``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from streamflow.onnx_layout import LAYOUT_KEY, MISSING_STRING, NUMERIC_INPUT, PROBA_OUTPUT, STRING_INPUT

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
        self._run = self.session.run

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
