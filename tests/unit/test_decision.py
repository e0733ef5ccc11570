from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamflow.monitoring.decision import (
    Decision,
    PerformancePolicy,
    Signals,
    Trigger,
    decide,
    decide_action,
    format_decision_line,
    validate_threshold,
)


@pytest.mark.parametrize(
    ("share", "threshold", "expected"),
    [
        (0.0714, 0.3, Decision.NO_ACTION),
        (0.0714, 0.05, Decision.RETRAINING_TRIGGERED),
        (0.3, 0.3, Decision.RETRAINING_TRIGGERED),  # equality triggers (>=), as in the course
        (0.2999999, 0.3, Decision.NO_ACTION),
        (1.0, 1.0, Decision.RETRAINING_TRIGGERED),
        (0.0, 0.0, Decision.RETRAINING_TRIGGERED),
        (0.0, 0.3, Decision.NO_ACTION),
        (1, 0.5, Decision.RETRAINING_TRIGGERED),
    ],
)
def test_decide_action(share: float, threshold: float, expected: Decision) -> None:
    assert decide_action(share, threshold) is expected


def test_equality_with_k_over_14() -> None:
    # 14 features: a share of k/14 compared with the same float must trigger.
    assert decide_action(5 / 14, 5 / 14) is Decision.RETRAINING_TRIGGERED


@pytest.mark.parametrize("threshold", [-0.01, 1.01, math.nan, math.inf, -math.inf, "0.3", None, True])
def test_invalid_threshold(threshold: object) -> None:
    with pytest.raises(ValueError, match="threshold"):
        decide_action(0.1, threshold)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold"):
        validate_threshold(threshold)  # type: ignore[arg-type]


@pytest.mark.parametrize("share", [-0.1, 1.5, math.nan, None])
def test_invalid_drift_share(share: object) -> None:
    with pytest.raises(ValueError, match="drift_share"):
        decide_action(share, 0.3)  # type: ignore[arg-type]


def test_decision_values_are_the_course_strings() -> None:
    assert Decision.RETRAINING_TRIGGERED == "RETRAINING_TRIGGERED"
    assert Decision.NO_ACTION.value == "NO_ACTION"


@dataclass
class _Result:
    report_html: Path
    report_json: Path
    drift_share: float
    threshold: float
    target_drift: float


def test_line_no_action() -> None:
    r = _Result(Path("/r/a.html"), Path("/r/a.json"), 1 / 14, 0.3, 0.02390)
    assert format_decision_line(r) == (
        "[Evidently] report_html=/r/a.html report_json=/r/a.json drift_share=0.07 -> "
        "NO_ACTION drift_share=0.07 < 0.30 (target_drift=0.0239)"
    )


def test_line_triggered() -> None:
    r = _Result(Path("/r/a.html"), Path("/r/a.json"), 1 / 14, 0.05, 0.0239)
    assert format_decision_line(r) == (
        "[Evidently] report_html=/r/a.html report_json=/r/a.json drift_share=0.07 -> "
        "RETRAINING_TRIGGERED drift_share=0.07 >= 0.05 (target_drift=0.0239)"
    )


def test_line_equality_and_nan_target() -> None:
    r = _Result(Path("h"), Path("j"), 0.3, 0.3, math.nan)
    line = format_decision_line(r)
    assert line.endswith("-> RETRAINING_TRIGGERED drift_share=0.30 >= 0.30 (target_drift=NaN)")


def test_line_rejects_invalid_threshold() -> None:
    with pytest.raises(ValueError):
        format_decision_line(_Result(Path("h"), Path("j"), 0.1, 2.0, 0.0))


# ---- the policy over drift and performance (issue 9) ------------------------------------------
POLICY = PerformancePolicy(min_auc=0.70, max_auc_drop=0.05)
D, LOW, DROP, EST = Trigger.DRIFT, Trigger.REALIZED_AUC_BELOW_MIN, Trigger.REALIZED_AUC_DROP, Trigger.ESTIMATED_AUC_DROP


@pytest.mark.parametrize(
    ("signals", "triggers"),
    [
        # drift alone, exactly the course rule
        (Signals(1 / 14, 0.3), ()),
        (Signals(1 / 14, 0.05), (D,)),
        # the course: drift 1/14 < 0.3, the January model at chance on February
        (Signals(1 / 14, 0.3, realized_auc=0.484, estimated_auc=0.82, validation_auc=0.8125), (LOW, DROP)),
        (Signals(1 / 14, 0.05, realized_auc=0.484, validation_auc=0.8125), (D, LOW, DROP)),
        # above min_auc, but max_auc_drop or more below the validation AUC (equality triggers)
        (Signals(0.0, 0.3, realized_auc=0.75, validation_auc=0.81), (DROP,)),
        (Signals(0.0, 0.3, realized_auc=0.80, validation_auc=0.85), (DROP,)),  # 0.04999999999999993
        (Signals(0.0, 0.3, realized_auc=0.8001, validation_auc=0.85), ()),
        (Signals(0.0, 0.3, realized_auc=0.70, validation_auc=0.72), ()),  # == min_auc is not below it
        (Signals(0.0, 0.3, realized_auc=0.6999, validation_auc=0.72), (LOW,)),
        # without a validation AUC only min_auc applies
        (Signals(0.0, 0.3, realized_auc=0.65), (LOW,)),
        (Signals(0.0, 0.3, realized_auc=0.75), ()),
        # with labels the estimate is ignored (concept drift: the estimate cannot see it)
        (Signals(0.0, 0.3, realized_auc=0.80, estimated_auc=0.50, validation_auc=0.81), ()),
        # no labels yet: the CBPE estimate decides
        (Signals(0.0, 0.3, estimated_auc=0.74, validation_auc=0.81), (EST,)),
        (Signals(0.0, 0.3, estimated_auc=0.80, validation_auc=0.85), (EST,)),
        (Signals(0.0, 0.3, estimated_auc=0.79, validation_auc=0.81), ()),
        (Signals(0.0, 0.3, estimated_auc=0.55), ()),  # no reference to fall from (min_auc is for realized)
        (Signals(0.5, 0.3, estimated_auc=0.55, validation_auc=0.81), (D, EST)),
        # NaN = undefined (one class, no calibration): treated as not measured
        (Signals(0.0, 0.3, realized_auc=math.nan, estimated_auc=0.60, validation_auc=0.81), (EST,)),
        (Signals(0.0, 0.3, realized_auc=math.nan, estimated_auc=math.nan, validation_auc=0.81), ()),
    ],
)
def test_policy(signals: Signals, triggers: tuple[Trigger, ...]) -> None:
    outcome = decide(signals, POLICY)
    assert outcome.triggers == triggers
    assert len(outcome.reasons) == len(triggers)
    assert outcome.decision is (Decision.RETRAINING_TRIGGERED if triggers else Decision.NO_ACTION)
    assert outcome.drift_triggered is (D in triggers)


