"""The Spark engine's mergeable statistics (``streamflow.spark.stats``) and performance sums
(``streamflow.spark.performance``), without Spark: summaries of random partitions, merged, give
Evidently's own scores (run on the whole months by the single-machine report) and scikit-learn's
metrics. Data: two generated months with planted drift (numerical and categorical)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from streamflow.core.data_model import CATEGORICAL_FEATURES, FEATURES, FLAG_FEATURES, INT_FEATURES, LABEL, TIMESTAMP
from streamflow.model.cbpe import CBPECalibration, estimate
from streamflow.monitoring.drift import DriftResult, run_drift_report
from streamflow.monitoring.performance import calibration_bins, estimated_metrics, realized_metrics
from streamflow.seeds.drift import parse_drift_option
from streamflow.seeds.generator import generate_months
from streamflow.spark import stats
from streamflow.spark.performance import (
    Sums,
    auc_from_mann_whitney,
    calibration_bins_from,
    estimated_from_sums,
    realized_from_sums,
)
from streamflow.spark.stats import BinnedCounts, Moments, ValueCounts
from tests.helpers.data import month_frame

PLANTED = "watch_hours_30d*0.7,skips_7d+2,net_service=Fiber optic:0.65@1"
USERS = 3000
PARTS = 7


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    root = tmp_path_factory.mktemp("spark_stats_seeds")
    generate_months(root, 2, USERS, 5, parse_drift_option(PLANTED))
    ref, cur = month_frame(root / "month_000"), month_frame(root / "month_001")
    ref[TIMESTAMP] = pd.Timestamp("2024-01-31", tz="UTC")
    cur[TIMESTAMP] = pd.Timestamp("2024-02-29", tz="UTC")
    return ref, cur


@pytest.fixture(scope="module")
def evidently(months: tuple[pd.DataFrame, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> DriftResult:
    ref, cur = months
    return run_drift_report(ref, cur, "2024-01-31", "2024-02-29", 0.3, tmp_path_factory.mktemp("evidently"))


def _parts(values: pd.Series, seed: int) -> Iterator[np.ndarray]:
    """The column cut into PARTS random partitions of uneven sizes."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, len(values)), PARTS - 1, replace=False))
    yield from np.split(values.to_numpy(dtype=object)[rng.permutation(len(values))], cuts)


def _merged_counts(values: pd.Series, seed: int) -> ValueCounts:
    out = ValueCounts(np.array([]), np.zeros(0, np.int64))
    for part in _parts(values, seed):
        out = out.merge(ValueCounts.from_sample(part))
    return out


def _kind(column: str) -> stats.ColumnKind:
    return "categorical" if column in (*CATEGORICAL_FEATURES, *FLAG_FEATURES, LABEL) else "numerical"


def test_evidently_defaults_are_what_the_engine_uses() -> None:
    defaults = stats.evidently_defaults()
    assert defaults["wasserstein"] == (stats.WASSERSTEIN, stats.DEFAULT_THRESHOLD)
    assert defaults["jensenshannon"] == (stats.JENSEN_SHANNON, stats.DEFAULT_THRESHOLD)
    assert defaults["psi"] == (stats.PSI, stats.DEFAULT_THRESHOLD)


@pytest.mark.parametrize("column", [*FEATURES, LABEL])
def test_merged_value_counts_give_evidentlys_scores(
    months: tuple[pd.DataFrame, pd.DataFrame], evidently: DriftResult, column: str
) -> None:
    """Counts of 7 random partitions per month, merged, then scored = Evidently's ValueDrift on the
    whole months: the same test and the same number (1e-9)."""
    ref, cur = months
    got = stats.score_exact(
        column,
        _kind(column),
        _merged_counts(ref[column], 1),
        _merged_counts(cur[column], 2),
        integer=column in INT_FEATURES,
    )
    if column == LABEL:
        method, score = evidently.target_value_drift_method, evidently.target_value_drift
        drifted = None
    else:
        want = next(f for f in evidently.feature_drifts if f.feature == column)
        method, score, drifted = want.method, want.score, want.drifted
    assert got.method == method
    assert got.score == pytest.approx(score, abs=1e-9)
    assert got.statistic == "exact" and got.n_reference + got.nulls_reference == len(ref)
    if drifted is not None:
        assert got.drifted == drifted


def test_the_planted_columns_are_the_drifted_ones(
    months: tuple[pd.DataFrame, pd.DataFrame], evidently: DriftResult
) -> None:
    ref, cur = months
    drifted = {
        c
        for c in FEATURES
        if stats.score_exact(c, _kind(c), _merged_counts(ref[c], 3), _merged_counts(cur[c], 4)).drifted
    }
    assert drifted == {f.feature for f in evidently.drifted_features} == {"watch_hours_30d", "skips_7d", "net_service"}


@pytest.mark.parametrize("column", ["watch_hours_30d", "months_active", "net_service", "paperless_billing", "skips_7d"])
def test_psi_from_merged_counts_is_evidentlys(months: tuple[pd.DataFrame, pd.DataFrame], column: str) -> None:
    from evidently.legacy.calculations.stattests.psi import _psi
    from evidently.legacy.core import ColumnType

    ref, cur = months
    kind = _kind(column)
    r, c = ref[column].dropna(), cur[column].dropna()
    want, _ = _psi(r, c, ColumnType.Categorical if kind == "categorical" else ColumnType.Numerical, 0.1)
    got = stats.psi_from_counts(
        kind, _merged_counts(ref[column], 5), _merged_counts(cur[column], 6), column in INT_FEATURES
    )
    assert got == pytest.approx(float(want), abs=1e-9)


