"""Faulty models and deployments for the supply-chain tests: ONNX bytes that are corrupt, lack the
input-layout metadata, or output NaN (built from a real exported model with the ``onnx`` library),
deployment records written straight into PostgreSQL (what someone with database access — or a
corrupted disk — could leave there), and the files of a run's artefacts in the local MLflow store."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
from mlflow import MlflowClient

from streamflow.core.settings import Settings
from streamflow.db.engine import libpq_url
from streamflow.model.artifacts import ONNX_ARTIFACT, sha256_hex
from streamflow.model.deployments import INSERT_SQL, insert_params
from streamflow.model.onnx_layout import LAYOUT_KEY, NUMERIC_INPUT, PROBA_OUTPUT, STRING_INPUT
from tests.helpers.api import scrape, value

if TYPE_CHECKING:
    import pandas as pd


def corrupt(onnx_bytes: bytes) -> bytes:
    """The first half of a real model: not a parseable ONNX protobuf."""
    return onnx_bytes[: len(onnx_bytes) // 2]


def without_layout(onnx_bytes: bytes) -> bytes:
    """The same model without its ``streamflow.input_layout`` metadata."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    del model.metadata_props[:]
    return bytes(model.SerializeToString())


def nan_model(onnx_bytes: bytes) -> bytes:
    """A valid ONNX graph with the same inputs and layout metadata whose probabilities are NaN."""
    import onnx
    from onnx import TensorProto, helper

    source = onnx.load_from_string(onnx_bytes)
    meta = {p.key: p.value for p in source.metadata_props}
    layout = json.loads(meta[LAYOUT_KEY])
    n_str, n_num = len(layout[STRING_INPUT]), len(layout[NUMERIC_INPUT])
    graph = helper.make_graph(
        [
            helper.make_node("Slice", [NUMERIC_INPUT, "starts", "ends", "axes"], ["first"]),
            helper.make_node("Mul", ["first", "zero"], ["zeros"]),
            helper.make_node("Add", ["zeros", "nan_pair"], [PROBA_OUTPUT]),
        ],
        "nan_model",
        [
            helper.make_tensor_value_info(STRING_INPUT, TensorProto.STRING, [None, n_str]),
            helper.make_tensor_value_info(NUMERIC_INPUT, TensorProto.FLOAT, [None, n_num]),
        ],
        [helper.make_tensor_value_info(PROBA_OUTPUT, TensorProto.FLOAT, [None, 2])],
        initializer=[
            helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
            helper.make_tensor("ends", TensorProto.INT64, [1], [1]),
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
            helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
            helper.make_tensor("nan_pair", TensorProto.FLOAT, [1, 2], [float("nan"), float("nan")]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = source.ir_version
    entry = model.metadata_props.add()
    entry.key, entry.value = LAYOUT_KEY, meta[LAYOUT_KEY]
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def insert_deployment(
    settings: Settings,
    onnx_bytes: bytes,
    *,
    version: str,
    sha256: str | None = None,
    run_id: str = "fault-injected",
    as_of: date = date(2024, 2, 29),
    reason: str = "test: written straight into the table",
) -> int:
    """A deployment row written directly (bypassing promote()); ``sha256`` defaults to the bytes' own."""
    params = insert_params(
        model_name=settings.model_name,
        alias=settings.model_alias,
        version=version,
        run_id=run_id,
        as_of=as_of,
        metrics={"val_auc": 0.5},
        onnx_sha256=sha256 or sha256_hex(onnx_bytes),
        artifact_sha256={},
        onnx=onnx_bytes,
        previous_version=None,
        reason=reason,
    )
    with psycopg.connect(libpq_url(settings)) as conn:
        row = conn.execute(INSERT_SQL, params).fetchone()
    assert row is not None
    return int(row[0])


def delete_deployment(settings: Settings, deployment_id: int) -> None:
    with psycopg.connect(libpq_url(settings)) as conn:
        conn.execute("DELETE FROM model_deployments WHERE id = %(id)s", {"id": deployment_id})


def artifact_file(settings: Settings, version: str, path: str = ONNX_ARTIFACT) -> Path:
    """The file of artefact ``path`` of ``version``'s run in the local (file://) MLflow store."""
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    run_id = client.get_model_version(settings.model_name, version).run_id
    root = client.get_run(run_id).info.artifact_uri
    assert root.startswith("file://"), root
    return Path(root.removeprefix("file://")) / path


def shuffled(df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Same rows, labels permuted: a model trained on it has learned nothing (AUC ≈ 0.5)."""
    import numpy as np

    from streamflow.core.data_model import LABEL

    rng = np.random.default_rng(seed)
    return df.assign(**{LABEL: rng.permutation(df[LABEL].to_numpy())})


def set_recorded_sha256(settings: Settings, version: str, path: str, digest: str) -> None:
    """Overwrite the sha256 recorded for ``path`` of ``version`` (run tag and model-version tag):
    what a consistently re-hashed (but otherwise bad) artefact looks like."""
    from streamflow.model.artifacts import SHA256_TAGS

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    run_id = client.get_model_version(settings.model_name, version).run_id
    client.set_tag(run_id, SHA256_TAGS[path], digest)
    client.set_model_version_tag(settings.model_name, version, SHA256_TAGS[path], digest)


def load_failures(url: str, reason: str | None = None) -> float:
    """The API's ``api_model_load_failures_total`` (for ``reason`` only, if given)."""
    labels = {"reason": reason} if reason else {}
    return value(scrape(url), "api_model_load_failures", "api_model_load_failures_total", **labels)
