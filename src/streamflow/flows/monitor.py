"""Prefect flow ``monitor_month``: the course's drift monitor (month_000 vs month_001), as thin
tasks over :mod:`streamflow.monitoring`.

``build_dataset`` ×2 → ``validate_inputs`` → ``compute_target_drift`` → ``run_evidently``
→ ``push_drift_metrics`` → ``decide_action`` → (``retrain_and_maybe_promote`` when the decision
is RETRAINING_TRIGGERED and ``retrain`` is set; otherwise retraining stays SIMULATED, as in the
course) → the course's final line (:func:`~streamflow.monitoring.decision.format_decision_line`).

Settings: tasks read :func:`current_settings` — the object given to :func:`using_settings`
(the CLI and the tests use it) or else ``get_settings()`` (the environment, e.g. in compose).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import threading
import warnings
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from streamflow.flows import prefect_environment
from streamflow.settings import Settings, get_settings

# Prefect reads PREFECT_HOME when it is imported: keep its local state under STREAMFLOW_HOME
# unless a Prefect home/API is configured (setdefault only).
prefect_environment(get_settings())

from prefect import flow, task  # noqa: E402

from streamflow.dates import DEMO_CUR_AS_OF, DEMO_REF_AS_OF, parse_as_of  # noqa: E402
from streamflow.features.dataset import EmptySnapshotError, build_point_in_time_dataset, snapshot_dates  # noqa: E402
from streamflow.monitoring import decision as decision_lib  # noqa: E402
from streamflow.monitoring import drift as drift_lib  # noqa: E402
from streamflow.monitoring.metrics_push import JOB, METRIC_NAMES, push_drift_metrics  # noqa: E402
from streamflow.monitoring.retrain import RetrainError, retrain_and_maybe_promote  # noqa: E402
from streamflow.schema import LABEL  # noqa: E402

log = logging.getLogger(__name__)

AS_OF_REF_DEFAULT = DEMO_REF_AS_OF  # month_000 of the course
AS_OF_CUR_DEFAULT = DEMO_CUR_AS_OF  # month_001 of the course
PUSH_TIMEOUT_S = 5.0

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class MonitorInputError(ValueError):
    """Bad monitor parameters (date, threshold) or a month that has no snapshot."""


# Errors that are the user's input, not a bug: one clear line, no traceback (see _quiet_expected_errors).
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    MonitorInputError,
    drift_lib.DriftInputError,
    EmptySnapshotError,
)

# --------------------------------------------------------------------------- settings
_override: Settings | None = None
_override_lock = threading.Lock()


@contextlib.contextmanager
def using_settings(settings: Settings) -> Iterator[Settings]:
    """Run flows of this process with ``settings`` instead of ``get_settings()``."""
    global _override
    with _override_lock:
        previous, _override = _override, settings
    try:
        yield settings
    finally:
        with _override_lock:
            _override = previous


def current_settings() -> Settings:
    return _override if _override is not None else get_settings()


# --------------------------------------------------------------------------- output
def say(message: str) -> None:
    """One line of the monitor's output (stdout; the course prints too)."""
    print(message, flush=True)


class _StripExpectedTracebacks(logging.Filter):
    """Prefect logs every task/flow failure with its traceback; for input errors the message is
    the whole story, so keep the line and drop the stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, EXPECTED_ERRORS):
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_expected_errors() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _StripExpectedTracebacks) for f in logger.filters):
            logger.addFilter(_StripExpectedTracebacks())


def normalize_as_of(value: str | date, what: str) -> str:
    try:
        return parse_as_of(value).isoformat()
    except (TypeError, ValueError, AttributeError) as exc:
        raise MonitorInputError(f"{what} must be a date YYYY-MM-DD, got {value!r}") from exc


def resolve_threshold(threshold: float | None, settings: Settings) -> float:
    value = settings.drift_threshold if threshold is None else threshold
    try:
        return decision_lib.validate_threshold(value)
    except ValueError as exc:
        raise MonitorInputError(str(exc)) from exc


def simulated_retrain_lines(as_of_ref: str, as_of_cur: str, drift_share: float, threshold: float) -> list[str]:
    """What the course prints instead of retraining (no ``retrain``)."""
    return [
        f"[Retrain] SIMULATED (as in the course): drift_share={drift_share:.2f} >= {threshold:.2f} triggers "
        "retraining, but no model was trained and the production alias did not move.",
        f"[Retrain] to retrain for real: streamflow monitor --ref {as_of_ref} --cur {as_of_cur} "
        f"--threshold {threshold:g} --retrain  (flow parameter retrain=True; promotion needs "
        "candidate AUC > production AUC + STREAMFLOW_PROMOTE_MIN_DELTA on the same held-out rows)",
    ]


# --------------------------------------------------------------------------- tasks
@task(name="build_dataset", persist_result=False)
def build_dataset(as_of: str) -> pd.DataFrame:
    """The point-in-time dataset of one month: 14 features + that month's churn label."""
    df = build_point_in_time_dataset(as_of, current_settings())
    say(f"[Dataset] as_of={as_of} rows={len(df)} churn_rate={float(df[LABEL].mean()):.4f}")
    return df


