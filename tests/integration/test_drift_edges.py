"""Drift through the real Evidently on degenerate columns: a feature with no value at all in a month
(Evidently refuses an empty column) and a constant feature. No crash; each outcome names the column
and what was decided for it (streamflow.monitoring.drift's docstring). Generated months (the
project's generator), as the dataset builder returns them."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamflow.core.data_model import TIMESTAMP
from streamflow.monitoring.decision import Decision
from streamflow.monitoring.drift import UNMEASURED_METHOD, DriftResult, run_drift_report
from streamflow.monitoring.metrics_push import FEATURE_DRIFT_SCORE, drift_metrics_registry
from tests.helpers.data import month_frame

REF, CUR = "2024-01-31", "2024-02-29"


@pytest.fixture(scope="module")
def months(generated_seeds: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    frames = []
    for month, as_of in (("month_000", REF), ("month_001", CUR)):
        df = month_frame(generated_seeds / month)
        df.insert(1, TIMESTAMP, pd.Timestamp(as_of))
        frames.append(df)
    return frames[0], frames[1]


Edit = Callable[[pd.DataFrame], pd.DataFrame]


def report(
    months: tuple[pd.DataFrame, pd.DataFrame],
    tmp_path: Path,
    ref_edit: Edit | None = None,
    cur_edit: Edit | None = None,
) -> DriftResult:
    ref, cur = (m.copy() for m in months)
    ref = ref_edit(ref) if ref_edit else ref
    cur = cur_edit(cur) if cur_edit else cur
    return run_drift_report(ref, cur, REF, CUR, 0.3, tmp_path)


def by_feature(result: DriftResult) -> dict[str, object]:
    return {f.feature: f for f in result.feature_drifts}


@pytest.fixture(scope="module")
def baseline(months: tuple[pd.DataFrame, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> DriftResult:
    return report(months, tmp_path_factory.mktemp("baseline"))


@pytest.mark.parametrize(
    ("feature", "empty"),
    [
        ("watch_hours_30d", np.nan),  # float
        ("paperless_billing", np.nan),  # flag (categorical for Evidently)
        ("net_service", None),  # categorical string
        ("months_active", np.nan),  # an int feature that arrived as floats without values
    ],
)
def test_a_feature_without_values_in_the_current_month_is_drifted_and_named(
    months: tuple[pd.DataFrame, pd.DataFrame],
    baseline: DriftResult,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    feature: str,
    empty: object,
) -> None:
    with caplog.at_level(logging.WARNING, logger="streamflow.monitoring.drift"):
        result = report(months, tmp_path, cur_edit=lambda df: df.assign(**{feature: empty}))
    fd = by_feature(result)[feature]
    assert fd.drifted and fd.method == UNMEASURED_METHOD  # type: ignore[attr-defined]
    assert fd.note == f"no values in the current month ({CUR}): counted as drifted"  # type: ignore[attr-defined]
    assert math.isnan(fd.score)  # type: ignore[attr-defined]
    # every other feature is measured by Evidently exactly as without the edit
    others = {f: d for f, d in by_feature(result).items() if f != feature}
    assert others == {f: d for f, d in by_feature(baseline).items() if f != feature}
    assert result.drifted_count == baseline.drifted_count + (0 if by_feature(baseline)[feature].drifted else 1)  # type: ignore[attr-defined]
    assert result.drift_share == pytest.approx(result.drifted_count / 14)
    assert result.unmeasured_features == [fd]
    summary = json.loads(result.summary_json.read_text())
    assert summary["unmeasured_features"] == [
        {"feature": feature, "method": UNMEASURED_METHOD, "score": None, "threshold": None, "drifted": True,
         "note": fd.note}  # type: ignore[attr-defined]
    ]  # fmt: skip
    assert f"event=drift_feature_unmeasured feature={feature}" in caplog.text
    assert result.report_html.stat().st_size > 0  # Evidently's report of the 13 others was written
    # the gauges stay exposable (NaN score for the unmeasured feature)
    registry = drift_metrics_registry(result)
    assert math.isnan(
        registry.get_sample_value(FEATURE_DRIFT_SCORE, {"feature": feature, "as_of_ref": REF, "as_of_cur": CUR})  # type: ignore[arg-type]
    )


def test_a_feature_without_values_in_either_month_is_not_drifted(
    months: tuple[pd.DataFrame, pd.DataFrame], baseline: DriftResult, tmp_path: Path
) -> None:
    def blank(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(watch_hours_30d=np.nan)

    result = report(months, tmp_path, ref_edit=blank, cur_edit=blank)
    fd = by_feature(result)["watch_hours_30d"]
    assert not fd.drifted and fd.method == UNMEASURED_METHOD  # type: ignore[attr-defined]
    assert fd.note == f"no values in either month ({REF}, {CUR}): nothing to compare, decided not drifted"  # type: ignore[attr-defined]
    assert result.drifted_count == baseline.drifted_count - (
        1 if by_feature(baseline)["watch_hours_30d"].drifted else 0
    )  # type: ignore[attr-defined]


def test_a_feature_without_values_in_the_reference_month_is_drifted(
    months: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    result = report(months, tmp_path, ref_edit=lambda df: df.assign(net_service=None))
    fd = by_feature(result)["net_service"]
    assert fd.drifted and fd.note == f"no values in the reference month ({REF}): counted as drifted"  # type: ignore[attr-defined]


def test_every_feature_without_values_decides_without_evidently_drift(
    months: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    """The extreme: the current month arrived with no feature values at all: 14/14 drifted, no crash."""
    from streamflow.core.data_model import FEATURES

    def blank_all(df: pd.DataFrame) -> pd.DataFrame:
        for feature in FEATURES:
            df[feature] = None if df[feature].dtype == object else np.nan
        return df

    result = report(months, tmp_path, cur_edit=blank_all)
    assert result.drifted_count == 14 and result.drift_share == 1.0
    assert result.decision is Decision.RETRAINING_TRIGGERED


def test_constant_columns_are_measured_by_evidently(
    months: tuple[pd.DataFrame, pd.DataFrame], baseline: DriftResult, tmp_path: Path
) -> None:
    """Constant in both months: measured, no drift. Constant in the current month only, away from the
    reference's distribution: measured, drift. Neither is special-cased (no note)."""

    def flat(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(monthly_fee=20.0)

    both = report(months, tmp_path / "both", ref_edit=flat, cur_edit=flat)
    fd = by_feature(both)["monthly_fee"]
    assert not fd.drifted and fd.note is None and fd.score == 0.0  # type: ignore[attr-defined]
    assert fd.method != UNMEASURED_METHOD  # type: ignore[attr-defined]

    moved = report(months, tmp_path / "moved", cur_edit=lambda df: df.assign(monthly_fee=500.0))
    fd = by_feature(moved)["monthly_fee"]
    assert fd.drifted and fd.note is None and math.isfinite(fd.score)  # type: ignore[attr-defined]
    assert not moved.unmeasured_features

    one_category = report(months, tmp_path / "cat", cur_edit=lambda df: df.assign(net_service="DSL"))
    fd = by_feature(one_category)["net_service"]
    assert fd.drifted and fd.note is None  # type: ignore[attr-defined]
    others = {f: d for f, d in by_feature(one_category).items() if f != "net_service"}
    assert others == {f: d for f, d in by_feature(baseline).items() if f != "net_service"}
