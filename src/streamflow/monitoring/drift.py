"""Drift monitoring core: compare a reference and a current point-in-time dataset with
Evidently 0.7 and reduce the report to a few numbers (drift share over the 14 model
features, per-feature drift scores, target drift, prediction drift) plus the drift rule's decision.

A feature without a single value in a month (all missing) cannot be measured by Evidently (it
refuses an empty column). It is left out of Evidently's report and decided here, named in the
summary (``note``) and in a warning log line: no values in *one* month is **drift** (the model
gets nothing but missing values where it got data, or the other way round: counted in the drift
share); no values in *either* month is **no drift** (nothing changed). A constant column needs
nothing special: Evidently measures it (constant in both months: no drift; constant in one: drift
when its distribution moved).

Inputs are frames as produced by ``streamflow.features.dataset.build_point_in_time_dataset``:
``user_id``, ``event_timestamp``, the 14 ``FEATURES`` in ``FEATURE_DTYPES`` and ``churn_label``
(0/1). ``churn_label`` may be missing from a frame (the month's labels have not arrived): there is
then no target drift (None). When both frames carry ``churn_probability`` (the production model's
score of each row), its drift is measured too (``ValueDrift``, a numerical column; the drift share
stays over the 14 features). Nothing here touches the database or Feast.

Large months are compared on a **stated sample** (:func:`sample_months`): Evidently on
1,000,000 × 16 columns per month takes ~30 s and ~1.7 GB. Each month is cut to at most
``monitor_sample_rows`` rows (a setting; stratified by ``churn_label`` when the month has
labels, uniform otherwise; seeded), and the sample is recorded in the summary (``sample``) and
in the report's name and metadata. Evidently's drift methods at these sizes are distances
(Wasserstein, Jensen-Shannon), whose sampling error at 200,000 rows is far below their 0.1
thresholds: benchmarks/README.md has the per-feature scores full vs sampled and the decision
agreement. Target drift (churn rates) is always computed on every row of both months.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pandas.api import types as ptypes

from streamflow.core.data_model import (
    CATEGORICAL_FEATURES,
    ENTITY,
    FEATURE_DTYPES,
    FEATURES,
    FLAG_FEATURES,
    LABEL,
    NUMERIC_FEATURES,
    TIMESTAMP,
)
from streamflow.core.errors import InputError, OperationalError
from streamflow.core.fileio import PRIVATE_MODE, atomic_write, atomic_write_text
from streamflow.monitoring.decision import Decision, decide_action, validate_threshold

log = logging.getLogger(__name__)

PREDICTION = "churn_probability"  # the production model's P(churn) per row (optional column)
EVIDENTLY_CATEGORICAL: list[str] = [*CATEGORICAL_FEATURES, *FLAG_FEATURES, LABEL]
REQUIRED_COLUMNS: list[str] = [ENTITY, TIMESTAMP, *FEATURES]  # + LABEL and PREDICTION when present
OPTIONAL_COLUMNS: list[str] = [LABEL, PREDICTION]


class DriftInputError(InputError, ValueError):
    """The two frames cannot be compared (missing/extra columns, dtype mismatch, empty, bad as_of)."""


class DriftReportError(OperationalError, RuntimeError):
    """The Evidently output does not contain what we read from it (never silently defaulted)."""


@dataclass(frozen=True)
class TargetDrift:
    ref_rate: float
    cur_rate: float
    abs_diff: float


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    method: str
    score: float
    threshold: float
    drifted: bool
    note: str | None = None  # why it was decided without Evidently (see unmeasured_feature_drifts)

    def as_dict(self, *, with_drifted: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "feature": self.feature,
            "method": self.method,
            "score": _json_float(self.score),
            "threshold": _json_float(self.threshold),
        }
        if with_drifted:
            d["drifted"] = self.drifted
        if self.note is not None:
            d["note"] = self.note
        return d


UNMEASURED_METHOD = "not measured: all values missing"


def unmeasured_feature_drifts(
    ref: pd.DataFrame, cur: pd.DataFrame, as_of_ref: str, as_of_cur: str
) -> dict[str, FeatureDrift]:
    """The features without a single value in a month, decided without Evidently (module docstring):
    missing in one month only → drifted; in both → not drifted. Score and threshold are NaN."""
    out: dict[str, FeatureDrift] = {}
    for feature in FEATURES:
        empty_ref, empty_cur = bool(ref[feature].isna().all()), bool(cur[feature].isna().all())
        if not (empty_ref or empty_cur):
            continue
        if empty_ref and empty_cur:
            note = f"no values in either month ({as_of_ref}, {as_of_cur}): nothing to compare, decided not drifted"
        else:
            side, day = ("current", as_of_cur) if empty_cur else ("reference", as_of_ref)
            note = f"no values in the {side} month ({day}): counted as drifted"
        out[feature] = FeatureDrift(
            feature=feature,
            method=UNMEASURED_METHOD,
            score=math.nan,
            threshold=math.nan,
            drifted=not (empty_ref and empty_cur),
            note=note,
        )
    return out


@dataclass(frozen=True)
class MonthSample:
    """Which rows of one month the drift report compared: ``rows`` of ``of``."""

    rows: int
    of: int
    method: str  # "all rows" | "stratified by churn_label" | "uniform"

    @property
    def sampled(self) -> bool:
        return self.rows < self.of


@dataclass(frozen=True)
class DriftSample:
    """The stated sample of a drift report: at most ``limit`` rows per month, drawn with ``seed``."""

    limit: int | None
    seed: int
    reference: MonthSample
    current: MonthSample

    @property
    def sampled(self) -> bool:
        return self.reference.sampled or self.current.sampled

    def as_dict(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "seed": self.seed,
            "sampled": self.sampled,
            "reference": {"rows": self.reference.rows, "of": self.reference.of, "method": self.reference.method},
            "current": {"rows": self.current.rows, "of": self.current.of, "method": self.current.method},
        }

    def describe(self) -> str:
        if not self.sampled:
            return f"all rows ({self.reference.of:,} vs {self.current.of:,}; sample limit {self.limit or 'none'})"
        return (
            f"sample of {self.reference.rows:,} of {self.reference.of:,} (reference, {self.reference.method}) vs "
            f"{self.current.rows:,} of {self.current.of:,} (current, {self.current.method}) rows, seed {self.seed}"
        )


def sample_positions(df: pd.DataFrame, limit: int | None, seed: int) -> tuple[np.ndarray | None, MonthSample]:
    """Row positions (sorted) of a sample of at most ``limit`` rows of ``df`` and its description;
    None: every row. Stratified by ``churn_label`` when present (each class keeps its share, largest
    remainders), uniform otherwise; ``numpy.random.default_rng(seed)``: the same month and seed
    give the same rows."""
    n = len(df)
    if limit is None or n <= limit:
        return None, MonthSample(n, n, "all rows")
    rng = np.random.default_rng(seed)
    if LABEL not in df.columns:
        return np.sort(rng.choice(n, size=limit, replace=False)), MonthSample(limit, n, "uniform")
    labels = df[LABEL].to_numpy()
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * (limit / n)
    take = np.floor(exact).astype(np.int64)
    for i in np.argsort(-(exact - take), kind="stable")[: limit - int(take.sum())]:
        take[i] += 1
    parts = [
        rng.choice(np.flatnonzero(labels == c), size=int(k), replace=False) for c, k in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(parts)), MonthSample(limit, n, f"stratified by {LABEL}")


def sample_months(
    ref: pd.DataFrame, cur: pd.DataFrame, limit: int | None, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, DriftSample, np.ndarray | None, np.ndarray | None]:
    """Both months cut to the stated sample: (ref rows, cur rows, the sample, ref positions, cur
    positions) — positions None when a month is compared whole."""
    ref_pos, ref_s = sample_positions(ref, limit, seed)
    cur_pos, cur_s = sample_positions(cur, limit, seed)
    ref_rows = ref if ref_pos is None else ref.iloc[ref_pos].reset_index(drop=True)
    cur_rows = cur if cur_pos is None else cur.iloc[cur_pos].reset_index(drop=True)
    return ref_rows, cur_rows, DriftSample(limit, seed, ref_s, cur_s), ref_pos, cur_pos


BoolMask = Sequence[bool] | npt.NDArray[np.bool_]  # one flag per row


@dataclass(frozen=True)
class PredictionScope:
    """Which rows' predictions are compared: ``population`` names them (e.g. ``unseen``: the users
    the model was not trained on, whose scores are not memorised), the masks select them."""

    population: str
    reference: BoolMask
    current: BoolMask


@dataclass(frozen=True)
class PredictionDrift:
    """Drift of the model's predicted probabilities (Evidently ValueDrift on ``churn_probability``)."""

    method: str
    score: float
    threshold: float
    drifted: bool
    ref_mean: float
    cur_mean: float
    column: str = PREDICTION
    population: str = "month"
    n_ref: int = 0
    n_cur: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "method": self.method,
            "score": _json_float(self.score),
            "threshold": _json_float(self.threshold),
            "drifted": self.drifted,
            "ref_mean": _json_float(self.ref_mean),
            "cur_mean": _json_float(self.cur_mean),
            "population": self.population,
            "n_ref": self.n_ref,
            "n_cur": self.n_cur,
        }


