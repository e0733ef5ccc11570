"""Label-free performance estimation (``streamflow.model.cbpe``):

(a) equal to NannyML 0.13.1's own ``CBPE`` (the ``reference`` extra, installed by
    ``make install``; a missing extra FAILS here, it never skips) on synthetic reference /
    analysis sets — calibrated, over- and under-confident, tiny, 10k rows with shift,
    forest-like tied scores, a positive majority — for ROC AUC, F1, accuracy, precision,
    recall, their sampling errors, the calibration decision and the calibrated scores;
(b) properties: for calibrated scores the estimators are the expectation of the realized
    metrics, and an end-to-end estimate lands within sampling noise of the realized metric;
(c) issue 9's scenarios on months made by the project's generator and scored by the
    project's pipeline: planted covariate shift with the churn model unchanged → estimated
    AUC within ±0.03 of realized; planted concept drift (labels changed for a segment, the
    model's features byte-identical) → the estimate does not move, the realized AUC drops.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score
from sklearn.pipeline import Pipeline

from streamflow.core.data_model import FEATURES, LABEL
from streamflow.core.settings import Settings
from streamflow.model.cbpe import (
    FORMAT,
    METRICS,
    CBPECalibration,
    calibration_from_validation,
    estimate,
    estimate_accuracy,
    estimate_f1,
    estimate_precision,
    estimate_recall,
    estimate_roc_auc,
)
from streamflow.seeds import generator
from streamflow.seeds.drift import parse_drift_option
from streamflow.training.pipeline import build_pipeline
from streamflow.training.train import split_dataset
from tests.helpers.data import month_frame

NANNYML_VERSION = "0.13.1"
NANNYML_METRICS = {"auc": "roc_auc", "f1": "f1", "accuracy": "accuracy", "precision": "precision", "recall": "recall"}
EQUAL = 1e-9  # the same formulas in the same order: measured differences are exactly 0.0
pytestmark = pytest.mark.filterwarnings("ignore:The resulting number of chunks is too low:UserWarning")


# ---- (a) equivalence with NannyML -----------------------------------------------------------------


@pytest.fixture(scope="module")
def nannyml() -> Iterator[ModuleType]:
    """NannyML with its usage telemetry (Segment) switched off for the test.

    Importing it runs python-dotenv's ``load_dotenv()``, which copies the first ``.env``
    found above NannyML's install directory — with the venv inside the checkout, the
    checkout's own ``.env`` — into ``os.environ``; keys it adds are removed again so that no
    STREAMFLOW_* setting leaks into later tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NML_DISABLE_USAGE_LOGGING", "1")
        before = set(os.environ)
        try:
            import nannyml
        except ImportError as exc:  # the extra is required: fail, never skip
            pytest.fail(f"nannyml is not installed ({exc}); `make install` installs the 'reference' extra")
        for key in set(os.environ) - before:
            del os.environ[key]
        assert nannyml.__version__ == NANNYML_VERSION, f"the equivalence is proven against {NANNYML_VERSION}"
        yield nannyml


@dataclass(frozen=True)
class NannyResult:
    values: dict[str, float]
    needs_calibration: bool
    calibrated: np.ndarray


def nannyml_cbpe(nml: ModuleType, ref_proba: np.ndarray, ref_labels: np.ndarray, proba: np.ndarray) -> NannyResult:
    """NannyML's binary CBPE with the model's 0.5 threshold as y_pred, one chunk = all of ``proba``."""
    reference = pd.DataFrame(
        {"proba": ref_proba, "pred": (ref_proba >= 0.5).astype(int), "label": ref_labels.astype(int)}
    )
    analysis = pd.DataFrame({"proba": proba, "pred": (proba >= 0.5).astype(int)})
    cbpe = nml.CBPE(
        problem_type="classification_binary",
        y_pred_proba="proba",
        y_pred="pred",
        y_true="label",
        metrics=list(NANNYML_METRICS.values()),
        chunk_number=1,
    )
    cbpe.fit(reference)
    table = cbpe.estimate(analysis).filter(period="analysis").to_df()
    assert len(table) == 1, "one chunk"
    row = table.iloc[0]
    assert (row[("chunk", "start_index")], row[("chunk", "end_index")]) == (0, len(proba) - 1)
    values: dict[str, float] = {}
    for ours, theirs in NANNYML_METRICS.items():
        values[ours] = float(row[(theirs, "value")])
        values[f"{ours}_sampling_error"] = float(row[(theirs, "sampling_error")])
    calibrated = np.asarray(cbpe.calibrator.calibrate(proba)) if cbpe.needs_calibration else proba
    return NannyResult(values, bool(cbpe.needs_calibration), calibrated)