@task(name="validate_inputs", persist_result=False)
def validate_inputs(reference_df: pd.DataFrame, current_df: pd.DataFrame, as_of_ref: str, as_of_cur: str) -> None:
    """Same columns, compatible types, non-empty (DriftInputError naming columns/dates otherwise)."""
    drift_lib.validate_frames(reference_df, current_df, as_of_ref, as_of_cur)


@task(name="compute_target_drift", persist_result=False)
def compute_target_drift(reference_df: pd.DataFrame, current_df: pd.DataFrame) -> float:
    """Absolute difference of the two months' churn rates (each month's own labels)."""
    t = drift_lib.compute_target_drift(reference_df, current_df)
    say(f"[Target drift] ref_rate={t.ref_rate:.4f} cur_rate={t.cur_rate:.4f} abs_diff={t.abs_diff:.4f}")
    return t.abs_diff


@task(name="run_evidently", persist_result=False)
def run_evidently(
    reference_df: pd.DataFrame,
    current_df: pd.DataFrame,
    as_of_ref: str,
    as_of_cur: str,
    threshold: float,
    report_dir: str,
) -> drift_lib.DriftResult:
    """Evidently report (HTML + JSON + summary.json); drift_share over the 14 features."""
    with warnings.catch_warnings():
        # Evidently's HTML renderer warns once per numeric column on tz-aware timestamps; harmless.
        warnings.filterwarnings("ignore", message="Converting to PeriodArray", category=UserWarning)
        result = drift_lib.run_drift_report(reference_df, current_df, as_of_ref, as_of_cur, threshold, report_dir)
    drifted = ", ".join(f"{f.feature} ({f.method} {f.score:.4g} vs {f.threshold:g})" for f in result.drifted_features)
    say(
        f"[Evidently] drifted features {result.drifted_count}/{len(result.feature_drifts)}: {drifted or 'none'}; "
        f"ValueDrift({LABEL})={result.target_value_drift:.4g} ({result.target_value_drift_method})"
    )
    say(f"[Evidently] summary_json={result.summary_json}")
    return result


@task(name="push_drift_metrics", persist_result=False)
def push_metrics(result: drift_lib.DriftResult) -> dict[str, Any]:
    """Push the drift gauges to the Pushgateway when configured; a failure is a warning."""
    url = current_settings().pushgateway_url
    if not url:
        detail = "STREAMFLOW_PUSHGATEWAY_URL is not set"
        say(f"[Metrics] drift metrics NOT pushed: {detail} (set it to publish them to Prometheus)")
        log.info("event=drift_metrics_skipped reason=no_pushgateway_url")
        return {"status": "skipped", "url": None, "detail": detail}
    try:
        push_drift_metrics(result, url, timeout=PUSH_TIMEOUT_S)
    except Exception as exc:  # the run's result stands; only the publication failed
        detail = f"{type(exc).__name__}: {exc}"
        log.warning("event=drift_metrics_push_failed url=%s error=%r", url, detail)
        say(
            f"[Metrics] WARNING: pushing drift metrics to {url} failed ({detail}); the report and the "
            "decision below are unaffected, Prometheus keeps the previous values"
        )
        return {"status": "failed", "url": url, "detail": detail}
    say(f"[Metrics] pushed {len(METRIC_NAMES)} drift metric families to {url} (job {JOB})")
    return {"status": "pushed", "url": url, "detail": None}


@task(name="decide_action", persist_result=False)
def decide_action(drift_share: float, threshold: float) -> str:
    """RETRAINING_TRIGGERED iff drift_share >= threshold (pure rule in streamflow.monitoring.decision)."""
    return decision_lib.decide_action(drift_share, threshold).value


@task(name="retrain_and_maybe_promote", persist_result=False)
def retrain_candidate(
    current_df: pd.DataFrame, as_of_cur: str, drift_share: float, reason: str, min_delta: float | None
) -> dict[str, Any]:
    """Candidate on the current month vs production on the same held-out rows; promote iff better."""
    outcome = retrain_and_maybe_promote(
        as_of_cur,
        current_settings(),
        min_delta=min_delta,
        reason=reason,
        drift_share=drift_share,
        dataset=current_df,
        progress=lambda m: say(f"[Retrain] {m}"),
    )
    for line in outcome.lines():
        say(line)
    return outcome.as_dict()