@pytest.mark.parametrize(
    "column", ["watch_hours_30d", "avg_session_mins_7d", "ticket_avg_resolution_hrs_90d", "monthly_fee"]
)
def test_binned_wasserstein_is_within_its_bound_and_001(
    months: tuple[pd.DataFrame, pd.DataFrame], evidently: DriftResult, column: str
) -> None:
    """Bin counts of random partitions on the reference's quantiles + a grid (2,000 bins), merged:
    the normed Wasserstein distance is within 0.01 of Evidently's, and within the reported bound."""
    ref, cur = (m[column].to_numpy(np.float64) for m in months)
    low, high = min(ref.min(), cur.min()), max(ref.max(), cur.max())
    edges = stats.drift_bin_edges(np.quantile(ref, np.linspace(0, 1, 2001)[1:-1]), low, high, 2000)
    merged = []
    for side, seed in ((ref, 7), (cur, 8)):
        counts = BinnedCounts(edges, np.zeros(len(edges) - 1, np.int64))
        for part in _parts(pd.Series(side), seed):
            counts = counts.merge(BinnedCounts.from_sample(part.astype(np.float64), edges))
        merged.append(counts)
    std = Moments()
    for part in _parts(pd.Series(ref), 9):
        std = std.merge(Moments.from_sample(part.astype(np.float64)))
    assert std.std == pytest.approx(float(np.std(ref)), rel=1e-12)
    got = stats.score_binned(column, merged[0], merged[1], std.std)
    want = next(f for f in evidently.feature_drifts if f.feature == column)
    assert got.method == want.method == stats.WASSERSTEIN
    assert abs(got.score - want.score) <= min(0.01, got.error_bound)
    assert got.drifted == want.drifted


@pytest.mark.parametrize("integer", [True, False])
def test_sturges_edges_are_numpys(integer: bool) -> None:
    rng = np.random.default_rng(3)
    for n in (7, 1001, 12345):
        x = rng.integers(0, 40, n) if integer else rng.gamma(2.0, 3.0, n)
        want = np.histogram_bin_edges(x, bins="sturges")
        got = stats.sturges_edges(float(x.min()), float(x.max()), n, integer)
        np.testing.assert_array_equal(got, want)


def test_small_references_are_refused() -> None:
    small = ValueCounts.from_sample([1.0] * 1000)
    with pytest.raises(stats.SmallReferenceError, match="at or below 1,000"):
        stats.score_exact("x", "numerical", small, small)


# ---- performance from sums ------------------------------------------------------------------------
def _scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(np.round(rng.beta(2, 4, n) + 0.25 * y, 3), 0, 1)  # rounded: many ties
    return y, p


def test_realized_metrics_from_sums_are_sklearns() -> None:
    y, p = _scores(5000, 1)
    pred = p >= 0.5
    sums = Sums(
        n=len(y),
        positives=int(y.sum()),
        sum_p=float(p.sum()),
        sum_sq=float(((p - y) ** 2).sum()),
        tp=int((pred & (y == 1)).sum()),
        fp=int((pred & (y == 0)).sum()),
        fn=int((~pred & (y == 1)).sum()),
        tn=int((~pred & (y == 0)).sum()),
    )
    _, inverse = np.unique(p, return_inverse=True)
    pos = np.bincount(inverse, weights=y).astype(np.int64)
    neg = np.bincount(inverse, weights=1 - y).astype(np.int64)
    below = np.concatenate([[0], np.cumsum(neg)[:-1]])
    auc = auc_from_mann_whitney(int(np.sum(pos * (2 * below + neg))), int(y.sum()), int((1 - y).sum()))
    got, want = realized_from_sums(sums, auc), realized_metrics(y, p)
    assert list(got) == list(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k
    rows = {}
    index = np.minimum((p * 10).astype(np.int64), 9)
    for i in range(10):
        m = index == i
        if m.any():
            rows[i] = (int(m.sum()), float(p[m].sum()), int(y[m].sum()))
    got_bins, want_bins = calibration_bins_from(rows), calibration_bins(y, p)
    for g, w in zip(got_bins, want_bins, strict=True):
        assert (g.index, g.count) == (w.index, w.count)
        assert g.mean_predicted == pytest.approx(w.mean_predicted, abs=1e-12)
        assert g.observed_rate == pytest.approx(w.observed_rate, abs=1e-12)


def test_estimated_metrics_from_sums_are_cbpes() -> None:
    """The sums part of CBPE (cells, rates, sampling errors) equals ``estimated_metrics``; the AUC is
    passed through (the Spark pass computes it; tests/integration compares it with NannyML's)."""
    y_val, p_val = _scores(4000, 2)
    calibration = CBPECalibration.fit(p_val, y_val)
    _, p = _scores(3000, 3)
    q = calibration.calibrate(p)
    pred = p >= calibration.threshold
    cells = (
        float(q[pred].sum()),
        float((1 - q[pred]).sum()),
        float(q[~pred].sum()),
        float((1 - q[~pred]).sum()),
    )
    want = estimated_metrics(calibration, p)
    got = estimated_from_sums(
        calibration, len(p), estimate(calibration, p)["auc"], cells, float(p.sum()), int(pred.sum()), float(q.sum())
    )
    assert list(got) == list(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k