def _expit(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def synthetic_scores(
    rng: np.random.Generator,
    n: int,
    *,
    shift: float = 0.0,
    sharpness: float = 1.0,
    intercept: float = -1.0,
    ticks: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels from a logistic model of one covariate; scores = the true probability with its
    logit scaled by ``sharpness`` (1 calibrated, > 1 over-confident, < 1 under-confident),
    optionally rounded to multiples of 1/ticks (a ``ticks``-tree forest: many ties)."""
    true_p = _expit(1.6 * rng.normal(shift, 1.0, n) + intercept)
    labels = (rng.random(n) < true_p).astype(np.int64)
    proba = _expit(sharpness * np.log(true_p / (1.0 - true_p)))
    if ticks is not None:
        proba = np.round(proba * ticks) / ticks
    return proba, labels


# name: (seed, reference rows, analysis rows, score options, analysis shift, NannyML's calibration decision)
CASES: dict[str, tuple[int, int, int, dict[str, Any], float, bool]] = {
    "calibrated": (0, 3000, 5000, {}, 0.0, True),
    "calibrated-no-isotonic": (2, 3000, 5000, {}, 0.0, False),
    "over-confident-shifted": (1, 3000, 5000, {"sharpness": 2.5}, 0.5, True),
    "under-confident": (1, 3000, 5000, {"sharpness": 0.5}, 0.0, True),
    "small": (0, 60, 40, {"sharpness": 1.5}, 0.0, False),
    "small-isotonic": (1, 60, 40, {"sharpness": 1.5}, 0.0, True),
    "10k-shifted": (0, 10_000, 10_000, {"sharpness": 1.5}, 0.8, True),
    "forest-ties": (0, 5000, 5000, {"ticks": 50}, 0.3, True),
    "positive-majority": (0, 3000, 3000, {"intercept": 1.0}, 0.0, True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_equal_to_nannyml_cbpe(nannyml: ModuleType, case: str) -> None:
    seed, n_ref, n, options, shift, expected_decision = CASES[case]
    rng = np.random.default_rng(seed)
    ref_proba, ref_labels = synthetic_scores(rng, n_ref, **options)
    proba, _ = synthetic_scores(rng, n, shift=shift, **options)

    theirs = nannyml_cbpe(nannyml, ref_proba, ref_labels, proba)
    calibration = CBPECalibration.fit(ref_proba, ref_labels)
    ours = estimate(calibration, proba)

    assert theirs.needs_calibration is expected_decision, "the case no longer exercises the branch it is for"
    assert calibration.calibrated is theirs.needs_calibration
    np.testing.assert_allclose(calibration.calibrate(proba), theirs.calibrated, rtol=0, atol=EQUAL)
    for key, value in theirs.values.items():
        assert ours[key] == pytest.approx(value, rel=0, abs=EQUAL), key
    assert ours["n"] == n


def test_equal_to_nannyml_after_a_json_round_trip(nannyml: ModuleType) -> None:
    """What is stored at training time (JSON) estimates exactly what NannyML does."""
    rng = np.random.default_rng(5)
    ref_proba, ref_labels = synthetic_scores(rng, 4000, sharpness=2.0, ticks=300)
    proba, _ = synthetic_scores(rng, 6000, sharpness=2.0, ticks=300, shift=0.4)
    stored = json.loads(json.dumps(CBPECalibration.fit(ref_proba, ref_labels).to_dict()))
    ours = estimate(CBPECalibration.from_dict(stored), proba)
    theirs = nannyml_cbpe(nannyml, ref_proba, ref_labels, proba)
    assert stored["calibrated"] is True
    for key, value in theirs.values.items():
        assert ours[key] == pytest.approx(value, rel=0, abs=EQUAL), key


# ---- (b) properties -------------------------------------------------------------------------------


def _realized(labels: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    pred = (proba >= 0.5).astype(int)
    return {
        "auc": float(roc_auc_score(labels, proba)),
        "f1": float(f1_score(labels, pred)),
        "accuracy": float(accuracy_score(labels, pred)),
        "precision": float(precision_score(labels, pred)),
        "recall": float(recall_score(labels, pred)),
    }


def test_estimators_are_the_expected_realized_metrics_of_calibrated_scores() -> None:
    """Scores that ARE the probabilities: averaged over 2,000 label draws the realized metrics
    meet the estimators (accuracy exactly in expectation; F1/precision/recall are ratios and
    AUC a normalised sum, unbiased up to O(1/n)). Realized metrics of all draws at once: the
    confusion counts, and AUC as the Mann-Whitney statistic of the (fixed) score ranks."""
    rng = np.random.default_rng(11)
    proba = rng.beta(2.0, 4.0, 5000)
    pred = proba >= 0.5
    expected = {
        "auc": estimate_roc_auc(proba, proba),
        "f1": estimate_f1(pred.astype(int), proba),
        "accuracy": estimate_accuracy(pred.astype(int), proba),
        "precision": estimate_precision(pred.astype(int), proba),
        "recall": estimate_recall(pred.astype(int), proba),
    }
    labels = rng.random((2000, proba.size)) < proba
    tp = (labels & pred).sum(axis=1)
    fp = (~labels & pred).sum(axis=1)
    fn = (labels & ~pred).sum(axis=1)
    positives = labels.sum(axis=1)
    ranks = rankdata(proba)
    realized = {
        "auc": ((labels * ranks).sum(axis=1) - positives * (positives + 1) / 2)
        / (positives * (proba.size - positives)),
        "f1": tp / (tp + 0.5 * (fp + fn)),
        "accuracy": 1 - (fp + fn) / proba.size,
        "precision": tp / (tp + fp),
        "recall": tp / (tp + fn),
    }
    one_draw = labels[0].astype(int)
    assert realized["auc"][0] == pytest.approx(roc_auc_score(one_draw, proba), abs=1e-12)
    assert realized["f1"][0] == pytest.approx(f1_score(one_draw, pred), abs=1e-12)
    for metric, value in expected.items():
        standard_error = realized[metric].std(ddof=1) / np.sqrt(len(realized[metric]))
        assert abs(realized[metric].mean() - value) < 4 * standard_error + 5e-4, (
            metric,
            realized[metric].mean(),
            value,
        )


@pytest.mark.parametrize("seed", range(5))
def test_calibrated_scores_estimate_the_realized_metrics_within_sampling_noise(seed: int) -> None:
    """End to end (calibration decision, isotonic fit, estimate) on perfectly calibrated scores.
    Both sides are samples: the realized metric of n analysis rows and the calibrator fitted on
    n_ref reference rows, so the band is NannyML's 3 sigma widened by sqrt(1 + n / n_ref)."""
    rng = np.random.default_rng(seed)
    n_ref, n = 20_000, 20_000
    ref_proba = rng.beta(2.0, 4.0, n_ref)
    ref_labels = (rng.random(n_ref) < ref_proba).astype(int)
    proba = rng.beta(2.0, 4.0, n)
    labels = (rng.random(n) < proba).astype(int)
    estimated = estimate(CBPECalibration.fit(ref_proba, ref_labels), proba)
    realized = _realized(labels, proba)
    for metric in METRICS:
        band = 3 * estimated[f"{metric}_sampling_error"] * np.sqrt(1 + n / n_ref)
        assert abs(estimated[metric] - realized[metric]) <= band, (metric, estimated[metric], realized[metric], band)


def test_sampling_error_shrinks_with_the_square_root_of_rows() -> None:
    rng = np.random.default_rng(3)
    ref_proba, ref_labels = synthetic_scores(rng, 3000)
    calibration = CBPECalibration.fit(ref_proba, ref_labels)
    proba, _ = synthetic_scores(rng, 4000)
    full, quarter = estimate(calibration, proba), estimate(calibration, proba[:1000])
    for metric in METRICS:
        assert quarter[f"{metric}_sampling_error"] == pytest.approx(2 * full[f"{metric}_sampling_error"], rel=1e-12)


# ---- the API: serialization, helpers, errors ----------------------------------------------------


@pytest.fixture(scope="module")
def fitted() -> tuple[CBPECalibration, np.ndarray]:
    rng = np.random.default_rng(1)
    ref_proba, ref_labels = synthetic_scores(rng, 2000, sharpness=2.0)
    proba, _ = synthetic_scores(rng, 3000, sharpness=2.0, shift=0.5)
    return CBPECalibration.fit(ref_proba, ref_labels), proba


def test_to_dict_is_small_json_and_round_trips_exactly(fitted: tuple[CBPECalibration, np.ndarray]) -> None:
    calibration, proba = fitted
    stored = calibration.to_dict()
    text = json.dumps(stored, allow_nan=False)
    assert stored["format"] == FORMAT and stored["calibrated"] is True
    assert len(text) < 10_000, "a small artefact (the isotonic knots, not the reference data)"
    again = CBPECalibration.from_dict(json.loads(text))
    assert again == calibration
    assert estimate(again, proba) == estimate(calibration, proba)


def test_calibration_from_validation_uses_the_positive_class_column() -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(3000, 3))
    y = (rng.random(3000) < _expit(X @ np.array([1.0, -0.5, 0.2]))).astype(int)
    model = Pipeline([("lr", LogisticRegression())]).fit(X[:1500], y[:1500])
    via_model = calibration_from_validation(model, X[1500:], y[1500:])
    assert via_model == CBPECalibration.fit(model.predict_proba(X[1500:])[:, 1], y[1500:])


def test_no_calibration_leaves_scores_alone_and_serializes_without_knots() -> None:
    seed, n_ref, _, options, _, decision = CASES["calibrated-no-isotonic"]
    assert decision is False
    ref_proba, ref_labels = synthetic_scores(np.random.default_rng(seed), n_ref, **options)
    calibration = CBPECalibration.fit(ref_proba, ref_labels)
    assert not calibration.calibrated and calibration.to_dict()["x_thresholds"] == []
    np.testing.assert_array_equal(calibration.calibrate(ref_proba), ref_proba)


def test_estimated_auc_is_nan_when_no_positive_is_expected() -> None:
    assert np.isnan(estimate_roc_auc(np.zeros(5), np.linspace(0.1, 0.4, 5)))


@pytest.mark.parametrize(
    ("proba", "labels", "message"),
    [
        ([0.2, np.nan, 0.7, 0.9], [0, 1, 0, 1], "reference probabilities contains 1 NaN/inf"),
        ([0.2, 1.3, 0.7, 0.9], [0, 1, 0, 1], r"must lie in \[0, 1\]"),
        ([], [], "reference probabilities is empty"),
        ([[0.2, 0.8], [0.6, 0.4]], [0, 1], "1-d"),
        ([0.2, 0.4, 0.7, 0.9], [0, 0, 0, 0], "single class"),
        ([0.2, 0.4, 0.7, 0.9], [0, 2, 0, 1], "must be 0/1"),
        ([0.2, 0.4, 0.7, 0.9], [0, 1, 1], "one label per probability"),
        ([0.2, 0.4, 0.7, 0.9], [0, np.nan, 1, 1], "labels contain NaN"),
    ],
)
def test_fit_rejects_bad_reference_data(proba: list[Any], labels: list[Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CBPECalibration.fit(proba, labels)


def test_estimate_rejects_bad_scores_and_fit_bad_thresholds(fitted: tuple[CBPECalibration, np.ndarray]) -> None:
    calibration, proba = fitted
    with pytest.raises(ValueError, match="probabilities contains 2 NaN/inf"):
        estimate(calibration, np.r_[proba, np.nan, np.inf])
    with pytest.raises(ValueError, match="threshold must be a number in"):
        CBPECalibration.fit(proba[:100], (proba[:100] > 0.5).astype(int), threshold=1.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "nannyml"}, "format must be"),
        ({"x_thresholds": None}, "malformed value"),
        ({"threshold": 0.0}, "threshold must be"),
        ({"y_thresholds": [0.2]}, "differ in length"),
        ({"sampling_error_components": {"auc": [0.1, 0.3]}}, "missing for f1"),
    ],
)
def test_from_dict_rejects_malformed_calibrations(
    fitted: tuple[CBPECalibration, np.ndarray], change: dict[str, Any], message: str
) -> None:
    stored = {**fitted[0].to_dict(), **change}
    with pytest.raises(ValueError, match=message):
        CBPECalibration.from_dict(stored)


