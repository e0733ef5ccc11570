"""The served ONNX artefact is the trained pipeline: probabilities agree within 1e-5 on
generated data (both months), including rows with NaN plan flags and missing
categoricals, and the export does not touch the pipeline. (The same on the course data:
tests/integration/test_onnx_course.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamflow.core.data_model import FEATURES, FLAG_FEATURES, LABEL
from streamflow.core.settings import Settings
from streamflow.model.onnx_layout import NUMERIC_INPUT, STRING_INPUT
from streamflow.model.onnx_model import OnnxModel
from streamflow.training.onnx_export import export_onnx
from streamflow.training.pipeline import build_pipeline
from tests.helpers.data import month_frame
from tests.helpers.onnx import max_proba_diff


@pytest.fixture(scope="module")
def trained(generated_seeds: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, OnnxModel, pd.DataFrame]:
    settings = Settings(home=Path(tmp_path_factory.mktemp("onnx_home")))
    df = month_frame(generated_seeds / "month_000")
    pipe = build_pipeline(settings)
    pipe.fit(df[FEATURES], df[LABEL])
    model = OnnxModel(export_onnx(pipe, df[FEATURES].head(50)))
    return pipe, model, df


def test_layout_groups_strings_and_numerics(trained: tuple[object, OnnxModel, pd.DataFrame]) -> None:
    _, model, _ = trained
    assert model.layout.columns == FEATURES
    assert model.layout.strings == ["net_service"]
    assert sorted(model.layout.numeric) == sorted(f for f in FEATURES if f != "net_service")
    names = {i.name: i.type for i in model.session.get_inputs()}
    assert names == {STRING_INPUT: "tensor(string)", NUMERIC_INPUT: "tensor(float)"}


@pytest.mark.parametrize("month", ["month_000", "month_001"])
def test_onnx_equals_sklearn_on_generated_data(
    trained: tuple[object, OnnxModel, pd.DataFrame], generated_seeds: Path, month: str
) -> None:
    pipe, model, _ = trained
    X = month_frame(generated_seeds / month)[FEATURES]
    assert X[FLAG_FEATURES].isna().any(axis=None), "the generated data has users without plan flags"
    assert max_proba_diff(pipe, model, X) <= 1e-5
    nan_rows = X[X["plan_stream_tv"].isna()]
    assert len(nan_rows) > 100
    assert max_proba_diff(pipe, model, nan_rows) <= 1e-5


def test_onnx_equals_sklearn_with_missing_values(trained: tuple[object, OnnxModel, pd.DataFrame]) -> None:
    pipe, model, df = trained
    X = df[FEATURES].copy()
    X.loc[X.index[::7], "net_service"] = None
    X.loc[X.index[::5], FLAG_FEATURES] = np.nan
    X.loc[X.index[::11], "monthly_fee"] = np.nan
    X.loc[X.index[::13], "net_service"] = "never-seen-service"
    assert max_proba_diff(pipe, model, X) <= 1e-5
    one = X.iloc[[3]]
    assert max_proba_diff(pipe, model, one) <= 1e-5


def test_export_leaves_pipeline_untouched(trained: tuple[object, OnnxModel, pd.DataFrame]) -> None:
    pipe, _, _ = trained
    imputer = pipe.named_steps["preprocess"].named_transformers_["cat"].named_steps["impute"]  # type: ignore[attr-defined]
    assert not isinstance(imputer.missing_values, str)
