"""The compiled (ONNX) form of the trained scikit-learn pipeline.

Training calls :func:`export_onnx` and logs the bytes next to the scikit-learn model
(MLflow artifact ``onnx/model.onnx``); the API serves them with onnxruntime
(``streamflow.model.onnx_model``). Tests prove that both agree within 1e-5.

Graph inputs (the format of ``streamflow.model.onnx_layout``; the feature → input layout is
recorded in the model's metadata under ``LAYOUT_KEY``):

* ``strings`` — ``string[N, S]``: the object (categorical) columns, missing encoded as ``""``;
* ``numeric`` — ``float[N, K]``: every other column, missing as NaN.

Output ``probabilities`` is ``float[N, 2]`` (zipmap disabled).

Why float32 and not doubles: onnxruntime has no double kernel for ``Imputer``, and
scikit-learn's trees compare ``float32(x)`` to their thresholds anyway; skl2onnx
adjusts every float threshold so that ``float32(x) <= t'`` reproduces scikit-learn's
decision exactly. What remains is float32 summation of 300 leaf probabilities (~1e-7).

Why the forest is not converted by skl2onnx: its converter walks every node in Python
(``np.nextafter`` per threshold, list appends) — 56 s for 356,000 nodes, most of the training
budget at 1,000,000 users, and gigabytes of Python lists. :func:`export_onnx` converts the
preprocessing with skl2onnx around a one-tree stand-in of the forest, then writes the forest's
``TreeEnsembleClassifier`` attributes from the fitted trees' arrays with numpy
(:func:`forest_attributes`): the same attributes skl2onnx writes (a unit test compares them
value for value), in seconds.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pandas as pd

from streamflow.model.onnx_layout import LAYOUT_KEY, MISSING_STRING, NUMERIC_INPUT, PROBA_OUTPUT, STRING_INPUT

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


def _is_binary_forest(est: Any) -> bool:
    from sklearn.ensemble import RandomForestClassifier

    return (
        isinstance(est, RandomForestClassifier)
        and getattr(est, "n_outputs_", 0) == 1
        and len(getattr(est, "classes_", ())) == 2
        and len(getattr(est, "estimators_", ())) > 1
    )


def forest_thresholds(threshold: np.ndarray) -> np.ndarray:
    """float32 thresholds ``t'`` with ``float32(x) <= t  ⟺  float32(x) <= t'`` for every float32
    ``x`` (scikit-learn compares float32 features to float64 thresholds): ``float32(t)`` when it
    does not round up, else the next float32 below it (skl2onnx's ``sklearn_threshold``)."""
    t = np.asarray(threshold, dtype=np.float64)
    f = t.astype(np.float32)
    down = np.nextafter(f, np.float32(-np.inf), dtype=np.float32)
    return np.where(f.astype(np.float64) > t, down, f).astype(np.float32)


def forest_attributes(forest: Any) -> dict[str, np.ndarray]:
    """The ``TreeEnsembleClassifier`` attributes of a fitted binary RandomForestClassifier, as
    skl2onnx's converter writes them (``zipmap`` off, version-1 float attributes): every node of
    every tree in order, leaves with the class-1 probability of the leaf divided by the number
    of trees (``class_ids`` 0 = the binary case: onnxruntime outputs ``[1 - p, p]``)."""
    trees = [e.tree_ for e in forest.estimators_]
    weight = 1.0 / len(trees)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _INT_ATTRS + _FLOAT_ATTRS + ("leaf",)}
    for tree_id, t in enumerate(trees):
        n = int(t.node_count)
        ids = np.arange(n, dtype=np.int64)
        left = np.asarray(t.children_left[:n], dtype=np.int64)
        right = np.asarray(t.children_right[:n], dtype=np.int64)
        branch = (left > ids) | (right > ids)
        value = np.asarray(t.value[:n, 0, :], dtype=np.float64)
        total = value.sum(axis=1)
        proba = value[:, 1] * (weight / np.where(total != 0.0, total, 1.0))
        leaves = ~branch
        parts["nodes_treeids"].append(np.full(n, tree_id, dtype=np.int64))
        parts["nodes_nodeids"].append(ids)
        parts["nodes_featureids"].append(np.where(branch, t.feature[:n], 0).astype(np.int64))
        parts["nodes_values"].append(np.where(branch, forest_thresholds(t.threshold[:n]), np.float32(0.0)))
        parts["nodes_truenodeids"].append(np.where(branch, left, 0))
        parts["nodes_falsenodeids"].append(np.where(branch, right, 0))
        parts["leaf"].append(branch)
        parts["class_treeids"].append(np.full(int(leaves.sum()), tree_id, dtype=np.int64))
        parts["class_nodeids"].append(ids[leaves])
        parts["class_weights"].append(proba[leaves].astype(np.float32))
    out = {k: np.concatenate(v) for k, v in parts.items()}
    branch_all = out.pop("leaf")
    out["nodes_modes"] = branch_all  # turned into strings by _set_forest_attributes
    out["nodes_missing_value_tracks_true"] = np.zeros(len(branch_all), dtype=np.int64)
    out["nodes_hitrates"] = np.ones(len(branch_all), dtype=np.float32)
    out["class_ids"] = np.zeros(len(out["class_nodeids"]), dtype=np.int64)
    out["classlabels_int64s"] = np.asarray([int(c) for c in forest.classes_], dtype=np.int64)
    return out