@dataclass(frozen=True)
class DriftResult:
    as_of_ref: str
    as_of_cur: str
    drift_share: float
    drifted_count: int
    feature_drifts: tuple[FeatureDrift, ...]  # the 14 FEATURES, in schema order
    target: TargetDrift | None  # None: a month without labels
    target_value_drift: float  # Evidently ValueDrift score of churn_label (NaN without labels)
    target_value_drift_method: str | None
    threshold: float
    decision: Decision
    report_html: Path
    report_json: Path
    summary_json: Path
    n_ref: int
    n_cur: int
    generated_at: datetime
    elapsed_seconds: float = field(default=0.0, compare=False)
    prediction: PredictionDrift | None = None  # None: no churn_probability column
    labels_missing: tuple[str, ...] = ()  # as_of dates whose frame had no labels
    sample: DriftSample | None = None  # the rows Evidently compared (None: the frames as given)

    @property
    def target_drift(self) -> float:
        """|cur rate - ref rate|; NaN when a month has no labels (the decision line prints NaN)."""
        return self.target.abs_diff if self.target is not None else math.nan

    @property
    def drifted_features(self) -> list[FeatureDrift]:
        return [f for f in self.feature_drifts if f.drifted]

    @property
    def feature_scores(self) -> dict[str, float]:
        return {f.feature: f.score for f in self.feature_drifts}

    @property
    def unmeasured_features(self) -> list[FeatureDrift]:
        """Features Evidently could not measure (all values missing in a month), decided here."""
        return [f for f in self.feature_drifts if f.method == UNMEASURED_METHOD]

    def summary(self) -> dict[str, Any]:
        return {
            "as_of_ref": self.as_of_ref,
            "as_of_cur": self.as_of_cur,
            "drift_share": self.drift_share,
            "drifted_count": self.drifted_count,
            "n_features": len(self.feature_drifts),
            "drifted_features": [f.as_dict(with_drifted=False) for f in self.drifted_features],
            "feature_scores": [f.as_dict() for f in self.feature_drifts],
            "unmeasured_features": [f.as_dict() for f in self.unmeasured_features],
            "target_drift": self.target.abs_diff if self.target else None,
            "target_ref_rate": self.target.ref_rate if self.target else None,
            "target_cur_rate": self.target.cur_rate if self.target else None,
            "target_value_drift": _json_float(self.target_value_drift),
            "target_value_drift_method": self.target_value_drift_method,
            "target_drift_note": (
                f"no labels for as_of={', '.join(self.labels_missing)} yet: no target drift"
                if self.labels_missing
                else None
            ),
            "prediction_drift": self.prediction.as_dict() if self.prediction else None,
            "decision": self.decision.value,
            "threshold": self.threshold,
            "report_html": str(self.report_html),
            "report_json": str(self.report_json),
            "n_ref": self.n_ref,
            "n_cur": self.n_cur,
            "sample": self.sample.as_dict() if self.sample else None,
            "generated_at": self.generated_at.isoformat(),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


# ---------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------
def _as_of_str(value: str | date, side: str) -> str:
    try:
        if isinstance(value, datetime):
            return value.date().isoformat()
        if isinstance(value, date):
            return value.isoformat()
        return date.fromisoformat(str(value)).isoformat()
    except (TypeError, ValueError) as exc:
        raise DriftInputError(f"as_of_{side} must be a YYYY-MM-DD date, got {value!r}") from exc


def _family(dtype: Any) -> str:
    if ptypes.is_bool_dtype(dtype) or ptypes.is_numeric_dtype(dtype):
        return "numeric"
    if ptypes.is_datetime64_any_dtype(dtype):
        return "datetime"
    if ptypes.is_object_dtype(dtype) or ptypes.is_string_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return "string"
    return str(dtype)


def _expected_family(column: str) -> str:
    if column == TIMESTAMP:
        return "datetime"
    if column == ENTITY:
        return "string"
    if column in (LABEL, PREDICTION):
        return "numeric"
    return "string" if FEATURE_DTYPES[column] == "object" else "numeric"


def _expected_dtype(column: str) -> str:
    if column in FEATURE_DTYPES:
        return FEATURE_DTYPES[column]
    return {TIMESTAMP: "datetime64", ENTITY: "object", LABEL: "int64", PREDICTION: "float64"}[column]


def validate_frames(ref: pd.DataFrame, cur: pd.DataFrame, as_of_ref: str | date, as_of_cur: str | date) -> None:
    """Check that ``ref`` and ``cur`` can be compared; raise :class:`DriftInputError` naming every problem.

    Both frames must be non-empty, hold ``user_id``, ``event_timestamp`` and the 14 features,
    have the same column set (``churn_label`` may be absent from either: labels not arrived yet),
    and dtypes of the same family (numeric / string / datetime) on both sides and as in the
    schema. Flags must be 1.0/0.0/NaN, the label 0/1 without missing values, ``churn_probability``
    (if on one side, then on both) a probability without missing values. Extra columns present
    on both sides are allowed (and ignored).
    """
    ref_day, cur_day = _as_of_str(as_of_ref, "ref"), _as_of_str(as_of_cur, "cur")
    problems: list[str] = []
    frames = (("reference", ref_day, ref), ("current", cur_day, cur))
    for side, day, df in frames:
        if not isinstance(df, pd.DataFrame):
            raise DriftInputError(f"{side} data for as_of={day} is not a DataFrame: {type(df).__name__}")
        if df.empty:
            problems.append(f"{side} frame for as_of={day} is empty ({len(df)} rows)")
        missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
        if missing:
            problems.append(f"{side} frame for as_of={day} is missing columns {missing}")
        dups = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
        if dups:
            problems.append(f"{side} frame for as_of={day} has duplicated columns {dups}")

    optional = [*REQUIRED_COLUMNS, LABEL]  # a one-sided label is a month whose labels have not arrived
    only_ref = [str(c) for c in ref.columns if c not in cur.columns and c not in optional]
    only_cur = [str(c) for c in cur.columns if c not in ref.columns and c not in optional]
    if only_ref:
        problems.append(f"extra columns only in reference (as_of={ref_day}): {only_ref}")
    if only_cur:
        problems.append(f"extra columns only in current (as_of={cur_day}): {only_cur}")

    for col in [*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS]:
        if col not in ref.columns or col not in cur.columns:
            continue
        expected = _expected_family(col)
        ref_dtype, cur_dtype = ref[col].dtype, cur[col].dtype
        if _family(ref_dtype) != _family(cur_dtype):
            problems.append(
                f"dtype mismatch for column {col!r}: reference ({ref_day}) {ref_dtype} vs current ({cur_day}) "
                f"{cur_dtype} (expected {_expected_dtype(col)})"
            )
            continue
        if _family(ref_dtype) != expected:
            problems.append(
                f"dtype of column {col!r} is {ref_dtype} on both sides, expected {_expected_dtype(col)} ({expected})"
            )

    if not problems:
        for side, day, df in frames:
            for col in FLAG_FEATURES:
                bad = df[col].dropna()
                bad = bad[~bad.isin([0, 1])]
                if not bad.empty:
                    problems.append(
                        f"{side} frame for as_of={day}: flag {col!r} must be 1.0/0.0/NaN, got {sorted(set(bad))[:5]}"
                    )
            if LABEL in df.columns:
                label = df[LABEL]
                if label.isna().any():
                    problems.append(
                        f"{side} frame for as_of={day}: {LABEL!r} has {int(label.isna().sum())} missing values"
                    )
                elif not label.isin([0, 1]).all():
                    problems.append(
                        f"{side} frame for as_of={day}: {LABEL!r} must be 0/1, got {sorted(set(label))[:5]}"
                    )
            if PREDICTION in df.columns:
                proba = df[PREDICTION]
                if proba.isna().any() or not proba.between(0.0, 1.0).all():
                    problems.append(f"{side} frame for as_of={day}: {PREDICTION!r} must be probabilities in [0, 1]")

    if problems:
        raise DriftInputError("cannot compare drift inputs: " + "; ".join(problems))


# ---------------------------------------------------------------------------------
# Target drift
# ---------------------------------------------------------------------------------
def compute_target_drift(ref: pd.DataFrame, cur: pd.DataFrame) -> TargetDrift:
    """Absolute difference of the churn rates (the course's simple target drift)."""
    for side, df in (("reference", ref), ("current", cur)):
        if LABEL not in df.columns:
            raise DriftInputError(f"{side} frame has no {LABEL!r} column")
        if df[LABEL].dropna().empty:
            raise DriftInputError(f"{side} frame has no {LABEL!r} values")
    ref_rate = float(ref[LABEL].dropna().astype("float64").mean())
    cur_rate = float(cur[LABEL].dropna().astype("float64").mean())
    return TargetDrift(ref_rate=ref_rate, cur_rate=cur_rate, abs_diff=abs(cur_rate - ref_rate))


# ---------------------------------------------------------------------------------
# Evidently
# ---------------------------------------------------------------------------------
def _to_evidently_frame(
    df: pd.DataFrame,
    with_label: bool = True,
    with_prediction: bool = False,
    scope: BoolMask | None = None,
    exclude: Sequence[str] = (),
) -> pd.DataFrame:
    """The columns Evidently sees (minus ``exclude``: unmeasurable features). Flags go from float
    1.0/0.0/NaN to object True/False/None: Evidently 0.7's DataSummaryPreset (UniqueValueCount)
    rejects float labels on categorical columns. Predictions outside ``scope`` become missing
    (Evidently's drift tests skip missing values)."""
    columns = [*REQUIRED_COLUMNS, *([LABEL] if with_label else []), *([PREDICTION] if with_prediction else [])]
    out = df[[c for c in columns if c not in exclude]].copy()
    for col in FLAG_FEATURES:
        if col in exclude:
            continue
        mapped = out[col].map({1.0: True, 0.0: False}).astype(object)
        out[col] = mapped.mask(out[col].isna(), None)
    if with_label:
        out[LABEL] = out[LABEL].astype("int64")
    if with_prediction:
        out[PREDICTION] = out[PREDICTION].astype("float64")
        if scope is not None:
            out[PREDICTION] = out[PREDICTION].where(np.asarray(scope, dtype=bool))
    return out


def _data_definition(with_label: bool = True, with_prediction: bool = False, exclude: Sequence[str] = ()) -> Any:
    from evidently import DataDefinition

    return DataDefinition(
        id_column=ENTITY,
        timestamp=TIMESTAMP,
        numerical_columns=[
            c for c in [*NUMERIC_FEATURES, *([PREDICTION] if with_prediction else [])] if c not in exclude
        ],
        categorical_columns=[c for c in EVIDENTLY_CATEGORICAL if (with_label or c != LABEL) and c not in exclude],
    )


def _metric_type(metric: Mapping[str, Any]) -> str:
    """Metric class name, whichever way this Evidently version spells it."""
    config = metric.get("config") or {}
    mtype = config.get("type") if isinstance(config, Mapping) else None
    if isinstance(mtype, str) and mtype:
        return mtype.rsplit(":", 1)[-1]
    # Evidently >= 0.7.16 names it `metric_name`, earlier 0.7.x `metric_id`: "DriftedColumnsCount(...)".
    for key in ("metric_name", "metric_id"):
        name = metric.get(key)
        if isinstance(name, str) and name:
            return name.split("(", 1)[0]
    return ""


def _float(value: Any, what: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError) as exc:
        raise DriftReportError(f"{what}: expected a number, got {value!r}") from exc
    return out


def extract_drifted_columns(summary: Mapping[str, Any], n_features: int = len(FEATURES)) -> tuple[float, int]:
    """(share, count) from the single DriftedColumnsCount result of ``Snapshot.dict()``; raise if absent."""
    found = [m for m in summary.get("metrics", []) if _metric_type(m) == "DriftedColumnsCount"]
    if len(found) != 1:
        raise DriftReportError(
            f"expected exactly one DriftedColumnsCount result in the Evidently report, found {len(found)}"
        )
    value = found[0].get("value")
    if not isinstance(value, Mapping) or "share" not in value or "count" not in value:
        raise DriftReportError(f"DriftedColumnsCount result has no share/count: {value!r}")
    share = _float(value["share"], "DriftedColumnsCount.share")
    count_f = _float(value["count"], "DriftedColumnsCount.count")
    if not (math.isfinite(share) and 0.0 <= share <= 1.0) or not count_f.is_integer() or count_f < 0:
        raise DriftReportError(f"DriftedColumnsCount result out of range: {value!r}")
    count = int(count_f)
    if not math.isclose(share, count / n_features, abs_tol=1e-9):
        raise DriftReportError(
            f"DriftedColumnsCount share={share} != count/{n_features}={count / n_features}: the preset "
            "did not run on the 14 features only"
        )
    return share, count


def _test_status_by_metric(summary: Mapping[str, Any]) -> dict[str, str]:
    statuses: dict[str, str] = {}
    for test in summary.get("tests", []):
        config = test.get("metric_config") or {}
        fingerprint = config.get("metric_id") or (test.get("bound_test") or {}).get("metric_fingerprint")
        if fingerprint and test.get("id") == "drift":
            statuses[str(fingerprint)] = str(test.get("status", "")).rsplit(".", 1)[-1].upper()
    return statuses


def extract_value_drifts(summary: Mapping[str, Any], columns: Sequence[str]) -> dict[str, FeatureDrift]:
    """Per-column ValueDrift results (score, resolved method/threshold, drifted) for ``columns``.

    ``drifted`` comes from Evidently's own per-column drift test (FAIL = drift detected), which
    knows whether the method is a p-value (drift when below) or a distance (drift when above)."""
    statuses = _test_status_by_metric(summary)
    out: dict[str, FeatureDrift] = {}
    for metric in summary.get("metrics", []):
        if _metric_type(metric) != "ValueDrift":
            continue
        config = metric.get("config") or {}
        column = config.get("column")
        if not isinstance(column, str) or column not in columns:
            continue
        if column in out:
            raise DriftReportError(f"more than one ValueDrift result for column {column!r}")
        status = statuses.get(str(metric.get("id")))
        if status not in ("SUCCESS", "FAIL"):
            raise DriftReportError(f"no usable drift test result for column {column!r} (status={status!r})")
        out[column] = FeatureDrift(
            feature=column,
            method=str(config.get("method")),
            score=_float(metric.get("value"), f"ValueDrift({column}).value"),
            threshold=_float(config.get("threshold"), f"ValueDrift({column}).threshold"),
            drifted=status == "FAIL",
        )
    missing = [c for c in columns if c not in out]
    if missing:
        raise DriftReportError(f"no ValueDrift result in the Evidently report for columns {missing}")
    return out


@contextmanager
def _quiet_evidently() -> Iterator[None]:
    """Evidently 0.7 / pandas 2.3 emit harmless RuntimeWarnings/FutureWarnings on every run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="invalid value encountered", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*[Dd]owncasting.*", category=FutureWarning)
        # Its HTML renderer warns once per numeric column on tz-aware timestamps; harmless.
        warnings.filterwarnings("ignore", message="Converting to PeriodArray", category=UserWarning)
        yield


def _json_float(value: float) -> float | None:
    return value if math.isfinite(value) else None


def report_paths(report_dir: Path, as_of_ref: str, as_of_cur: str) -> tuple[Path, Path, Path]:
    stem = f"drift_{as_of_ref}_vs_{as_of_cur}"
    return report_dir / f"{stem}.html", report_dir / f"{stem}.json", report_dir / f"{stem}.summary.json"


def run_drift_report(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    as_of_ref: str | date,
    as_of_cur: str | date,
    threshold: float,
    report_dir: str | os.PathLike[str],
    prediction_scope: PredictionScope | None = None,
    *,
    sample: DriftSample | None = None,
    target: TargetDrift | None = None,
) -> DriftResult:
    """Run the course's Evidently report (DataSummaryPreset + DataDriftPreset + ValueDrift(churn_label)),
    write ``drift_{ref}_vs_{cur}.html/.json/.summary.json`` atomically into ``report_dir`` and return
    the numbers. ``drift_share`` is computed over the 14 FEATURES only.

    ``sample`` says that ``ref``/``cur`` are samples of the months (:func:`sample_months`): it goes
    into the summary, the report's name and metadata, and ``n_ref``/``n_cur`` are the months' sizes;
    ``target`` is then the target drift of the whole months (else computed from the frames).

    Without ``churn_label`` in a frame (labels not arrived) there is no ValueDrift(churn_label) and
    no target drift. With ``churn_probability`` in both frames, ValueDrift(churn_probability) is
    added (prediction drift; the column is declared numerical and is not part of the drift share);
    ``prediction_scope`` restricts that comparison (and the means) to some rows of each month."""
    from evidently import Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset, DataSummaryPreset

    limit = validate_threshold(threshold)
    validate_frames(ref, cur, as_of_ref, as_of_cur)
    ref_day, cur_day = _as_of_str(as_of_ref, "ref"), _as_of_str(as_of_cur, "cur")
    out_dir = Path(report_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, json_path, summary_path = report_paths(out_dir, ref_day, cur_day)

    started = time.perf_counter()
    missing_labels = tuple(day for day, df in ((ref_day, ref), (cur_day, cur)) if LABEL not in df.columns)
    with_label = not missing_labels
    with_prediction = PREDICTION in ref.columns and PREDICTION in cur.columns
    ref_scope = (
        np.ones(len(ref), dtype=bool)
        if prediction_scope is None
        else np.asarray(prediction_scope.reference, dtype=bool)
    )
    cur_scope = (
        np.ones(len(cur), dtype=bool) if prediction_scope is None else np.asarray(prediction_scope.current, dtype=bool)
    )
    if with_prediction and (len(ref_scope) != len(ref) or len(cur_scope) != len(cur)):
        raise DriftInputError("prediction_scope masks must have one entry per row of each frame")
    if with_prediction and not (ref_scope.any() and cur_scope.any()):
        raise DriftInputError("prediction_scope selects no row in one of the months")
    if with_label and target is None:
        target = compute_target_drift(ref, cur)
    elif not with_label:
        target = None
    unmeasured = unmeasured_feature_drifts(ref, cur, ref_day, cur_day)
    for fd in unmeasured.values():
        log.warning(
            "event=drift_feature_unmeasured feature=%s as_of_ref=%s as_of_cur=%s drifted=%s reason=%r",
            fd.feature, ref_day, cur_day, fd.drifted, fd.note,
        )  # fmt: skip
    measured = [f for f in FEATURES if f not in unmeasured]
    exclude = list(unmeasured)
    definition = _data_definition(with_label, with_prediction, exclude)
    metrics: list[Any] = [DataSummaryPreset()]
    if measured:
        # columns=measured: without it the preset also counts every other declared
        # numerical/categorical column (churn_label, churn_probability) -> 1/15 instead of 1/14.
        metrics.append(DataDriftPreset(columns=measured, drift_share=limit))
    if with_label:
        metrics.append(ValueDrift(column=LABEL))
    if with_prediction:
        metrics.append(ValueDrift(column=PREDICTION))
    # include_tests: needed for the per-column drift verdicts (ValueDrift tests) read below.
    report = Report(metrics, include_tests=True)
    compared = sample.describe() if sample is not None else f"all rows ({len(ref):,} vs {len(cur):,})"
    with _quiet_evidently():
        snapshot = report.run(
            name=f"StreamFlow drift {ref_day} vs {cur_day}: {compared}",
            metadata={"sample": json.dumps(sample.as_dict()) if sample is not None else "none", "compared": compared},
            tags=["sampled" if sample is not None and sample.sampled else "all-rows"],
            reference_data=Dataset.from_pandas(
                _to_evidently_frame(ref, with_label, with_prediction, ref_scope, exclude), data_definition=definition
            ),
            current_data=Dataset.from_pandas(
                _to_evidently_frame(cur, with_label, with_prediction, cur_scope, exclude), data_definition=definition
            ),
        )
        summary = snapshot.dict()
        _share, measured_count = extract_drifted_columns(summary, len(measured)) if measured else (0.0, 0)
        drifts = {
            **extract_value_drifts(
                summary, [*measured, *([LABEL] if with_label else []), *([PREDICTION] if with_prediction else [])]
            ),
            **unmeasured,
        }
        feature_drifts = tuple(drifts[f] for f in FEATURES)
        if sum(drifts[f].drifted for f in measured) != measured_count:
            raise DriftReportError(
                f"DriftedColumnsCount count={measured_count} disagrees with the per-feature drift tests "
                f"({[f for f in measured if drifts[f].drifted]})"
            )
        count = sum(f.drifted for f in feature_drifts)  # measured by Evidently + decided above
        share = count / len(FEATURES)
        atomic_write(html_path, snapshot.save_html, mode=PRIVATE_MODE)
        atomic_write(json_path, snapshot.save_json, mode=PRIVATE_MODE)

    result = DriftResult(
        as_of_ref=ref_day,
        as_of_cur=cur_day,
        drift_share=share,
        drifted_count=count,
        feature_drifts=feature_drifts,
        target=target,
        target_value_drift=drifts[LABEL].score if with_label else math.nan,
        target_value_drift_method=drifts[LABEL].method if with_label else None,
        threshold=limit,
        decision=decide_action(share, limit),
        report_html=html_path,
        report_json=json_path,
        summary_json=summary_path,
        n_ref=sample.reference.of if sample is not None else len(ref),
        n_cur=sample.current.of if sample is not None else len(cur),
        generated_at=datetime.now(UTC),
        elapsed_seconds=time.perf_counter() - started,
        prediction=(
            PredictionDrift(
                method=drifts[PREDICTION].method,
                score=drifts[PREDICTION].score,
                threshold=drifts[PREDICTION].threshold,
                drifted=drifts[PREDICTION].drifted,
                ref_mean=float(ref[PREDICTION][ref_scope].mean()),
                cur_mean=float(cur[PREDICTION][cur_scope].mean()),
                population="month" if prediction_scope is None else prediction_scope.population,
                n_ref=int(ref_scope.sum()),
                n_cur=int(cur_scope.sum()),
            )
            if with_prediction
            else None
        ),
        labels_missing=missing_labels,
        sample=sample,
    )
    atomic_write_text(summary_path, json.dumps(result.summary(), indent=2, allow_nan=False) + "\n", mode=PRIVATE_MODE)
    return result
