"""Label-free performance estimation: NannyML's CBPE (confidence-based performance
estimation) for the binary churn model, as a small pure module (numpy + scikit-learn,
no I/O).

Before a month's labels exist, the model's own probabilities — once calibrated — say
how often it should be right: a prediction scored ``p`` (calibrated) is a true positive
with probability ``p`` when predicted positive, a true negative with probability
``1 - p`` when predicted negative. Summing those expectations gives an expected
confusion matrix, hence expected F1 / accuracy / precision / recall; ROC AUC comes from
the expected TPR / FPR curves along the model's ranking. This holds under covariate
shift (P(y | x) unchanged); concept drift is invisible to it by construction — the
realized metrics, once labels arrive, are what catch that.

This is a port of ``nannyml==0.13.1`` (Apache-2.0), binary classification, one chunk:

* calibration (``nannyml/calibration.py``): :func:`needs_calibration` decides whether an
  isotonic calibrator lowers the expected calibration error (10 stratified 90/10 shuffle
  splits with ``random_state=42``, ECE over 10 equal-count bins of the pooled test
  folds; never when the reference has one class or AUC > 0.999); if so,
  ``IsotonicRegression(out_of_bounds="clip", increasing=True)`` is fitted on the whole
  reference set (here: the training month's validation split) and kept as its knots;
* estimators (``nannyml/performance_estimation/confidence_based/metrics.py``):
  ``estimate_roc_auc``, ``estimate_f1``, ``estimate_accuracy``, ``estimate_precision``,
  ``estimate_recall`` — the same formulas, the same operation order;
* sampling error (``nannyml/sampling_error/binary_classification.py``): the reference
  components (a standard deviation and a fraction) are computed at fit time and the
  error of an estimate on ``n`` rows is ``std / sqrt(n * fraction)``.

``tests/unit/test_cbpe.py`` proves equality with ``nannyml.CBPE`` itself (the
``reference`` extra). Predictions are ``proba >= threshold`` (0.5: the model's
threshold in training and serving). Unlike NannyML, rows with NaN are rejected rather
than silently dropped.

Usage::

    calibration = CBPECalibration.fit(val_proba, val_labels)   # at training time
    json.dumps(calibration.to_dict())                          # store it with the model
    estimate(CBPECalibration.from_dict(stored), month_proba)   # {"auc": …, "f1": …, "n": …}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import auc, roc_auc_score
from sklearn.model_selection import StratifiedShuffleSplit

__all__ = [
    "DEFAULT_THRESHOLD",
    "FORMAT",
    "METRICS",
    "CBPECalibration",
    "SupportsPredictProba",
    "calibration_from_validation",
    "estimate",
    "estimate_accuracy",
    "estimate_f1",
    "estimate_precision",
    "estimate_recall",
    "estimate_roc_auc",
    "needs_calibration",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DEFAULT_THRESHOLD = 0.5
METRICS: tuple[str, ...] = ("auc", "f1", "accuracy", "precision", "recall")
FORMAT = "streamflow.cbpe/1"

# NannyML's needs_calibration defaults.
_ECE_BINS = 10
_CALIBRATION_SPLITS = 10
_CALIBRATION_TEST_SIZE = 0.1
_CALIBRATION_SEED = 42
_AUC_ROUND_DECIMALS = 5


class SupportsPredictProba(Protocol):
    """Anything with scikit-learn's ``predict_proba`` (a Pipeline, a classifier, the ONNX wrapper)."""

    def predict_proba(self, X: Any, /) -> Any: ...


# ---- input checks -------------------------------------------------------------------------------


def _probabilities(values: Any, what: str) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one probability per row (1-d), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what} is empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contains {int((~np.isfinite(arr)).sum())} NaN/inf value(s)")
    if arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError(f"{what} must lie in [0, 1], got min={arr.min():g} max={arr.max():g}")
    return arr


