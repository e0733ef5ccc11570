"""The served ONNX artefact is the trained pipeline on the course data: probabilities agree
within 1e-5 on both course months, including the users without plan flags (the
figure docs/serving.md quotes). Reads the course CSVs; no service needed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from streamflow.core.data_model import FEATURES, FLAG_FEATURES, LABEL
from streamflow.core.settings import Settings
from streamflow.model.onnx_model import OnnxModel
from streamflow.training.onnx_export import export_onnx
from streamflow.training.pipeline import build_pipeline
from tests.helpers.data import month_frame
from tests.helpers.onnx import max_proba_diff

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(course_seeds: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, OnnxModel]:
    settings = Settings(home=Path(tmp_path_factory.mktemp("onnx_home")))
    df = month_frame(course_seeds / "month_000")
    pipe = build_pipeline(settings)
    pipe.fit(df[FEATURES], df[LABEL])
    return pipe, OnnxModel(export_onnx(pipe, df[FEATURES].head(50)))


@pytest.mark.parametrize("month", ["month_000", "month_001"])
def test_onnx_equals_sklearn_on_course_data(trained: tuple[object, OnnxModel], course_seeds: Path, month: str) -> None:
    pipe, model = trained
    X: pd.DataFrame = month_frame(course_seeds / month)[FEATURES]
    assert X[FLAG_FEATURES].isna().any(axis=None), "the course data has users without plan flags"
    assert max_proba_diff(pipe, model, X) <= 1e-5
    nan_rows = X[X["plan_stream_tv"].isna()]
    assert len(nan_rows) > 100
    assert max_proba_diff(pipe, model, nan_rows) <= 1e-5
