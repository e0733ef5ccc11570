"""The promotion rule and the printed comparison of a retraining (pure functions)."""

from __future__ import annotations

import math

import pytest

from streamflow.monitoring.retrain import RetrainOutcome, should_promote


def test_no_production_always_promotes() -> None:
    ok, why = should_promote(0.51, None, 0.5)
    assert ok and "no production model" in why


@pytest.mark.parametrize(
    ("candidate", "production", "min_delta", "expected"),
    [
        (0.80, 0.50, 0.0, True),
        (0.80, 0.80, 0.0, False),  # strictly better, not equal
        (0.801, 0.80, 0.0, True),
        (0.85, 0.80, 0.05, False),  # delta == min_delta is not enough
        (0.86, 0.80, 0.05, True),
        (0.70, 0.80, 0.0, False),
        (0.99, 0.60, 0.5, False),
    ],
)
def test_candidate_must_beat_production_by_more_than_min_delta(
    candidate: float, production: float, min_delta: float, expected: bool
) -> None:
    ok, why = should_promote(candidate, production, min_delta)
    assert ok is expected
    assert f"min_delta={min_delta:.4f}" in why


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_bad_min_delta(bad: float) -> None:
    with pytest.raises(ValueError, match="min_delta"):
        should_promote(0.8, 0.7, bad)


def test_nan_candidate_is_an_error() -> None:
    with pytest.raises(ValueError):
        should_promote(math.nan, 0.7, 0.0)


def _outcome(**kw: object) -> RetrainOutcome:
    base: dict[str, object] = dict(
        as_of="2024-02-29", candidate_version="3", candidate_run_id="r", candidate_auc=0.81,
        production_version="1", production_auc=0.62, delta=0.19, min_delta=0.01, promoted=True,
        reason="because", n_train=5282, n_heldout=1761, alias="production", model_name="streamflow_churn",
    )  # fmt: skip
    base.update(kw)
    return RetrainOutcome(**base)  # type: ignore[arg-type]


def test_outcome_lines_and_dict() -> None:
    out = _outcome()
    first, second = out.lines()
    assert "candidate v3 auc=0.8100 vs production v1 auc=0.6200 delta=+0.1900 (must be > 0.0100)" in first
    assert "held-out rows=1761" in first
    assert second == "[Retrain] PROMOTED: because"
    d = out.as_dict()
    assert d["decision"] == "PROMOTED" and d["candidate_auc"] == 0.81 and d["production_version"] == "1"

    refused = _outcome(promoted=False, reason="not better")
    assert refused.decision == "REJECTED" and refused.lines()[1] == "[Retrain] REJECTED: not better"

    first_model = _outcome(production_version=None, production_auc=None, delta=None)
    assert "vs no production model" in first_model.lines()[0]