# --------------------------------------------------------------------------- flow
@flow(name="monitor_month")
def monitor_month(
    as_of_ref: str = AS_OF_REF_DEFAULT,
    as_of_cur: str = AS_OF_CUR_DEFAULT,
    threshold: float | None = None,
    retrain: bool = False,
    report_dir: str | None = None,
    min_delta: float | None = None,
) -> dict[str, Any]:
    """Compare two months, publish the drift metrics, decide, and (optionally) retrain for real.

    ``threshold`` defaults to ``settings.drift_threshold`` (0.3), ``report_dir`` to
    ``settings.evidently_dir`` (``REPORT_DIR`` or ``STREAMFLOW_HOME/reports/evidently``),
    ``min_delta`` to ``settings.promote_min_delta``. Returns the drift summary plus
    ``metrics_push``, ``retrain`` (the comparison, or None) and ``decision_line``.
    """
    _quiet_expected_errors()
    settings = current_settings()
    ref = normalize_as_of(as_of_ref, "as_of_ref")
    cur = normalize_as_of(as_of_cur, "as_of_cur")
    limit = resolve_threshold(threshold, settings)
    out_dir = str(Path(report_dir) if report_dir else settings.evidently_dir)

    ref_df = build_dataset(ref)
    cur_df = build_dataset(cur)
    validate_inputs(ref_df, cur_df, ref, cur)
    compute_target_drift(ref_df, cur_df)
    result = run_evidently(ref_df, cur_df, ref, cur, limit, out_dir)
    pushed = push_metrics(result)
    action = decide_action(result.drift_share, limit)

    retrained: dict[str, Any] | None = None
    if action == decision_lib.Decision.RETRAINING_TRIGGERED.value:
        if retrain:
            reason = f"drift {ref} vs {cur}: drift_share={result.drift_share:.4f} >= threshold={limit:.2f}"
            retrained = retrain_candidate(cur_df, cur, result.drift_share, reason, min_delta)
        else:
            for line in simulated_retrain_lines(ref, cur, result.drift_share, limit):
                say(line)
    elif retrain:
        say("[Retrain] not needed: NO_ACTION (retraining only runs when the decision is RETRAINING_TRIGGERED)")

    line = decision_lib.format_decision_line(result)
    say(line)
    return {**result.summary(), "metrics_push": pushed, "retrain": retrained, "decision_line": line}


# Course name of the flow function (services/prefect/monitor_flow.py skeleton).
monitor_month_flow = monitor_month


# --------------------------------------------------------------------------- CLI support
def check_snapshots(settings: Settings, as_ofs: dict[str, str]) -> None:
    """Fail fast (before starting Prefect) when a requested month has no snapshot."""
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


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def monitor_command(
    ref: str,
    cur: str,
    threshold: float | None,
    retrain: bool,
    json_out: bool,
    settings: Settings,
) -> int:
    """``streamflow monitor``: run :func:`monitor_month` and return the exit code.

    0 = the monitor ran (either decision; a failed metrics push is only a warning);
    2 = bad input (date, threshold, month without snapshot, incompatible datasets), one
    ``error: …`` line on stderr and no traceback; 1 = the report or the retraining failed.
    Without ``json_out`` the last stdout line is the course's decision line; with it the
    progress lines go to stderr and stdout holds only the JSON summary.
    """
    try:
        ref_d = normalize_as_of(ref, "--ref")
        cur_d = normalize_as_of(cur, "--cur")
        limit = resolve_threshold(threshold, settings)
        check_snapshots(settings, {"--ref": ref_d, "--cur": cur_d})
    except MonitorInputError as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT

    _quiet_expected_errors()
    stdout = sys.stdout
    redirect = contextlib.redirect_stdout(sys.stderr) if json_out else contextlib.nullcontext()
    try:
        with using_settings(settings), redirect:
            summary = monitor_month(as_of_ref=ref_d, as_of_cur=cur_d, threshold=limit, retrain=retrain)
    except EXPECTED_ERRORS as exc:
        _error(str(exc))
        return EXIT_BAD_INPUT
    except drift_lib.DriftReportError as exc:
        _error(f"the Evidently report could not be read: {exc}")
        return EXIT_FAILED
    except RetrainError as exc:
        _error(f"retraining failed: {exc}")
        return EXIT_FAILED
    if json_out:
        print(json.dumps(_json_safe(summary), indent=2, allow_nan=False), file=stdout, flush=True)
    return EXIT_OK