def test_from_dict_names_a_missing_key(fitted: tuple[CBPECalibration, np.ndarray]) -> None:
    stored = fitted[0].to_dict()
    del stored["n_reference"]
    with pytest.raises(ValueError, match="missing key 'n_reference'"):
        CBPECalibration.from_dict(stored)


# ---- (c) generated months, the project's pipeline -------------------------------------------------

USERS = 20_000  # 5,000 held-out users a month: realized AUC alone has a standard deviation of ~0.007
SEED = 7
N_ESTIMATORS = 50
# Usage columns are drawn independently of the churn drivers the model does not see
# (contract, senior, dependents), so shifting them is a pure covariate shift once the
# churn model itself stays as it was (the generator's keep_churn_model).
COVARIATE_SHIFT = "watch_hours_30d*0.6@1"
# contract_type drives churn but is not one of the 14 model features: moving 80 % of the users
# to month-to-month changes the labels of that segment while the model's inputs stay identical.
CONCEPT_DRIFT = "contract_type=Month-to-month:0.8@1"


@dataclass(frozen=True)
class Month1:
    frame: pd.DataFrame
    held_out: pd.Series  # month-1 rows of users whose month-0 rows were not trained on

    def scored(self, model: Pipeline) -> tuple[np.ndarray, np.ndarray]:
        rows = self.frame[self.held_out]
        # one thread: a parallel forest adds its trees' votes in whatever order the threads finish
        # (probabilities then differ in the last bit between two calls on the same rows)
        model[-1].n_jobs = 1
        return np.asarray(model.predict_proba(rows[FEATURES])[:, 1]), rows[LABEL].to_numpy()