def _labels(values: Any, n: int) -> IntArray:
    raw = np.asarray(values)
    if raw.ndim != 1 or raw.size != n:
        raise ValueError(f"reference labels must be 1-d with one label per probability ({n}), got shape {raw.shape}")
    if raw.dtype.kind == "f" and not np.isfinite(raw).all():
        raise ValueError("reference labels contain NaN")
    try:
        ints = raw.astype(np.int64)
    except (TypeError, ValueError):
        raise ValueError(f"reference labels must be 0/1, got dtype {raw.dtype}") from None
    if not np.array_equal(ints, raw) or not np.isin(ints, (0, 1)).all():
        raise ValueError(f"reference labels must be 0/1, got values {np.unique(raw)[:5].tolist()}")
    if ints.min() == ints.max():
        raise ValueError(f"reference labels have a single class ({int(ints[0])}); CBPE needs both to calibrate")
    return ints


def _threshold(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"decision threshold must be a number in (0, 1), got {value!r}")
    return float(value)


def _predictions(proba: FloatArray, threshold: float) -> IntArray:
    return (proba >= threshold).astype(np.int64)


# ---- calibration (nannyml/calibration.py) -------------------------------------------------------


def _isotonic() -> IsotonicRegression:
    return IsotonicRegression(out_of_bounds="clip", increasing=True)


def _bin_index_edges(vector_length: int, bin_count: int) -> list[tuple[int, int]]:
    if vector_length <= 2 * bin_count:
        bin_count = vector_length // 2
        if bin_count < 2:
            raise ValueError(f"CBPE needs more reference rows: {vector_length} calibration test rows make < 2 bins")
    bin_width = vector_length // bin_count
    edges = np.asarray(range(0, vector_length + 1, bin_width))
    edges[-1] = vector_length
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def _expected_calibration_error(labels: Any, proba: Any, bin_index_edges: list[tuple[int, int]]) -> float:
    proba, labels = np.asarray(proba), np.asarray(labels)
    order = proba.argsort()  # numpy's default (unstable) sort, as NannyML: ties land in the same bins
    proba, labels = proba[order], labels[order]
    terms = []
    for left, right in bin_index_edges:
        bin_proba, bin_labels = proba[left:right], labels[left:right]
        weight = len(bin_proba) / len(proba)
        terms.append(weight * abs(np.mean(bin_proba) - np.mean(bin_labels)))
    return float(np.sum(terms))


def needs_calibration(
    labels: Any, proba: Any, *, bin_count: int = _ECE_BINS, split_count: int = _CALIBRATION_SPLITS
) -> bool:
    """NannyML's rule: calibrate iff isotonic regression lowers the expected calibration error
    of the pooled test folds of ``split_count`` stratified 90/10 shuffle splits."""
    y = np.asarray(labels)
    p = np.asarray(proba, dtype=np.float64)
    if len(np.unique(y)) == 1:
        return False
    if roc_auc_score(y, p) > 0.999:
        return False
    splits = StratifiedShuffleSplit(
        n_splits=split_count, test_size=_CALIBRATION_TEST_SIZE, random_state=_CALIBRATION_SEED
    )
    y_test, p_test, calibrated_test = [], [], []
    for train, test in splits.split(p, y):
        fold = _isotonic().fit(p[train], y[train])
        y_test.append(y[test])
        p_test.append(p[test])
        calibrated_test.append(fold.predict(p[test]))
    pooled_y = np.concatenate(y_test)
    pooled_p = np.concatenate(p_test)
    pooled_calibrated = np.concatenate(calibrated_test)
    edges = _bin_index_edges(len(pooled_p), bin_count)
    return _expected_calibration_error(pooled_y, pooled_p, edges) > _expected_calibration_error(
        pooled_y, pooled_calibrated, edges
    )


# ---- sampling-error components (nannyml/sampling_error/binary_classification.py) ----------------


def _auc_sampling_components(labels: IntArray, proba: FloatArray) -> tuple[float, float]:
    y, p = labels, proba
    if np.mean(y) > 0.5:
        y = abs(np.asarray(y) - 1)
        p = 1 - p
    order = np.argsort(p)
    y = y[order]
    rank_order = np.asarray(range(len(p)))
    positive_ranks = y * rank_order
    indexes = np.unique(positive_ranks)[1:]  # NannyML drops rank 0 (also a positive ranked first)
    ser = [index - i for i, index in enumerate(indexes)]
    n_pos = np.sum(y)
    n_neg = len(y) - n_pos
    ser_multi = np.true_divide(ser, n_neg)
    return float(np.std(ser_multi)), float(n_pos / len(y))


