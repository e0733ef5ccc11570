"""The retraining decision and the course's final log line.

Two layers, pure functions only (no I/O, no Evidently), so the rules can be unit-tested alone:

* :func:`decide_action` — the course's drift rule: ``drift_share >= threshold``;
* :func:`decide` — the monitor's policy over every signal (``docs/monitoring.md``):
  RETRAINING_TRIGGERED when any of

  1. ``drift_share >= threshold`` (the drift rule);
  2. the realized AUC on the current month < ``min_auc`` (default 0.70);
  3. the realized AUC is ``max_auc_drop`` (default 0.05) or more below the production model's
     validation AUC;
  4. the current month has **no labels** and the CBPE estimate is ``max_auc_drop`` or more below
     the validation AUC (with labels, the realized AUC is what counts; the estimate is ignored);

  otherwise NO_ACTION. Each rule that fires gives one human-readable reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from streamflow.core.errors import InputError


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


# --------------------------------------------------------------------------- the policy
# A drop of exactly max_auc_drop must trigger (>=) although 0.85 - 0.80 == 0.04999999999999993.
_DROP_TOLERANCE = 1e-9


class Trigger(StrEnum):
    """Which rule of the policy fired."""

    DRIFT = "drift"
    REALIZED_AUC_BELOW_MIN = "realized_auc_below_min"
    REALIZED_AUC_DROP = "realized_auc_drop"
    ESTIMATED_AUC_DROP = "estimated_auc_drop"


def _unit_interval(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecisionInputError(f"{what} must be a number in [0, 1], got {value!r}")
    out = float(value)
    if not math.isfinite(out) or not 0.0 <= out <= 1.0:
        raise DecisionInputError(f"{what} must be in [0, 1], got {value!r}")
    return out


def _optional_auc(value: float | None, what: str) -> float | None:
    """None or NaN (undefined: no labels, one class, no calibration) → None; else a number in [0, 1]."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return _unit_interval(value, what)


@dataclass(frozen=True)
class PerformancePolicy:
    """The performance thresholds of the policy (``settings.min_auc`` / ``settings.max_auc_drop``)."""

    min_auc: float = 0.70
    max_auc_drop: float = 0.05

    def __post_init__(self) -> None:
        _unit_interval(self.min_auc, "min_auc")
        _unit_interval(self.max_auc_drop, "max_auc_drop")


@dataclass(frozen=True)
class Signals:
    """What the monitor measured on the current month.

    ``realized_auc`` is None when the month has no labels (or there is no production model),
    ``estimated_auc`` when there is no CBPE calibration, ``validation_auc`` when the production
    model's run has no ``val_auc``. NaN counts as None (undefined)."""

    drift_share: float
    threshold: float
    realized_auc: float | None = None
    estimated_auc: float | None = None
    validation_auc: float | None = None


@dataclass(frozen=True)
class PolicyDecision:
    decision: Decision
    triggers: tuple[Trigger, ...]
    reasons: tuple[str, ...]  # one per trigger, same order; empty for NO_ACTION

    @property
    def drift_triggered(self) -> bool:
        return Trigger.DRIFT in self.triggers

    @property
    def performance_reasons(self) -> tuple[str, ...]:
        return tuple(r for t, r in zip(self.triggers, self.reasons, strict=True) if t is not Trigger.DRIFT)


def decide(signals: Signals, policy: PerformancePolicy) -> PolicyDecision:
    """The monitor's decision over drift and performance (rules in the module docstring)."""
    drift = decide_action(signals.drift_share, signals.threshold)
    realized = _optional_auc(signals.realized_auc, "realized AUC")
    estimated = _optional_auc(signals.estimated_auc, "estimated AUC")
    reference = _optional_auc(signals.validation_auc, "validation AUC")
    fired: list[tuple[Trigger, str]] = []
    if drift is Decision.RETRAINING_TRIGGERED:
        fired.append(
            (Trigger.DRIFT, f"drift_share {float(signals.drift_share):.4f} >= threshold {float(signals.threshold):.2f}")
        )
    if realized is not None:
        if realized < policy.min_auc:
            fired.append(
                (Trigger.REALIZED_AUC_BELOW_MIN, f"realized AUC {realized:.4f} < min_auc {policy.min_auc:.2f}")
            )
        if reference is not None and reference - realized >= policy.max_auc_drop - _DROP_TOLERANCE:
            fired.append(
                (
                    Trigger.REALIZED_AUC_DROP,
                    f"realized AUC {realized:.4f} is {reference - realized:.4f} below the validation AUC "
                    f"{reference:.4f} (>= max_auc_drop {policy.max_auc_drop:.2f})",
                )
            )
    elif (
        estimated is not None
        and reference is not None
        and reference - estimated >= policy.max_auc_drop - _DROP_TOLERANCE
    ):
        fired.append(
            (
                Trigger.ESTIMATED_AUC_DROP,
                f"estimated AUC (CBPE, no labels yet) {estimated:.4f} is {reference - estimated:.4f} below "
                f"the validation AUC {reference:.4f} (>= max_auc_drop {policy.max_auc_drop:.2f})",
            )
        )
    decision = Decision.RETRAINING_TRIGGERED if fired else Decision.NO_ACTION
    return PolicyDecision(decision, tuple(t for t, _ in fired), tuple(r for _, r in fired))


# --------------------------------------------------------------------------- the course's line
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


def _fmt_target(value: float | None) -> str:
    return "NaN" if value is None or not math.isfinite(value) else f"{value:.4f}"


def format_decision_line(result: DecisionLineInput, policy: PolicyDecision | None = None) -> str:
    """The last line printed by the course's monitor flow, e.g.

    ``[Evidently] report_html=… report_json=… drift_share=0.07 -> NO_ACTION drift_share=0.07 < 0.30
    (target_drift=0.0239)``

    With ``policy`` the decision is the policy's. The drift comparison is printed as always
    (byte-identical to the drift rule's line whenever the drift rule alone explains the decision:
    NO_ACTION, or drift triggered); when only performance triggered, its reasons follow after
    ``; `` — e.g. ``-> RETRAINING_TRIGGERED drift_share=0.07 < 0.30 (target_drift=0.0239);
    realized AUC 0.4843 < min_auc 0.70``. No labels yet: ``target_drift=NaN``.
    """
    drift = decide_action(result.drift_share, result.threshold)
    decision = drift if policy is None else policy.decision
    op = ">=" if drift is Decision.RETRAINING_TRIGGERED else "<"
    share = f"{result.drift_share:.2f}"
    msg = (
        f"{decision.value} drift_share={share} {op} {result.threshold:.2f} "
        f"(target_drift={_fmt_target(result.target_drift)})"
    )
    if policy is not None and decision is Decision.RETRAINING_TRIGGERED and drift is Decision.NO_ACTION:
        msg += "; " + "; ".join(policy.performance_reasons)
    return f"[Evidently] report_html={result.report_html} report_json={result.report_json} drift_share={share} -> {msg}"