_INT_ATTRS = (
    "nodes_treeids",
    "nodes_nodeids",
    "nodes_featureids",
    "nodes_truenodeids",
    "nodes_falsenodeids",
    "class_treeids",
    "class_nodeids",
)
_FLOAT_ATTRS = ("nodes_values", "class_weights")


def _set_forest_attributes(node: Any, forest: Any) -> None:
    """Replace the attributes of the converted one-tree ``TreeEnsembleClassifier`` ``node`` by
    those of the whole ``forest``."""
    from onnx import AttributeProto

    attrs = forest_attributes(forest)
    keep = {a.name: a for a in node.attribute if a.name in ("post_transform",)}
    del node.attribute[:]
    for name in sorted({*attrs, *keep}):
        if name in keep:
            node.attribute.append(keep[name])
            continue
        value = attrs[name]
        attr = AttributeProto(name=name)
        if name == "nodes_modes":
            attr.type = AttributeProto.STRINGS
            attr.strings.extend(np.where(value, b"BRANCH_LEQ", b"LEAF").tolist())
        elif value.dtype.kind == "f":
            attr.type = AttributeProto.FLOATS
            attr.floats.extend(value.astype(np.float32).tolist())
        else:
            attr.type = AttributeProto.INTS
            attr.ints.extend(value.astype(np.int64).tolist())
        node.attribute.append(attr)


def _stand_in(pipeline: Any) -> tuple[Any, Any | None]:
    """(what skl2onnx converts, the forest whose trees go into the graph afterwards): a copy of
    the pipeline whose binary RandomForestClassifier holds only its first tree (the forest itself
    is not copied), or a deep copy of the whole pipeline for any other final estimator."""
    from sklearn.pipeline import Pipeline

    final = _final_estimator(pipeline)
    if not (isinstance(pipeline, Pipeline) and _is_binary_forest(final)):
        return copy.deepcopy(pipeline), None
    one_tree = copy.copy(final)
    one_tree.estimators_ = final.estimators_[:1]
    steps = [(name, copy.deepcopy(step)) for name, step in pipeline.steps[:-1]]
    return Pipeline([*steps, (pipeline.steps[-1][0], one_tree)]), final


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

    model, forest = _stand_in(pipeline)
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
    if forest is not None:
        ensembles = [n for n in graph.node if n.op_type == "TreeEnsembleClassifier"]
        if len(ensembles) != 1:
            raise ValueError(f"expected one TreeEnsembleClassifier in the converted graph, found {len(ensembles)}")
        _set_forest_attributes(ensembles[0], forest)
    outputs = [o.name for o in graph.output]
    if PROBA_OUTPUT not in outputs:
        raise ValueError(f"converted model has no {PROBA_OUTPUT!r} output (outputs: {outputs})")

    layout = {"columns": columns, STRING_INPUT: string_cols, NUMERIC_INPUT: numeric_cols}
    entry = onx.metadata_props.add()
    entry.key = LAYOUT_KEY
    entry.value = json.dumps(layout)
    onnx.checker.check_model(onx)
    return bytes(onx.SerializeToString())