@dataclass(frozen=True)
class Generated:
    model: Pipeline
    calibration: CBPECalibration
    months: dict[str, Month1]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    """Month 0 (the same in every variant: drift starts at month 1), the model trained on its
    75 % split, CBPE calibrated on its 25 % validation split, and month 1 three ways."""
    root = tmp_path_factory.mktemp("cbpe_months")
    variants = {
        "none": None,
        "covariate": replace(parse_drift_option(COVARIATE_SHIFT), keep_churn_model=True),
        "concept": parse_drift_option(CONCEPT_DRIFT),
    }
    frames: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}
    for name, drift in variants.items():
        generator.generate_months(root / name, 2, USERS, SEED, drift=drift)
        frames[name] = (month_frame(root / name / "month_000"), month_frame(root / name / "month_001"))
    month0 = frames["none"][0]
    assert all(m0.equals(month0) for m0, _ in frames.values())
    settings = Settings(n_estimators=N_ESTIMATORS, home=root / "home")
    split = split_dataset(month0, settings.random_seed)
    model = build_pipeline(settings).fit(split.X_train, split.y_train)
    calibration = calibration_from_validation(model, split.X_val, split.y_val)
    validation_users = set(month0.loc[split.X_val.index, "user_id"])
    months = {name: Month1(m1, m1["user_id"].isin(validation_users)) for name, (_, m1) in frames.items()}
    return Generated(model, calibration, months)