def test_reasons_name_the_signal_and_the_numbers() -> None:
    course = decide(Signals(1 / 14, 0.3, realized_auc=0.4843, validation_auc=0.8125), POLICY)
    assert course.reasons == (
        "realized AUC 0.4843 < min_auc 0.70",
        "realized AUC 0.4843 is 0.3282 below the validation AUC 0.8125 (>= max_auc_drop 0.05)",
    )
    unlabelled = decide(Signals(0.5, 0.3, estimated_auc=0.70, validation_auc=0.81), POLICY)
    assert unlabelled.reasons == (
        "drift_share 0.5000 >= threshold 0.30",
        "estimated AUC (CBPE, no labels yet) 0.7000 is 0.1100 below the validation AUC 0.8100 (>= max_auc_drop 0.05)",
    )
    assert unlabelled.performance_reasons == unlabelled.reasons[1:]
    assert decide(Signals(0.0, 0.3), POLICY).reasons == ()


def test_policy_thresholds_are_settings() -> None:
    strict = PerformancePolicy(min_auc=0.9, max_auc_drop=0.01)
    assert decide(Signals(0.0, 0.3, realized_auc=0.85, validation_auc=0.86), strict).triggers == (LOW, DROP)
    assert PerformancePolicy() == POLICY  # the defaults: 0.70 and 0.05


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"realized_auc": 1.2}, "realized AUC"),
        ({"estimated_auc": -0.1}, "estimated AUC"),
        ({"validation_auc": math.inf}, "validation AUC"),
        ({"realized_auc": "0.8"}, "realized AUC"),
    ],
)
def test_policy_rejects_impossible_aucs(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        decide(Signals(0.0, 0.3, **kwargs), POLICY)  # type: ignore[arg-type]


@pytest.mark.parametrize(("min_auc", "max_auc_drop"), [(1.5, 0.05), (0.7, -0.01), (math.nan, 0.05)])
def test_policy_rejects_bad_thresholds(min_auc: float, max_auc_drop: float) -> None:
    with pytest.raises(ValueError, match=r"min_auc|max_auc_drop"):
        PerformancePolicy(min_auc=min_auc, max_auc_drop=max_auc_drop)


def test_line_is_byte_identical_when_drift_explains_the_decision() -> None:
    """NO_ACTION and drift-triggered lines are the course's lines, whatever else fired."""
    r = _Result(Path("/r/a.html"), Path("/r/a.json"), 1 / 14, 0.3, 0.0239)
    quiet = decide(Signals(1 / 14, 0.3, realized_auc=0.80, validation_auc=0.81), POLICY)
    assert format_decision_line(r, quiet) == format_decision_line(r)
    t = _Result(Path("/r/a.html"), Path("/r/a.json"), 1 / 14, 0.05, 0.0239)
    both = decide(Signals(1 / 14, 0.05, realized_auc=0.484, validation_auc=0.8125), POLICY)
    assert (
        format_decision_line(t, both)
        == format_decision_line(t)
        == (
            "[Evidently] report_html=/r/a.html report_json=/r/a.json drift_share=0.07 -> "
            "RETRAINING_TRIGGERED drift_share=0.07 >= 0.05 (target_drift=0.0239)"
        )
    )


def test_line_names_performance_reasons_when_only_performance_triggered() -> None:
    r = _Result(Path("/r/a.html"), Path("/r/a.json"), 1 / 14, 0.3, 0.0239)
    outcome = decide(Signals(1 / 14, 0.3, realized_auc=0.4843, validation_auc=0.8125), POLICY)
    assert format_decision_line(r, outcome) == (
        "[Evidently] report_html=/r/a.html report_json=/r/a.json drift_share=0.07 -> "
        "RETRAINING_TRIGGERED drift_share=0.07 < 0.30 (target_drift=0.0239); realized AUC 0.4843 < min_auc 0.70; "
        "realized AUC 0.4843 is 0.3282 below the validation AUC 0.8125 (>= max_auc_drop 0.05)"
    )
    unlabelled = _Result(Path("h"), Path("j"), 0.0, 0.3, math.nan)
    est = decide(Signals(0.0, 0.3, estimated_auc=0.70, validation_auc=0.81), POLICY)
    assert format_decision_line(unlabelled, est).endswith(
        "-> RETRAINING_TRIGGERED drift_share=0.00 < 0.30 (target_drift=NaN); estimated AUC (CBPE, no labels yet) "
        "0.7000 is 0.1100 below the validation AUC 0.8100 (>= max_auc_drop 0.05)"
    )
