"""The monthly monitor, as plain library code: compare a reference and a current month, publish
the numbers, decide, and (optionally) retrain for real.

    build_dataset ×2 → validate_inputs → compute_target_drift → run_evidently
    → push_drift_metrics → decide_action → [retrain_and_maybe_promote] → decision line

:func:`run_monitor` runs those steps in that order through a *step runner*: by default each step is
a direct call; the Prefect flow ``monitor_month`` (``streamflow.flows.monitor``) passes a runner
that makes each step a Prefect task. The sequence is written once, here, and both entry points (the
CLI and Prefect) run exactly it. Every input is explicit (a :class:`MonitorRequest` and a
``Settings``); output lines go to an ``emit`` callback; nothing here exits or prints JSON.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pandas as pd

from streamflow.dates import parse_as_of
from streamflow.errors import InputError
from streamflow.features.dataset import build_point_in_time_dataset, snapshot_dates
from streamflow.monitoring import decision as decision_lib
from streamflow.monitoring import drift as drift_lib
from streamflow.monitoring.metrics_push import JOB, METRIC_NAMES, push_drift_metrics
from streamflow.monitoring.retrain import retrain_and_maybe_promote
from streamflow.schema import LABEL
from streamflow.settings import Settings

log = logging.getLogger(__name__)

PUSH_TIMEOUT_S = 5.0
T = TypeVar("T")
Emit = Callable[[str], None]


class StepRunner(Protocol):
    """Runs one named step of the monitor: ``runner(name, fn, *args, **kwargs) -> fn(*args, **kwargs)``."""

    def __call__(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T: ...


def run_directly(name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """The default step runner: a plain call."""
    return fn(*args, **kwargs)


class MonitorInputError(InputError, ValueError):
    """Bad monitor parameters (date, threshold) or a month that has no snapshot."""


# --------------------------------------------------------------------------- the request
@dataclass(frozen=True)
class MonitorRequest:
    """What to compare and what to do about it (every field resolved, nothing left to settings)."""

    as_of_ref: str
    as_of_cur: str
    threshold: float
    retrain: bool
    report_dir: Path
    min_delta: float
    pushgateway_url: str | None

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        as_of_ref: str,
        as_of_cur: str,
        threshold: float | None = None,
        retrain: bool = False,
        report_dir: str | Path | None = None,
        min_delta: float | None = None,
        pushgateway_url: str | None = None,
        ref_label: str = "as_of_ref",
        cur_label: str = "as_of_cur",
    ) -> MonitorRequest:
        """Resolve defaults from ``settings`` and validate; raise :class:`MonitorInputError` naming
        the parameter (``ref_label``/``cur_label``: how the caller calls the dates, e.g. ``--ref``)."""
        delta = settings.promote_min_delta if min_delta is None else float(min_delta)
        if not math.isfinite(delta) or delta < 0:
            raise MonitorInputError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        return cls(
            as_of_ref=normalize_as_of(as_of_ref, ref_label),
            as_of_cur=normalize_as_of(as_of_cur, cur_label),
            threshold=resolve_threshold(threshold, settings),
            retrain=bool(retrain),
            report_dir=Path(report_dir) if report_dir else settings.evidently_dir,
            min_delta=delta,
            pushgateway_url=pushgateway_url if pushgateway_url is not None else settings.pushgateway_url,
        )


def normalize_as_of(value: str, what: str) -> str:
    try:
        return parse_as_of(value).isoformat()
    except ValueError as exc:
        raise MonitorInputError(f"{what} must be a date YYYY-MM-DD, got {value!r}") from exc


def resolve_threshold(threshold: float | None, settings: Settings) -> float:
    value = settings.drift_threshold if threshold is None else threshold
    try:
        return decision_lib.validate_threshold(value)
    except ValueError as exc:
        raise MonitorInputError(str(exc)) from exc


def check_snapshots(settings: Settings, as_ofs: dict[str, str]) -> None:
    """Fail fast, naming the parameter, when a requested month has no snapshot."""
    import sqlalchemy as sa

    try:
        known = [d.isoformat() for d in snapshot_dates(settings)]
    except sa.exc.ProgrammingError as exc:  # schema not created: nothing was ever ingested
        raise MonitorInputError(
            "the database has no snapshots yet: ingest the months first (streamflow ingest MONTH_DIR --as-of DATE)"
        ) from exc
    missing = {what: day for what, day in as_ofs.items() if day not in known}
    if missing:
        which = ", ".join(f"{what}={day}" for what, day in missing.items())
        raise MonitorInputError(
            f"no snapshot for {which} (snapshots in the database: {', '.join(known) or 'none'}); "
            "ingest that month first (streamflow ingest MONTH_DIR --as-of YYYY-MM-DD)"
        )


def simulated_retrain_lines(as_of_ref: str, as_of_cur: str, drift_share: float, threshold: float) -> list[str]:
    """What the course prints instead of retraining (no ``retrain``)."""
    return [
        f"[Retrain] SIMULATED (as in the course): drift_share={drift_share:.2f} >= {threshold:.2f} triggers "
        "retraining, but no model was trained and the production alias did not move.",
        f"[Retrain] to retrain for real: streamflow monitor --ref {as_of_ref} --cur {as_of_cur} "
        f"--threshold {threshold:g} --retrain  (flow parameter retrain=True; promotion needs "
        "candidate AUC > production AUC + STREAMFLOW_PROMOTE_MIN_DELTA on the same held-out rows)",
    ]


# --------------------------------------------------------------------------- the steps
def build_dataset(as_of: str, settings: Settings, emit: Emit) -> pd.DataFrame:
    """The point-in-time dataset of one month: 14 features + that month's churn label."""
    df = build_point_in_time_dataset(as_of, settings)
    emit(f"[Dataset] as_of={as_of} rows={len(df)} churn_rate={float(df[LABEL].mean()):.4f}")
    return df


