"""The served ONNX artefact is the trained pipeline: probabilities agree within 1e-5
on the course data (both months), including rows with NaN plan flags and missing
categoricals, and the export does not touch the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamflow.schema import FEATURE_DTYPES, FEATURES, FLAG_FEATURES, LABEL
from streamflow.serving.onnx_model import NUMERIC_INPUT, STRING_INPUT, OnnxModel, export_onnx
from streamflow.settings import Settings
from streamflow.training.pipeline import build_pipeline
from tests.conftest import COURSE_SEEDS

SOURCE_FILES = ("subscriptions", "usage_agg_30d", "payments_agg_90d", "support_agg_90d", "labels")


def course_month(month: str, seeds: Path = COURSE_SEEDS) -> pd.DataFrame:
    """user_id, the 14 features in FEATURE_DTYPES and churn_label, straight from the CSVs
    (booleans → 1.0 / 0.0 / NaN; blank plan flags stay NaN)."""
    frame: pd.DataFrame | None = None
    for name in SOURCE_FILES:
        part = pd.read_csv(seeds / month / f"{name}.csv", dtype=str, keep_default_na=False)
        frame = part if frame is None else frame.merge(part, on="user_id", how="inner")
    assert frame is not None
    flags = {"True": 1.0, "False": 0.0, "": np.nan}
    out = pd.DataFrame({"user_id": frame["user_id"].astype(object)})
    for col in FEATURES:
        dtype = FEATURE_DTYPES[col]
        if col in FLAG_FEATURES:
            out[col] = frame[col].map(flags).astype("float64")
        elif dtype == "object":
            out[col] = frame[col].replace("", None).astype(object)
        else:
            out[col] = pd.to_numeric(frame[col]).astype(dtype)
    out[LABEL] = frame[LABEL].map({"True": 1, "False": 0}).astype("int64")
    return out


@pytest.fixture(scope="module")
def trained(course_seeds: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, OnnxModel, pd.DataFrame]:
    settings = Settings(home=Path(tmp_path_factory.mktemp("onnx_home")))
    df = course_month("month_000", course_seeds)
    pipe = build_pipeline(settings)
    pipe.fit(df[FEATURES], df[LABEL])
    model = OnnxModel(export_onnx(pipe, df[FEATURES].head(50)))
    return pipe, model, df


def _max_diff(pipe: object, model: OnnxModel, X: pd.DataFrame) -> float:
    ref = pipe.predict_proba(X)[:, 1]  # type: ignore[attr-defined]
    got = model.predict_proba(X)
    assert got.shape == ref.shape
    return float(np.abs(got - ref).max())


def test_layout_groups_strings_and_numerics(trained: tuple[object, OnnxModel, pd.DataFrame]) -> None:
    _, model, _ = trained
    assert model.layout.columns == FEATURES
    assert model.layout.strings == ["net_service"]
    assert sorted(model.layout.numeric) == sorted(f for f in FEATURES if f != "net_service")
    names = {i.name: i.type for i in model.session.get_inputs()}
    assert names == {STRING_INPUT: "tensor(string)", NUMERIC_INPUT: "tensor(float)"}


@pytest.mark.parametrize("month", ["month_000", "month_001"])
def test_onnx_equals_sklearn_on_course_data(
    trained: tuple[object, OnnxModel, pd.DataFrame], course_seeds: Path, month: str
) -> None:
    pipe, model, _ = trained
    X = course_month(month, course_seeds)[FEATURES]
    assert X[FLAG_FEATURES].isna().any(axis=None), "the course data has users without plan flags"
    assert _max_diff(pipe, model, X) <= 1e-5
    nan_rows = X[X["plan_stream_tv"].isna()]
    assert len(nan_rows) > 100
    assert _max_diff(pipe, model, nan_rows) <= 1e-5


def test_onnx_equals_sklearn_with_missing_values(trained: tuple[object, OnnxModel, pd.DataFrame]) -> None:
    pipe, model, df = trained
    X = df[FEATURES].copy()
    X.loc[X.index[::7], "net_service"] = None
    X.loc[X.index[::5], FLAG_FEATURES] = np.nan
    X.loc[X.index[::11], "monthly_fee"] = np.nan
    X.loc[X.index[::13], "net_service"] = "never-seen-service"
    assert _max_diff(pipe, model, X) <= 1e-5
    one = X.iloc[[3]]
    assert _max_diff(pipe, model, one) <= 1e-5


def test_export_leaves_pipeline_untouched(trained: tuple[object, OnnxModel, pd.DataFrame]) -> None:
    pipe, _, _ = trained
    imputer = pipe.named_steps["preprocess"].named_transformers_["cat"].named_steps["impute"]  # type: ignore[attr-defined]
    assert not isinstance(imputer.missing_values, str)