def _f1_sampling_components(labels: IntArray, pred: IntArray) -> tuple[float, float]:
    tp = np.ones(int(np.sum((labels == pred) & (pred == 1))))
    fn = np.zeros(int(np.sum((labels != pred) & (pred == 0))))
    fp = np.zeros(int(np.sum((labels != pred) & (pred == 1))))
    tp_fp_fn = np.concatenate([tp, fn, fp])
    if tp_fp_fn.size == 0:
        return math.nan, 0.0
    correcting_factor = len(tp_fp_fn) / ((len(fn) + len(fp)) * 0.5 + len(tp))
    return float(np.std(tp_fp_fn * correcting_factor)), len(tp_fp_fn) / len(pred)


def _precision_sampling_components(labels: IntArray, pred: IntArray) -> tuple[float, float]:
    tp = np.ones(int(np.sum((labels == pred) & (pred == 1))))
    fp = np.zeros(int(np.sum((labels != pred) & (pred == 1))))
    return float(np.std(np.concatenate([tp, fp]))), float(np.sum(pred) / len(pred))


def _recall_sampling_components(labels: IntArray, pred: IntArray) -> tuple[float, float]:
    tp = np.ones(int(np.sum((labels == pred) & (pred == 1))))
    fn = np.zeros(int(np.sum((labels != pred) & (pred == 0))))
    return float(np.std(np.concatenate([tp, fn]))), float(np.sum(labels) / len(pred))


def _accuracy_sampling_components(labels: IntArray, pred: IntArray) -> tuple[float, float]:
    # NannyML divides by sqrt(n) for accuracy; a fraction of exactly 1.0 gives the same number.
    return float(np.std((labels == pred).astype(int))), 1.0


def _sampling_error(components: tuple[float, float], n: int) -> float:
    std, fraction = components
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(std / np.sqrt(n * fraction))


# ---- estimators (nannyml/performance_estimation/confidence_based/metrics.py) --------------------


def estimate_roc_auc(calibrated_proba: Any, model_proba: Any) -> float:
    """Expected ROC AUC: rank by the model's score, accumulate calibrated probabilities as
    expected true positives (and ``1 - p`` as false positives), area under the expected curve.
    NaN when the expected positives or negatives are 0."""
    calibrated = np.asarray(calibrated_proba)
    model = np.asarray(model_proba)
    order = np.argsort(model)[::-1]
    calibrated = calibrated[order]
    with np.errstate(divide="ignore", invalid="ignore"):
        cum_tp = np.cumsum(calibrated)
        cum_fp = 1 + np.arange(len(calibrated)) - cum_tp
        tps = np.round(np.concatenate(([0.0], cum_tp)), _AUC_ROUND_DECIMALS)
        fps = np.round(np.concatenate(([0.0], cum_fp)), _AUC_ROUND_DECIMALS)
        tpr = tps / tps[-1]
        fpr = fps / fps[-1]
        if not (np.isfinite(tpr).all() and np.isfinite(fpr).all()):
            return math.nan
        return float(auc(fpr, tpr))


def _expected_cells(pred: Any, calibrated_proba: Any) -> tuple[float, float, float, float]:
    pred, p = np.asarray(pred), np.asarray(calibrated_proba)
    tp = np.sum(np.where(pred == 1, p, 0))
    fp = np.sum(np.where(pred == 1, 1 - p, 0))
    fn = np.sum(np.where(pred == 0, p, 0))
    tn = np.sum(np.where(pred == 0, 1 - p, 0))
    return float(tp), float(fp), float(fn), float(tn)


def estimate_f1(pred: Any, calibrated_proba: Any) -> float:
    """Expected F1 = TP / (TP + (FP + FN) / 2) of the expected confusion matrix (0 if empty)."""
    tp, fp, fn, _ = _expected_cells(pred, calibrated_proba)
    denominator = tp + 0.5 * (fp + fn)
    return tp / denominator if denominator != 0 else 0.0