def compute_target_drift(reference_df: pd.DataFrame, current_df: pd.DataFrame, emit: Emit) -> float:
    """Absolute difference of the two months' churn rates (each month's own labels)."""
    t = drift_lib.compute_target_drift(reference_df, current_df)
    emit(f"[Target drift] ref_rate={t.ref_rate:.4f} cur_rate={t.cur_rate:.4f} abs_diff={t.abs_diff:.4f}")
    return t.abs_diff


def run_evidently(
    reference_df: pd.DataFrame, current_df: pd.DataFrame, request: MonitorRequest, emit: Emit
) -> drift_lib.DriftResult:
    """Evidently report (HTML + JSON + summary.json); drift_share over the 14 features."""
    result = drift_lib.run_drift_report(
        reference_df, current_df, request.as_of_ref, request.as_of_cur, request.threshold, request.report_dir
    )
    drifted = ", ".join(f"{f.feature} ({f.method} {f.score:.4g} vs {f.threshold:g})" for f in result.drifted_features)
    emit(
        f"[Evidently] drifted features {result.drifted_count}/{len(result.feature_drifts)}: {drifted or 'none'}; "
        f"ValueDrift({LABEL})={result.target_value_drift:.4g} ({result.target_value_drift_method})"
    )
    emit(f"[Evidently] summary_json={result.summary_json}")
    return result


def publish_drift_metrics(result: drift_lib.DriftResult, url: str | None, emit: Emit) -> dict[str, Any]:
    """Push the drift gauges to the Pushgateway when configured; a failure is a warning."""
    if not url:
        detail = "STREAMFLOW_PUSHGATEWAY_URL is not set"
        emit(f"[Metrics] drift metrics NOT pushed: {detail} (set it to publish them to Prometheus)")
        log.info("event=drift_metrics_skipped reason=no_pushgateway_url")
        return {"status": "skipped", "url": None, "detail": detail}
    try:
        push_drift_metrics(result, url, timeout=PUSH_TIMEOUT_S)
    except Exception as exc:  # the run's result stands; only the publication failed
        detail = f"{type(exc).__name__}: {exc}"
        log.warning("event=drift_metrics_push_failed url=%s error=%r", url, detail)
        emit(
            f"[Metrics] WARNING: pushing drift metrics to {url} failed ({detail}); the report and the "
            "decision below are unaffected, Prometheus keeps the previous values"
        )
        return {"status": "failed", "url": url, "detail": detail}
    emit(f"[Metrics] pushed {len(METRIC_NAMES)} drift metric families to {url} (job {JOB})")
    return {"status": "pushed", "url": url, "detail": None}


def decide_action(drift_share: float, threshold: float) -> str:
    """RETRAINING_TRIGGERED iff drift_share >= threshold (pure rule in streamflow.monitoring.decision)."""
    return decision_lib.decide_action(drift_share, threshold).value


def retrain_candidate(
    current_df: pd.DataFrame, request: MonitorRequest, drift_share: float, reason: str, settings: Settings, emit: Emit
) -> dict[str, Any]:
    """Candidate on the current month vs production on the same held-out rows; promote iff better."""
    outcome = retrain_and_maybe_promote(
        request.as_of_cur,
        settings,
        min_delta=request.min_delta,
        reason=reason,
        drift_share=drift_share,
        dataset=current_df,
        progress=lambda m: emit(f"[Retrain] {m}"),
    )
    for line in outcome.lines():
        emit(line)
    return outcome.as_dict()


# --------------------------------------------------------------------------- the sequence
def run_monitor(
    request: MonitorRequest,
    settings: Settings,
    *,
    emit: Emit,
    step: StepRunner = run_directly,
) -> dict[str, Any]:
    """Run the monitor for ``request``; returns the drift summary plus ``metrics_push``,
    ``retrain`` (the comparison, or None) and ``decision_line``. Raises :class:`InputError`
    subclasses for bad input, :class:`~streamflow.errors.OperationalError` subclasses when a
    report or retraining fails."""
    ref, cur = request.as_of_ref, request.as_of_cur
    ref_df = step("build_dataset", build_dataset, ref, settings, emit)
    cur_df = step("build_dataset", build_dataset, cur, settings, emit)
    step("validate_inputs", drift_lib.validate_frames, ref_df, cur_df, ref, cur)
    step("compute_target_drift", compute_target_drift, ref_df, cur_df, emit)
    result = step("run_evidently", run_evidently, ref_df, cur_df, request, emit)
    pushed = step("push_drift_metrics", publish_drift_metrics, result, request.pushgateway_url, emit)
    action = step("decide_action", decide_action, result.drift_share, request.threshold)

    retrained: dict[str, Any] | None = None
    if action == decision_lib.Decision.RETRAINING_TRIGGERED.value:
        if request.retrain:
            reason = f"drift {ref} vs {cur}: drift_share={result.drift_share:.4f} >= threshold={request.threshold:.2f}"
            retrained = step(
                "retrain_and_maybe_promote",
                retrain_candidate,
                cur_df,
                request,
                result.drift_share,
                reason,
                settings,
                emit,
            )
        else:
            for line in simulated_retrain_lines(ref, cur, result.drift_share, request.threshold):
                emit(line)
    elif request.retrain:
        emit("[Retrain] not needed: NO_ACTION (retraining only runs when the decision is RETRAINING_TRIGGERED)")

    line = decision_lib.format_decision_line(result)
    emit(line)
    return {**result.summary(), "metrics_push": pushed, "retrain": retrained, "decision_line": line}


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None and paths as strings (for ``json.dumps``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
