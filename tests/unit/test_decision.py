from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamflow.monitoring.decision import Decision, decide_action, format_decision_line, validate_threshold


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