def test_covariate_shift_estimated_auc_within_003_of_realized(generated: Generated) -> None:
    before, after = generated.months["none"].frame, generated.months["covariate"].frame
    assert after["watch_hours_30d"].mean() < 0.7 * before["watch_hours_30d"].mean(), "the shift is planted"
    assert after[LABEL].mean() > before[LABEL].mean() + 0.05, "same churn model on lower watch hours: more churn"
    proba, labels = generated.months["covariate"].scored(generated.model)
    estimated = estimate(generated.calibration, proba)
    realized = roc_auc_score(labels, proba)
    assert estimated["n"] == len(labels) > 4500
    assert abs(estimated["auc"] - realized) <= 0.03, (estimated["auc"], realized)


def test_concept_drift_leaves_the_estimate_unchanged_and_realized_auc_drops(generated: Generated) -> None:
    plain, drifted = generated.months["none"], generated.months["concept"]
    assert drifted.frame[FEATURES].equals(plain.frame[FEATURES]), "the model's inputs are byte-identical"
    assert not drifted.frame[LABEL].equals(plain.frame[LABEL]), "the labels moved"
    proba, labels_plain = plain.scored(generated.model)
    proba_drifted, labels_drifted = drifted.scored(generated.model)
    np.testing.assert_array_equal(proba_drifted, proba)
    estimated = estimate(generated.calibration, proba_drifted)
    assert estimated == estimate(generated.calibration, proba), "CBPE cannot see concept drift"
    realized_plain, realized_drifted = roc_auc_score(labels_plain, proba), roc_auc_score(labels_drifted, proba)
    assert realized_drifted < realized_plain - 0.02, (realized_plain, realized_drifted)
    assert estimated["auc"] - realized_drifted > 0.03, "only the realized metric catches it"
