"""The ONNX model format shared by the export (``training/onnx_export.py``) and the runtime
(``streamflow/model/onnx_model.py``): graph input and output names, the metadata key that records
which feature goes to which input, and how a missing categorical value is fed.

A leaf module (standard library only), so that the API process imports neither the
training stack nor the converter to read a model."""

from __future__ import annotations

LAYOUT_KEY = "streamflow.input_layout"  # metadata: {"columns": [...], "strings": [...], "numeric": [...]}
STRING_INPUT = "strings"  # string[N, S]: the categorical columns
NUMERIC_INPUT = "numeric"  # float[N, K]: every other column, missing as NaN
PROBA_OUTPUT = "probabilities"  # float[N, 2] (zipmap disabled)
MISSING_STRING = ""  # how a missing categorical value is fed to the graph
