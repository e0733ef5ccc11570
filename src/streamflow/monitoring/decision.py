"""The (simulated) retraining decision taken from a drift report, and the course's
final log line.

Pure functions only: no I/O, no Evidently, so the rule can be unit-tested on its own.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Protocol

from streamflow.errors import InputError


class DecisionInputError(InputError, ValueError):
    """A threshold or a drift share outside [0, 1]."""


class Decision(StrEnum):
    RETRAINING_TRIGGERED = "RETRAINING_TRIGGERED"
    NO_ACTION = "NO_ACTION"


def validate_threshold(threshold: float) -> float:
    """Return ``threshold`` as a float if it is a finite number in [0, 1], else raise ValueError."""
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise DecisionInputError(f"drift threshold must be a number in [0, 1], got {threshold!r}")
    value = float(threshold)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise DecisionInputError(f"drift threshold must be in [0, 1], got {threshold!r}")
    return value


def decide_action(drift_share: float, threshold: float) -> Decision:
    """Retraining is triggered when ``drift_share >= threshold`` (the course's rule)."""
    limit = validate_threshold(threshold)
    if isinstance(drift_share, bool) or not isinstance(drift_share, int | float):
        raise DecisionInputError(f"drift_share must be a number in [0, 1], got {drift_share!r}")
    share = float(drift_share)
    if not math.isfinite(share) or not 0.0 <= share <= 1.0:
        raise DecisionInputError(f"drift_share must be in [0, 1], got {drift_share!r}")
    return Decision.RETRAINING_TRIGGERED if share >= limit else Decision.NO_ACTION


class DecisionLineInput(Protocol):
    """What :func:`format_decision_line` reads (a ``DriftResult`` satisfies it)."""

    @property
    def report_html(self) -> object: ...
    @property
    def report_json(self) -> object: ...
    @property
    def drift_share(self) -> float: ...
    @property
    def threshold(self) -> float: ...
    @property
    def target_drift(self) -> float: ...


def _fmt_target(value: float) -> str:
    return "NaN" if value is None or not math.isfinite(value) else f"{value:.4f}"


def format_decision_line(result: DecisionLineInput) -> str:
    """The last line printed by the course's monitor flow, e.g.

    ``[Evidently] report_html=… report_json=… drift_share=0.07 -> NO_ACTION drift_share=0.07 < 0.30
    (target_drift=0.0239)``
    """
    decision = decide_action(result.drift_share, result.threshold)
    op = ">=" if decision is Decision.RETRAINING_TRIGGERED else "<"
    share = f"{result.drift_share:.2f}"
    msg = (
        f"{decision.value} drift_share={share} {op} {result.threshold:.2f} "
        f"(target_drift={_fmt_target(result.target_drift)})"
    )
    return f"[Evidently] report_html={result.report_html} report_json={result.report_json} drift_share={share} -> {msg}"
