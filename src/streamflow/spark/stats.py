"""Drift statistics that merge, and Evidently's drift scores computed from them (pure numpy/scipy).

Each side (reference, current) of a column is summarised by counts that add up across partitions:

* :class:`ValueCounts` — the exact count of every distinct non-null value, and the null count
  (categorical columns, flags, the label, and numerical columns with a bounded number of values);
* :class:`BinnedCounts` — counts on fixed bin edges chosen from the reference (plus the two sides'
  range), and the null count (high-cardinality numerical columns);
* :class:`Moments` — count, mean and M2 (Chan et al.'s parallel update), for the reference's
  standard deviation.

Two summaries of the same column merge by adding counts (``merge``); the scores are then computed
once on the merged counts, the way Evidently 0.7.23 computes them on raw values
(``evidently/legacy/calculations/stattests``), for a reference of more than 1,000 rows:

* numerical column with more than 5 distinct values (both sides): **Wasserstein distance
  (normed)** — ``scipy.stats.wasserstein_distance(ref, cur) / max(std(ref), 0.001)``, threshold
  0.1. From exact value counts this is the same statistic (the CDFs of the counts are the CDFs
  of the samples); from bins it is approximated with CDFs that are exact at every bin edge and
  linear inside a bin (:func:`wasserstein_from_bins`).
* numerical column with at most 5 distinct values, and every categorical column:
  **Jensen-Shannon distance** of the value shares (natural log), threshold 0.1 — always exact.
* **PSI** (Evidently's ``psi``; not one of the defaults, reported alongside): shares on
  Evidently's bins — the values themselves when the reference has at most 20 distinct values,
  else Sturges' equal-width bins over both sides — with Evidently's replacement of empty bins.

Missing values are dropped first (Evidently's ``dropna``); the scores use the non-null rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats as scipy_stats
from scipy.spatial import distance

from streamflow.core.errors import InputError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
ColumnKind = Literal["numerical", "categorical"]

# Evidently's default tests: their display names (the `method` of a ValueDrift) and thresholds.
WASSERSTEIN = "Wasserstein distance (normed)"
JENSEN_SHANNON = "Jensen-Shannon distance"
PSI = "PSI"
DEFAULT_THRESHOLD = 0.1
SMALL_SAMPLE_ROWS = 1000  # at or below: Evidently's small-sample tests (K-S, chi-square, Z), not implemented here
FEW_VALUES = 5  # numerical columns with at most this many distinct values are compared as categories
PSI_VALUE_BINS = 20  # PSI bins on the values themselves up to this many distinct reference values
WASSERSTEIN_MIN_NORM = 0.001


class SmallReferenceError(InputError, ValueError):
    """A reference too small for the mergeable tests (Evidently uses exact small-sample tests there)."""


def evidently_defaults() -> dict[str, tuple[str, float]]:
    """Display name and default threshold of the three tests, read from the installed Evidently
    (so a change there shows up as a failing test, not a silent difference)."""
    from evidently.legacy.calculations.stattests import (
        jensenshannon_stat_test,
        psi_stat_test,
        wasserstein_stat_test,
    )

    return {
        t.name: (t.display_name, float(t.default_threshold))
        for t in (wasserstein_stat_test, jensenshannon_stat_test, psi_stat_test)
    }


# --------------------------------------------------------------------------- the summaries
@dataclass(frozen=True)
class ValueCounts:
    """Distinct non-null values (sorted) with their counts, and the number of nulls."""

    values: npt.NDArray[Any]
    counts: IntArray
    nulls: int = 0

    @classmethod
    def of(
        cls, values: Sequence[Any] | npt.NDArray[Any], counts: Sequence[int] | IntArray, nulls: int = 0
    ) -> ValueCounts:
        """From (value, count) pairs in any order, values possibly repeated (they are added up)."""
        v = np.asarray(values)
        c = np.asarray(counts, dtype=np.int64)
        if v.shape != c.shape or v.ndim != 1:
            raise ValueError(f"values and counts must be 1-d of equal length, got {v.shape} and {c.shape}")
        if len(v) == 0:
            return cls(v, c, int(nulls))
        uniq, inverse = np.unique(v, return_inverse=True)
        summed = np.zeros(len(uniq), dtype=np.int64)
        np.add.at(summed, inverse, c)
        keep = summed > 0
        return cls(uniq[keep], summed[keep], int(nulls))

    @classmethod
    def from_sample(cls, sample: Sequence[Any] | npt.NDArray[Any]) -> ValueCounts:
        """From raw values (None / NaN are the nulls)."""
        arr = np.asarray(sample, dtype=object)
        null = np.array([_is_null(x) for x in arr], dtype=bool)
        present = arr[~null]
        if len(present) and all(isinstance(x, int | float | np.integer | np.floating) for x in present):
            present = present.astype(np.float64)
        uniq, counts = np.unique(present, return_counts=True) if len(present) else (present, np.zeros(0, np.int64))
        return cls(uniq, counts.astype(np.int64), int(null.sum()))

    @property
    def n(self) -> int:
        """Non-null rows."""
        return int(self.counts.sum())

    @property
    def n_unique(self) -> int:
        return len(self.values)

    def merge(self, other: ValueCounts) -> ValueCounts:
        return ValueCounts.of(
            np.concatenate([self.values, other.values]),
            np.concatenate([self.counts, other.counts]),
            self.nulls + other.nulls,
        )

    def std(self) -> float:
        """Population standard deviation of the non-null values (numpy's ``np.std``)."""
        x = self.values.astype(np.float64)
        n = self.n
        mean = float(np.dot(x, self.counts) / n)
        return math.sqrt(float(np.dot(self.counts, (x - mean) ** 2)) / n)


def _is_null(x: Any) -> bool:
    return x is None or (isinstance(x, float | np.floating) and math.isnan(x))


@dataclass(frozen=True)
class BinnedCounts:
    """Counts of the non-null values on ``edges`` (numpy's histogram bins: ``[e_i, e_i+1)``, the
    last one closed), and the number of nulls. Every value must lie within the outer edges."""

    edges: FloatArray
    counts: IntArray
    nulls: int = 0

    def __post_init__(self) -> None:
        if len(self.edges) != len(self.counts) + 1:
            raise ValueError(f"{len(self.edges)} edges need {len(self.edges) - 1} counts, got {len(self.counts)}")
        if np.any(np.diff(self.edges) <= 0):
            raise ValueError("bin edges must increase strictly")

    @classmethod
    def from_sample(cls, sample: Sequence[float] | FloatArray, edges: FloatArray) -> BinnedCounts:
        x = np.asarray(sample, dtype=np.float64)
        null = np.isnan(x)
        counts, _ = np.histogram(x[~null], bins=edges)
        return cls(np.asarray(edges, dtype=np.float64), counts.astype(np.int64), int(null.sum()))

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def merge(self, other: BinnedCounts) -> BinnedCounts:
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("binned counts merge only on the same edges")
        return BinnedCounts(self.edges, self.counts + other.counts, self.nulls + other.nulls)


@dataclass(frozen=True)
class Moments:
    """Count, mean and sum of squared deviations of the non-null values (mergeable)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def from_sample(cls, sample: Sequence[float] | FloatArray) -> Moments:
        x = np.asarray(sample, dtype=np.float64)
        x = x[~np.isnan(x)]
        if len(x) == 0:
            return cls()
        mean = float(x.mean())
        return cls(len(x), mean, float(((x - mean) ** 2).sum()))

    def merge(self, other: Moments) -> Moments:
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        return Moments(n, self.mean + delta * other.n / n, self.m2 + other.m2 + delta * delta * self.n * other.n / n)

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.n) if self.n else math.nan


# --------------------------------------------------------------------------- Evidently's choice
def choose_method(kind: ColumnKind, n_reference: int, n_unique: int) -> str:
    """The test Evidently 0.7.23 picks by default (``_get_default_stattest``) for a reference of
    ``n_reference`` non-null rows and ``n_unique`` distinct non-null values over both sides."""
    if n_reference <= SMALL_SAMPLE_ROWS:
        raise SmallReferenceError(
            f"the reference has {n_reference} non-null rows: at or below {SMALL_SAMPLE_ROWS:,}, Evidently uses exact "
            "small-sample tests (K-S, chi-square, Z) that the Spark engine does not compute; use the local engine"
        )
    if kind == "categorical":
        return JENSEN_SHANNON
    return JENSEN_SHANNON if n_unique <= FEW_VALUES else WASSERSTEIN


# --------------------------------------------------------------------------- the scores
def _shares(ref: ValueCounts, cur: ValueCounts) -> tuple[FloatArray, FloatArray]:
    keys = np.union1d(ref.values, cur.values)
    r = np.zeros(len(keys), dtype=np.int64)
    c = np.zeros(len(keys), dtype=np.int64)
    r[np.searchsorted(keys, ref.values)] = ref.counts
    c[np.searchsorted(keys, cur.values)] = cur.counts
    return r / ref.n, c / cur.n


def jensenshannon_from_counts(ref: ValueCounts, cur: ValueCounts) -> float:
    """Evidently's Jensen-Shannon distance (natural log) of the value shares."""
    p, q = _shares(ref, cur)
    return float(distance.jensenshannon(p, q))


def wasserstein_from_counts(ref: ValueCounts, cur: ValueCounts) -> float:
    """Evidently's normed Wasserstein distance, from exact value counts (the same statistic)."""
    w = scipy_stats.wasserstein_distance(
        ref.values.astype(np.float64), cur.values.astype(np.float64), ref.counts, cur.counts
    )
    return float(w) / max(ref.std(), WASSERSTEIN_MIN_NORM)


def wasserstein_from_bins(ref: BinnedCounts, cur: BinnedCounts, reference_std: float) -> float:
    """Normed Wasserstein distance from counts on common bins: ∫|F_ref − F_cur| with both CDFs
    exact at every edge and linear inside a bin (each bin's values taken as evenly spread).

    Error bound: inside bin j each true CDF and its interpolation both run between the same two
    edge values, so they differ by at most the bin's share on that side, and |error| ≤
    Σ_j width_j · (p_ref,j + p_cur,j) / std — reported by :func:`wasserstein_bins_error_bound`."""
    if not np.array_equal(ref.edges, cur.edges):
        raise ValueError("both sides must be counted on the same edges")
    d = np.concatenate([[0.0], np.cumsum(ref.counts) / ref.n - np.cumsum(cur.counts) / cur.n])
    d0, d1 = d[:-1], d[1:]
    width = np.diff(ref.edges)
    same_sign = d0 * d1 >= 0
    area = np.where(
        same_sign,
        width * (np.abs(d0) + np.abs(d1)) / 2.0,
        width * (d0 * d0 + d1 * d1) / (2.0 * np.where(same_sign, 1.0, np.abs(d0) + np.abs(d1))),
    )
    return float(area.sum()) / max(reference_std, WASSERSTEIN_MIN_NORM)


def wasserstein_bins_error_bound(ref: BinnedCounts, cur: BinnedCounts, reference_std: float) -> float:
    """An upper bound of |:func:`wasserstein_from_bins` − the exact normed distance|."""
    width = np.diff(ref.edges)
    bound = float((width * (ref.counts / ref.n + cur.counts / cur.n)).sum())
    return bound / max(reference_std, WASSERSTEIN_MIN_NORM)


def _fill_zeroes(shares: FloatArray) -> FloatArray:
    """Evidently's ``get_binned_data(..., feel_zeroes=True)``."""
    out = shares.copy()
    smallest = float(out[out != 0].min())
    np.place(out, out == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001)
    return out


def psi_from_shares(ref_shares: FloatArray, cur_shares: FloatArray) -> float:
    r, c = _fill_zeroes(ref_shares), _fill_zeroes(cur_shares)
    return float(np.sum((r - c) * np.log(r / c)))


def sturges_edges(low: float, high: float, n: int, integer: bool) -> FloatArray:
    """``np.histogram_bin_edges(values, "sturges")`` of ``n`` values spanning [low, high]
    (``integer``: the values are of an integer dtype — numpy's bins are then at least 1 wide)."""
    first, last = float(low), float(high)
    width = (high - low) / (np.log2(n) + 1.0)
    if first == last:
        first, last = first - 0.5, last + 0.5
    if width:
        if integer and width < 1:
            width = 1
        n_bins = int(np.ceil((last - first) / width))
    else:
        n_bins = 1
    return np.linspace(first, last, n_bins + 1, endpoint=True, dtype=np.float64)


def psi_uses_value_bins(kind: ColumnKind, ref: ValueCounts | None) -> bool:
    """Whether Evidently's PSI bins on the values (categorical, or ≤ 20 distinct reference values)."""
    return kind == "categorical" or (ref is not None and ref.n_unique <= PSI_VALUE_BINS)


def psi_from_counts(kind: ColumnKind, ref: ValueCounts, cur: ValueCounts, integer: bool = False) -> float:
    """Evidently's PSI from exact value counts."""
    if psi_uses_value_bins(kind, ref):
        p, q = _shares(ref, cur)
        return psi_from_shares(p, q)
    low = float(min(ref.values.min(), cur.values.min()))
    high = float(max(ref.values.max(), cur.values.max()))
    edges = sturges_edges(low, high, ref.n + cur.n, integer)
    r, _ = np.histogram(ref.values.astype(np.float64), bins=edges, weights=ref.counts)
    c, _ = np.histogram(cur.values.astype(np.float64), bins=edges, weights=cur.counts)
    return psi_from_shares(r / ref.n, c / cur.n)


def psi_from_bins(ref: BinnedCounts, cur: BinnedCounts) -> float:
    """PSI from counts on Sturges' edges (:func:`sturges_edges` of both sides' range)."""
    return psi_from_shares(ref.counts / ref.n, cur.counts / cur.n)


# --------------------------------------------------------------------------- one column's verdict
@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift, as Evidently's ValueDrift reports it, plus how it was computed."""

    column: str
    kind: ColumnKind
    method: str
    score: float
    threshold: float
    statistic: Literal["exact", "binned"]  # value counts, or bins (Wasserstein only)
    n_reference: int
    n_current: int
    nulls_reference: int
    nulls_current: int
    n_unique: int | None  # distinct non-null values over both sides (None: not counted, binned)
    psi: float | None = None
    error_bound: float = 0.0  # binned Wasserstein: upper bound of |score − exact score|

    @property
    def drifted(self) -> bool:
        return self.score >= self.threshold


def score_exact(
    column: str, kind: ColumnKind, ref: ValueCounts, cur: ValueCounts, *, integer: bool = False
) -> ColumnDrift:
    """Evidently's default test on exact value counts (and PSI alongside)."""
    _non_empty(column, ref, cur)
    n_unique = len(np.union1d(ref.values, cur.values))
    method = choose_method(kind, ref.n, n_unique)
    score = jensenshannon_from_counts(ref, cur) if method == JENSEN_SHANNON else wasserstein_from_counts(ref, cur)
    return ColumnDrift(
        column=column,
        kind=kind,
        method=method,
        score=score,
        threshold=DEFAULT_THRESHOLD,
        statistic="exact",
        n_reference=ref.n,
        n_current=cur.n,
        nulls_reference=ref.nulls,
        nulls_current=cur.nulls,
        n_unique=n_unique,
        psi=psi_from_counts(kind, ref, cur, integer),
    )


def score_binned(
    column: str,
    ref: BinnedCounts,
    cur: BinnedCounts,
    reference_std: float,
    *,
    psi_ref: BinnedCounts | None = None,
    psi_cur: BinnedCounts | None = None,
) -> ColumnDrift:
    """Normed Wasserstein from bin counts: a numerical column known to have more distinct values
    than the exact path counts (so more than 5: Evidently's choice is Wasserstein)."""
    if ref.n == 0 or cur.n == 0:
        side = "reference" if ref.n == 0 else "current"
        raise InputError(f"column {column!r} has no non-null value in the {side} month: no drift can be computed")
    choose_method("numerical", ref.n, FEW_VALUES + 1)
    return ColumnDrift(
        column=column,
        kind="numerical",
        method=WASSERSTEIN,
        score=wasserstein_from_bins(ref, cur, reference_std),
        threshold=DEFAULT_THRESHOLD,
        statistic="binned",
        n_reference=ref.n,
        n_current=cur.n,
        nulls_reference=ref.nulls,
        nulls_current=cur.nulls,
        n_unique=None,
        psi=psi_from_bins(psi_ref, psi_cur) if psi_ref is not None and psi_cur is not None else None,
        error_bound=wasserstein_bins_error_bound(ref, cur, reference_std),
    )


def _non_empty(column: str, ref: ValueCounts, cur: ValueCounts) -> None:
    for side, vc in (("reference", ref), ("current", cur)):
        if vc.n == 0:
            raise InputError(f"column {column!r} has no non-null value in the {side} month: no drift can be computed")


def drift_bin_edges(reference_quantiles: Sequence[float], low: float, high: float, bins: int) -> FloatArray:
    """The bins of a high-cardinality column: the reference's quantiles (bins of equal reference
    mass) merged with an equal-width grid of ``bins`` over both sides' range [low, high] (so no
    bin is wider than (high − low) / bins, wherever the current month's values fall)."""
    grid = np.linspace(float(low), float(high), int(bins) + 1)
    q = np.asarray([x for x in reference_quantiles if low <= x <= high], dtype=np.float64)
    edges = np.unique(np.concatenate([grid, q]))
    if len(edges) < 2:
        edges = np.array([float(low) - 0.5, float(high) + 0.5])
    return edges