def estimate_precision(pred: Any, calibrated_proba: Any) -> float:
    """Expected precision = TP / (TP + FP) (0 if nothing is predicted positive)."""
    tp, fp, _, _ = _expected_cells(pred, calibrated_proba)
    denominator = tp + fp
    return tp / denominator if denominator != 0 else 0.0


def estimate_recall(pred: Any, calibrated_proba: Any) -> float:
    """Expected recall = TP / (TP + FN) (0 if no positive is expected)."""
    tp, _, fn, _ = _expected_cells(pred, calibrated_proba)
    denominator = tp + fn
    return tp / denominator if denominator != 0 else 0.0


def estimate_accuracy(pred: Any, calibrated_proba: Any) -> float:
    """Expected accuracy = (TP + TN) / n."""
    tp, _, _, tn = _expected_cells(pred, calibrated_proba)
    return (tp + tn) / len(np.asarray(pred))


# ---- the fitted calibration ---------------------------------------------------------------------


def _float_or_none(x: float) -> float | None:
    return None if math.isnan(x) else x


def _float_from(x: Any) -> float:
    return math.nan if x is None else float(x)


@dataclass(frozen=True)
class CBPECalibration:
    """What CBPE keeps from the reference month's validation split: whether to calibrate, the
    isotonic calibrator's knots, the decision threshold and the sampling-error components.

    ``x_thresholds`` / ``y_thresholds`` are scikit-learn's ``IsotonicRegression.X_thresholds_``
    / ``y_thresholds_`` (empty when no calibration is needed); calibrating a probability is
    clipping it to ``[x_thresholds[0], x_thresholds[-1]]`` and interpolating linearly — what
    ``IsotonicRegression(out_of_bounds="clip").predict`` does.
    """

    calibrated: bool
    x_thresholds: tuple[float, ...]
    y_thresholds: tuple[float, ...]
    threshold: float
    n_reference: int
    reference_positive_rate: float
    sampling_error_components: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.x_thresholds) != len(self.y_thresholds):
            raise ValueError("CBPE calibration: x_thresholds and y_thresholds differ in length")
        if self.calibrated and not self.x_thresholds:
            raise ValueError("CBPE calibration: calibrated=True needs the isotonic knots")
        if not self.calibrated and self.x_thresholds:
            raise ValueError("CBPE calibration: calibrated=False must not carry isotonic knots")
        if list(self.x_thresholds) != sorted(self.x_thresholds) or list(self.y_thresholds) != sorted(self.y_thresholds):
            raise ValueError("CBPE calibration: isotonic knots must be non-decreasing")
        _threshold(self.threshold)
        missing = [m for m in METRICS if m not in self.sampling_error_components]
        if missing:
            raise ValueError(f"CBPE calibration: sampling-error components missing for {', '.join(missing)}")
        object.__setattr__(self, "sampling_error_components", MappingProxyType(dict(self.sampling_error_components)))

    @classmethod
    def fit(
        cls, reference_proba: Any, reference_labels: Any, *, threshold: float = DEFAULT_THRESHOLD
    ) -> CBPECalibration:
        """Fit on the reference set (the training month's validation split): the model's
        probabilities of the positive class and the true 0/1 labels."""
        proba = _probabilities(reference_proba, "reference probabilities")
        labels = _labels(reference_labels, len(proba))
        limit = _threshold(threshold)
        pred = _predictions(proba, limit)
        components = {
            "auc": _auc_sampling_components(labels, proba),
            "f1": _f1_sampling_components(labels, pred),
            "accuracy": _accuracy_sampling_components(labels, pred),
            "precision": _precision_sampling_components(labels, pred),
            "recall": _recall_sampling_components(labels, pred),
        }
        calibrated = needs_calibration(labels, proba)
        xs: tuple[float, ...] = ()
        ys: tuple[float, ...] = ()
        if calibrated:
            iso = _isotonic().fit(proba, labels)
            xs = tuple(float(v) for v in iso.X_thresholds_)
            ys = tuple(float(v) for v in iso.y_thresholds_)
        return cls(
            calibrated=calibrated,
            x_thresholds=xs,
            y_thresholds=ys,
            threshold=limit,
            n_reference=len(proba),
            reference_positive_rate=float(labels.mean()),
            sampling_error_components=components,
        )

    def calibrate(self, proba: Any) -> FloatArray:
        """The calibrated probabilities (unchanged when no calibration is needed)."""
        p = _probabilities(proba, "probabilities")
        if not self.calibrated:
            return p
        xs = np.asarray(self.x_thresholds, dtype=np.float64)
        ys = np.asarray(self.y_thresholds, dtype=np.float64)
        return np.interp(np.clip(p, xs[0], xs[-1]), xs, ys)

    def to_dict(self) -> dict[str, Any]:
        """A small JSON-ready dict (floats round-trip exactly through ``json``; NaN → null)."""
        return {
            "format": FORMAT,
            "calibrated": self.calibrated,
            "threshold": self.threshold,
            "n_reference": self.n_reference,
            "reference_positive_rate": self.reference_positive_rate,
            "x_thresholds": list(self.x_thresholds),
            "y_thresholds": list(self.y_thresholds),
            "sampling_error_components": {
                m: [_float_or_none(s), _float_or_none(f)] for m, (s, f) in self.sampling_error_components.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CBPECalibration:
        """The inverse of :meth:`to_dict`; raises ValueError naming what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError(f"CBPE calibration must be a mapping, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise ValueError(f"CBPE calibration: format must be {FORMAT!r}, got {data.get('format')!r}")
        try:
            components = {
                str(m): (_float_from(v[0]), _float_from(v[1])) for m, v in data["sampling_error_components"].items()
            }
            return cls(
                calibrated=bool(data["calibrated"]),
                x_thresholds=tuple(float(v) for v in data["x_thresholds"]),
                y_thresholds=tuple(float(v) for v in data["y_thresholds"]),
                threshold=float(data["threshold"]),
                n_reference=int(data["n_reference"]),
                reference_positive_rate=float(data["reference_positive_rate"]),
                sampling_error_components=components,
            )
        except KeyError as exc:
            raise ValueError(f"CBPE calibration: missing key {exc.args[0]!r}") from None
        except (TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"CBPE calibration: malformed value ({exc})") from None


def estimate(calibration: CBPECalibration, proba: Any) -> dict[str, float]:
    """CBPE estimates of the model on an unlabelled set from its probabilities of the positive class.

    Keys: ``auc``, ``f1``, ``accuracy``, ``precision``, ``recall`` (the estimates),
    ``<metric>_sampling_error`` (NannyML's sampling-error estimate for that many rows;
    its ±3σ band is NannyML's confidence band), ``expected_positive_rate`` (mean calibrated
    probability) and ``n`` (rows, an int).
    """
    model_proba = _probabilities(proba, "probabilities")
    calibrated = calibration.calibrate(model_proba)
    pred = _predictions(model_proba, calibration.threshold)
    n = len(model_proba)
    out: dict[str, float] = {
        "auc": estimate_roc_auc(calibrated, model_proba),
        "f1": estimate_f1(pred, calibrated),
        "accuracy": estimate_accuracy(pred, calibrated),
        "precision": estimate_precision(pred, calibrated),
        "recall": estimate_recall(pred, calibrated),
    }
    for metric in METRICS:
        out[f"{metric}_sampling_error"] = _sampling_error(calibration.sampling_error_components[metric], n)
    out["expected_positive_rate"] = float(np.mean(calibrated))
    out["n"] = n
    return out


def calibration_from_validation(
    model: SupportsPredictProba, X_val: Any, y_val: Any, *, threshold: float = DEFAULT_THRESHOLD
) -> CBPECalibration:
    """:meth:`CBPECalibration.fit` on ``model.predict_proba(X_val)[:, 1]`` and ``y_val``."""
    proba = np.asarray(model.predict_proba(X_val))
    if proba.ndim == 2:
        if proba.shape[1] != 2:
            raise ValueError(f"CBPE is for binary models: predict_proba gave {proba.shape[1]} columns")
        proba = proba[:, 1]
    return CBPECalibration.fit(proba, y_val, threshold=threshold)
