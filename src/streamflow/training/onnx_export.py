"""The compiled (ONNX) form of the trained scikit-learn pipeline.

Training calls :func:`export_onnx` and logs the bytes next to the scikit-learn model
(MLflow artifact ``onnx/model.onnx``); the API serves them with onnxruntime
(``streamflow.serving.onnx_model``). Tests prove that both agree within 1e-5.

Graph inputs (the format of ``streamflow.onnx_layout``; the feature → input layout is
recorded in the model's metadata under ``LAYOUT_KEY``):

* ``strings`` — ``string[N, S]``: the object (categorical) columns, missing encoded as ``""``;
* ``numeric`` — ``float[N, K]``: every other column, missing as NaN.

Output ``probabilities`` is ``float[N, 2]`` (zipmap disabled).

Why float32 and not doubles: onnxruntime has no double kernel for ``Imputer``, and
scikit-learn's trees compare ``float32(x)`` to their thresholds anyway; skl2onnx
adjusts every float threshold so that ``float32(x) <= t'`` reproduces scikit-learn's
decision exactly. What remains is float32 summation of 300 leaf probabilities (~1e-7).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pandas as pd

from streamflow.onnx_layout import LAYOUT_KEY, MISSING_STRING, NUMERIC_INPUT, PROBA_OUTPUT, STRING_INPUT

TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}


def _string_columns(X: pd.DataFrame) -> list[str]:
    return [str(c) for c in X.columns if X[c].dtype == object or pd.api.types.is_string_dtype(X[c].dtype)]


def _patch_string_imputers(est: Any) -> None:
    """String tensors cannot hold NaN: make every fitted string SimpleImputer treat ``""``
    as its missing value (the runtime encodes missing categoricals as ``""``)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import FeatureUnion, Pipeline

    if isinstance(est, Pipeline):
        for _, step in est.steps:
            _patch_string_imputers(step)
    elif isinstance(est, ColumnTransformer):
        for _, trans, _ in est.transformers_:
            _patch_string_imputers(trans)
    elif isinstance(est, FeatureUnion):
        for _, trans in est.transformer_list:
            _patch_string_imputers(trans)
    elif isinstance(est, SimpleImputer):
        fit_dtype = getattr(est, "_fit_dtype", None)
        if fit_dtype is not None and fit_dtype.kind in "OUS" and not isinstance(est.missing_values, str):
            est.missing_values = MISSING_STRING


def _final_estimator(pipeline: Any) -> Any:
    steps = getattr(pipeline, "steps", None)
    return steps[-1][1] if steps else pipeline


def export_onnx(pipeline: Any, X_sample: pd.DataFrame) -> bytes:
    """Convert a fitted scikit-learn pipeline taking the frame ``X_sample`` (its columns
    and dtypes define the inputs) into serialized ONNX with the two grouped inputs
    described in the module docstring. The pipeline itself is not modified."""
    import onnx
    import skl2onnx
    from onnx import TensorProto, helper
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    columns = [str(c) for c in X_sample.columns]
    string_cols = _string_columns(X_sample)
    numeric_cols = [c for c in columns if c not in string_cols]

    model = copy.deepcopy(pipeline)
    _patch_string_imputers(model)
    initial_types = [
        (c, StringTensorType([None, 1]) if c in string_cols else FloatTensorType([None, 1])) for c in columns
    ]
    onx = skl2onnx.to_onnx(
        model,
        initial_types=initial_types,
        options={id(_final_estimator(model)): {"zipmap": False}},
        target_opset=TARGET_OPSET,
    )

    # Replace the per-column inputs by two grouped ones, split back inside the graph:
    # one feed per request instead of 14 small arrays.
    graph = onx.graph
    del graph.input[:]
    groups = [(STRING_INPUT, TensorProto.STRING, string_cols), (NUMERIC_INPUT, TensorProto.FLOAT, numeric_cols)]
    new_nodes = []
    for name, elem_type, cols in groups:
        if not cols:
            continue
        graph.input.append(helper.make_tensor_value_info(name, elem_type, [None, len(cols)]))
        if len(cols) == 1:
            new_nodes.append(helper.make_node("Identity", [name], cols, name=f"{name}_identity"))
        else:
            sizes = f"{name}_split_sizes"
            graph.initializer.append(helper.make_tensor(sizes, TensorProto.INT64, [len(cols)], [1] * len(cols)))
            new_nodes.append(helper.make_node("Split", [name, sizes], cols, axis=1, name=f"{name}_split"))
    for i, node in enumerate(new_nodes):
        graph.node.insert(i, node)
    outputs = [o.name for o in graph.output]
    if PROBA_OUTPUT not in outputs:
        raise ValueError(f"converted model has no {PROBA_OUTPUT!r} output (outputs: {outputs})")

    layout = {"columns": columns, STRING_INPUT: string_cols, NUMERIC_INPUT: numeric_cols}
    entry = onx.metadata_props.add()
    entry.key = LAYOUT_KEY
    entry.value = json.dumps(layout)
    onnx.checker.check_model(onx)
    return bytes(onx.SerializeToString())
