"""The monthly monitor, as plain library code: compare a reference and a current month, measure
the production model on the current month, publish the numbers, decide, and (optionally) retrain
for real.

    build_dataset ×2 → validate_inputs → load_production_model → sample_months → score_months
    → compute_target_drift → run_evidently (features + prediction drift)
    → measure_performance (realized if the month has labels, CBPE estimate; stored)
    → decide_action (policy: drift + performance) → write_summary → push_drift_metrics
    → [retrain_and_maybe_promote] → decision line

At scale (issue 11): the months are read straight from the snapshot tables (one SQL each,
``features/dataset.py``); Evidently compares a stated sample of each month (``sample_months``,
at most ``settings.monitor_sample_rows`` rows, shown in the summary's ``sample`` and the
report); the current month is scored whole by the ONNX model in batches (realized metrics and
the CBPE estimate use every row), the reference month only on its sampled rows (its predictions
serve the prediction-drift comparison alone). Long steps report rows through ``progress``.

The current month may have no labels yet (they arrive once the month is over): the monitor then
works from the features alone — no target drift, no realized metrics, a decision from drift and
the CBPE estimate.

:func:`run_monitor` runs those steps in that order through a *step runner*: by default each step is
a direct call; the Prefect flow ``monitor_month`` (``streamflow.flows.monitor``) passes a runner
that makes each step a Prefect task. The sequence is written once, here, and both entry points (the
CLI and Prefect) run exactly it. Every input is explicit (a :class:`MonitorRequest` and a
``Settings``); output lines go to an ``emit`` callback; nothing here exits or prints JSON.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pandas as pd

from streamflow.core.data_model import ENTITY, LABEL
from streamflow.core.dates import parse_as_of
from streamflow.core.errors import InputError
from streamflow.core.fileio import PRIVATE_MODE, atomic_write_text
from streamflow.core.progress import ProgressCallback, ProgressEvent, no_progress
from streamflow.core.settings import Settings
from streamflow.features.dataset import build_point_in_time_dataset, snapshot_dates
from streamflow.monitoring import decision as decision_lib
from streamflow.monitoring import drift as drift_lib
from streamflow.monitoring.metrics_push import JOB, METRIC_NAMES, ModelQuality, push_drift_metrics
from streamflow.monitoring.performance import (
    Measurement,
    measure_estimated,
    measure_realized,
    store_measurements,
)
from streamflow.monitoring.production_model import ModelArtifactError, ScoringModel, load_production_model
from streamflow.monitoring.retrain import retrain_and_maybe_promote

log = logging.getLogger(__name__)

PUSH_TIMEOUT_S = 5.0
T = TypeVar("T")
Emit = Callable[[str], None]
# Who renders the monitor's progress when the caller cannot pass a callback (the Prefect flow's
# parameters are serialized): ``streamflow.flows.run_monitor_with`` sets it around the flow.
PROGRESS: ContextVar[ProgressCallback] = ContextVar("streamflow_monitor_progress", default=no_progress)


@contextmanager
def progress_to(listener: ProgressCallback) -> Iterator[None]:
    """Route the progress of monitor runs started inside the block to ``listener``."""
    token = PROGRESS.set(listener)
    try:
        yield
    finally:
        PROGRESS.reset(token)


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
    min_auc: float = 0.70
    max_auc_drop: float = 0.05
    sample_rows: int | None = None  # Evidently compares at most this many rows per month (None: all)
    sample_seed: int = 42

    @property
    def policy(self) -> decision_lib.PerformancePolicy:
        return decision_lib.PerformancePolicy(min_auc=self.min_auc, max_auc_drop=self.max_auc_drop)

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
            min_auc=settings.min_auc,
            max_auc_drop=settings.max_auc_drop,
            sample_rows=settings.monitor_sample_rows,
            sample_seed=settings.monitor_sample_seed,
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


def simulated_retrain_lines(
    as_of_ref: str,
    as_of_cur: str,
    drift_share: float,
    threshold: float,
    performance_reasons: tuple[str, ...] | list[str] = (),
) -> list[str]:
    """What the course prints instead of retraining (no ``retrain``)."""
    why = [f"drift_share={drift_share:.2f} >= {threshold:.2f}"] if drift_share >= threshold else []
    why += list(performance_reasons)
    return [
        f"[Retrain] SIMULATED (as in the course): {' and '.join(why)} triggers "
        "retraining, but no model was trained and the production alias did not move.",
        f"[Retrain] to retrain for real: streamflow monitor --ref {as_of_ref} --cur {as_of_cur} "
        f"--threshold {threshold:g} --retrain  (flow parameter retrain=True; promotion needs "
        "candidate AUC > production AUC + STREAMFLOW_PROMOTE_MIN_DELTA on the same held-out rows)",
    ]


# --------------------------------------------------------------------------- the steps
def build_dataset(as_of: str, settings: Settings, emit: Emit, progress: ProgressCallback = no_progress) -> pd.DataFrame:
    """The point-in-time dataset of one month: 14 features + that month's churn label (no label
    column when the month's labels have not arrived)."""
    df = build_point_in_time_dataset(as_of, settings, require_labels=False, progress=progress)
    rate = f"{float(df[LABEL].mean()):.4f}" if LABEL in df.columns else "n/a (no labels yet)"
    emit(f"[Dataset] as_of={as_of} rows={len(df)} churn_rate={rate}")
    return df


def load_model(settings: Settings, emit: Emit) -> tuple[ScoringModel | None, str | None]:
    """The production model's ONNX artefact (+ validation AUC, CBPE calibration, training users),
    or None and why. A model that cannot be loaded is a warning: the drift half still runs."""
    try:
        model = load_production_model(settings)
    except ModelArtifactError as exc:
        emit(f"[Performance] WARNING: {exc}; no prediction drift or performance this run")
        log.warning("event=production_model_unloadable error=%r", str(exc))
        return None, str(exc)
    if model is None:
        why = f"no version of {settings.model_name!r} is deployed"
        emit(f"[Performance] {why}: no prediction drift or performance this run")
        return None, why
    return model, None


@dataclass(frozen=True)
class Compared:
    """The rows the drift report compares: a stated sample of each month (or every row), the
    sample's description and where the current month's sampled rows sit in the whole month."""

    reference: pd.DataFrame
    current: pd.DataFrame
    sample: drift_lib.DriftSample
    current_positions: Any  # numpy positions into the whole current month; None = every row


def sample_months(ref_df: pd.DataFrame, cur_df: pd.DataFrame, request: MonitorRequest, emit: Emit) -> Compared:
    """Cut both months to the stated sample Evidently compares (``request.sample_rows`` rows per
    month at most, seeded; stratified by label when a month has labels)."""
    ref_rows, cur_rows, sample, _, cur_pos = drift_lib.sample_months(
        ref_df, cur_df, request.sample_rows, request.sample_seed
    )
    emit(f"[Sample] Evidently compares {sample.describe()}")
    return Compared(ref_rows, cur_rows, sample, cur_pos)


def score_months(
    model: ScoringModel | None,
    current_df: pd.DataFrame,
    compared: Compared,
    emit: Emit,
    progress: ProgressCallback = no_progress,
) -> tuple[pd.DataFrame, Compared, drift_lib.PredictionScope | None]:
    """The production model's P(churn) (``churn_probability``) for every row of the current month
    (realized metrics and CBPE use them all) and for the compared rows of both months, and the rows
    whose predictions the prediction drift compares: the users the model was not trained on (a
    forest's scores of its training rows are memorised, over-confident — comparing them with next
    month's scores shows "drift" that is only memorisation), or every compared user when the
    model's training users are unknown. The reference month is scored on its compared rows only."""
    if model is None:
        return current_df, compared, None
    cur_proba = model.churn_probability(current_df, progress=progress, task="score current month")
    cur = current_df.assign(**{drift_lib.PREDICTION: cur_proba})
    ref_rows = compared.reference.assign(
        **{
            drift_lib.PREDICTION: model.churn_probability(
                compared.reference, progress=progress, task="score reference (compared rows)"
            )
        }
    )
    pos = compared.current_positions
    cur_rows = compared.current.assign(**{drift_lib.PREDICTION: cur_proba if pos is None else cur_proba[pos]})
    compared = Compared(ref_rows, cur_rows, compared.sample, pos)
    ref_unseen, cur_unseen = model.unseen(ref_rows[ENTITY]), model.unseen(cur_rows[ENTITY])
    scope = None
    population = "every compared user (training users unknown)"
    if ref_unseen is not None and cur_unseen is not None and ref_unseen.any() and cur_unseen.any():
        scope = drift_lib.PredictionScope("unseen", ref_unseen, cur_unseen)
        population = (
            f"the users v{model.version} was not trained on ({int(ref_unseen.sum()):,} / {int(cur_unseen.sum()):,})"
        )
    ref_what = "all users" if not compared.sample.reference.sampled else "sample"
    emit(
        f"[Predictions] v{model.version} mean churn_probability: ref={ref_rows[drift_lib.PREDICTION].mean():.4f} "
        f"({ref_what}) cur={cur[drift_lib.PREDICTION].mean():.4f} (all users); prediction drift compares "
        f"{population}"
    )
    return cur, compared, scope


def compute_target_drift(
    reference_df: pd.DataFrame, current_df: pd.DataFrame, emit: Emit
) -> drift_lib.TargetDrift | None:
    """The two months' churn rates (each month's own labels, every row) and their absolute
    difference; None (and said so) when a month has no labels yet."""
    missing = [name for name, df in (("reference", reference_df), ("current", current_df)) if LABEL not in df]
    if missing:
        emit(f"[Target drift] n/a: the {' and '.join(missing)} month has no labels yet")
        return None
    t = drift_lib.compute_target_drift(reference_df, current_df)
    emit(f"[Target drift] ref_rate={t.ref_rate:.4f} cur_rate={t.cur_rate:.4f} abs_diff={t.abs_diff:.4f}")
    return t


def run_evidently(
    compared: Compared,
    request: MonitorRequest,
    emit: Emit,
    prediction_scope: drift_lib.PredictionScope | None = None,
    target: drift_lib.TargetDrift | None = None,
    progress: ProgressCallback = no_progress,
) -> drift_lib.DriftResult:
    """Evidently report (HTML + JSON + summary.json) over the compared rows; drift_share over the
    14 features; the target drift of the whole months."""
    rows = len(compared.reference) + len(compared.current)
    progress(ProgressEvent("evidently", 0, rows))
    result = drift_lib.run_drift_report(
        compared.reference,
        compared.current,
        request.as_of_ref,
        request.as_of_cur,
        request.threshold,
        request.report_dir,
        prediction_scope=prediction_scope,
        sample=compared.sample,
        target=target,
    )
    progress(ProgressEvent("evidently", rows, rows))
    drifted = ", ".join(
        f"{f.feature} ({f.note})" if f.note else f"{f.feature} ({f.method} {f.score:.4g} vs {f.threshold:g})"
        for f in result.drifted_features
    )
    target_note = (
        f"ValueDrift({LABEL})={result.target_value_drift:.4g} ({result.target_value_drift_method})"
        if result.target is not None
        else f"ValueDrift({LABEL}) n/a (no labels)"
    )
    emit(
        f"[Evidently] drifted features {result.drifted_count}/{len(result.feature_drifts)}: {drifted or 'none'}; "
        f"{target_note}"
    )
    quiet = [f for f in result.unmeasured_features if not f.drifted]  # the drifted ones are listed above
    if quiet:
        emit("[Evidently] not measured: " + "; ".join(f"{f.feature} ({f.note})" for f in quiet))
    if result.prediction is not None:
        p = result.prediction
        emit(
            f"[Prediction drift] ValueDrift({p.column})={p.score:.4g} ({p.method}, threshold {p.threshold:g}): "
            f"{'DRIFTED' if p.drifted else 'not drifted'}; {p.population} users: mean ref={p.ref_mean:.4f} "
            f"(n={p.n_ref}) cur={p.cur_mean:.4f} (n={p.n_cur})"
        )
    emit(f"[Evidently] summary_json={result.summary_json}")
    return result


@dataclass(frozen=True)
class MonitorPerformance:
    """The production model on the current month: realized (labels) and estimated (CBPE)."""

    as_of: str
    model_version: str | None
    validation_auc: float | None
    realized: Measurement | None  # population "month"
    realized_unseen: Measurement | None  # the users the model was not trained on
    estimated: Measurement | None
    notes: dict[str, str]

    def summary(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of,
            "model_version": self.model_version,
            "validation_auc": self.validation_auc,
            "realized": self.realized.flat() if self.realized else None,
            "estimated": self.estimated.flat() if self.estimated else None,
            "realized_unseen": self.realized_unseen.flat() if self.realized_unseen else None,
            "estimated_population": self.estimated.population if self.estimated else None,
            "calibration_bins": [b.as_dict() for b in self.realized.calibration_bins] if self.realized else None,
            "notes": self.notes,
        }

    @property
    def realized_auc(self) -> float | None:
        return self.realized.metrics.get("auc") if self.realized else None

    @property
    def estimated_auc(self) -> float | None:
        return self.estimated.metrics.get("auc") if self.estimated else None

    def line(self) -> str:
        def fmt(x: float | None) -> str:
            return f"{x:.4f}" if x is not None else "n/a"

        if self.model_version is None:
            return f"[Performance] {self.notes.get('model', 'no production model')}: realized and estimated AUC n/a"
        if self.realized is not None:
            realized = f"realized AUC {fmt(self.realized_auc)} (n={self.realized.n})"
        else:
            realized = f"realized AUC n/a ({self.notes.get('realized', 'no labels')})"
        if self.estimated is not None:
            err = self.estimated.metrics.get("auc_sampling_error")
            band = f" ± {3 * err:.4f}" if err is not None else ""
            estimated = (
                f"estimated AUC {fmt(self.estimated_auc)}{band} (CBPE, {self.estimated.population} users, "
                f"n={self.estimated.n})"
            )
        else:
            estimated = f"estimated AUC n/a ({self.notes.get('estimated', 'no CBPE calibration')})"
        return (
            f"[Performance] model v{self.model_version} on {self.as_of}: {realized}; {estimated}; "
            f"reference val AUC {fmt(self.validation_auc)}"
        )


def measure_performance(
    model: ScoringModel | None, model_note: str | None, current_df: pd.DataFrame, as_of: str, settings: Settings,
    emit: Emit, progress: ProgressCallback = no_progress,
) -> MonitorPerformance:  # fmt: skip
    """Realized (when the month has labels) and CBPE-estimated performance of the production model
    on the current month, stored in ``model_performance``; prints the ``[Performance]`` line."""
    if model is None:
        perf = MonitorPerformance(as_of, None, None, None, None, None, {"model": model_note or "no production model"})
        emit(perf.line())
        return perf
    proba = current_df[drift_lib.PREDICTION].to_numpy()
    notes: dict[str, str] = {}
    realized: list[Measurement] = []
    n = len(current_df)
    progress(ProgressEvent("performance", 0, n))
    if LABEL in current_df.columns:
        realized = measure_realized(model, current_df, as_of, proba)
    else:
        notes["realized"] = f"no labels for as_of={as_of} yet"
    estimated, note = measure_estimated(model, current_df, as_of, proba)
    progress(ProgressEvent("performance", n, n))
    if note:
        notes["estimated"] = note
    store_measurements(settings, [*realized, *([estimated] if estimated else [])])
    by_population = {m.population: m for m in realized}
    perf = MonitorPerformance(
        as_of=as_of,
        model_version=model.version,
        validation_auc=model.validation_auc,
        realized=by_population.get("month"),
        realized_unseen=by_population.get("unseen"),
        estimated=estimated,
        notes=notes,
    )
    emit(perf.line())
    return perf


def decide_action(
    result: drift_lib.DriftResult, performance: MonitorPerformance, request: MonitorRequest, emit: Emit
) -> decision_lib.PolicyDecision:
    """The policy over drift and performance (pure rules in streamflow.monitoring.decision)."""
    outcome = decision_lib.decide(
        decision_lib.Signals(
            drift_share=result.drift_share,
            threshold=request.threshold,
            realized_auc=performance.realized_auc,
            estimated_auc=performance.estimated_auc,
            validation_auc=performance.validation_auc,
        ),
        request.policy,
    )
    emit(f"[Decision] {outcome.decision.value}" + (f": {'; '.join(outcome.reasons)}" if outcome.reasons else ""))
    return outcome


def monitor_summary(
    result: drift_lib.DriftResult, performance: MonitorPerformance, outcome: decision_lib.PolicyDecision,
    request: MonitorRequest,
) -> dict[str, Any]:  # fmt: skip
    """The drift summary with the policy's decision, its reasons, the performance and the prediction drift."""
    prediction = result.prediction.as_dict() if result.prediction else None
    if prediction is not None:
        prediction["model_version"] = performance.model_version
    return {
        **result.summary(),
        "decision": outcome.decision.value,
        "drift_decision": result.decision.value,
        "reasons": list(outcome.reasons),
        "triggers": [t.value for t in outcome.triggers],
        "policy": {"threshold": request.threshold, "min_auc": request.min_auc, "max_auc_drop": request.max_auc_drop},
        "performance": performance.summary(),
        "prediction_drift": prediction,
    }


def write_summary(result: drift_lib.DriftResult, summary: dict[str, Any]) -> None:
    """Rewrite ``drift_{ref}_vs_{cur}.summary.json`` with the decision of the policy (atomic)."""
    import json

    atomic_write_text(
        result.summary_json, json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n", mode=PRIVATE_MODE
    )


def publish_drift_metrics(
    result: drift_lib.DriftResult,
    url: str | None,
    emit: Emit,
    decision: decision_lib.Decision | None = None,
    quality: ModelQuality | None = None,
) -> dict[str, Any]:
    """Push the drift (and model-quality) gauges to the Pushgateway when configured; a failure is a warning."""
    if not url:
        detail = "STREAMFLOW_PUSHGATEWAY_URL is not set"
        emit(f"[Metrics] drift metrics NOT pushed: {detail} (set it to publish them to Prometheus)")
        log.info("event=drift_metrics_skipped reason=no_pushgateway_url")
        return {"status": "skipped", "url": None, "detail": detail}
    try:
        families = push_drift_metrics(result, url, timeout=PUSH_TIMEOUT_S, decision=decision, quality=quality)
    except Exception as exc:  # the run's result stands; only the publication failed
        detail = f"{type(exc).__name__}: {exc}"
        log.warning("event=drift_metrics_push_failed url=%s error=%r", url, detail)
        emit(
            f"[Metrics] WARNING: pushing drift metrics to {url} failed ({detail}); the report and the "
            "decision below are unaffected, Prometheus keeps the previous values"
        )
        return {"status": "failed", "url": url, "detail": detail}
    drift = [f for f in families if f in METRIC_NAMES]
    others = len(families) - len(drift)
    extra = f" + {others} model-quality families (model v{quality.model_version})" if quality and others else ""
    emit(f"[Metrics] pushed {len(drift)} drift metric families to {url} (job {JOB}){extra}")
    return {"status": "pushed", "url": url, "detail": None, "families": families}


def model_quality(performance: MonitorPerformance, request: MonitorRequest) -> ModelQuality | None:
    if performance.model_version is None:
        return None
    return ModelQuality(
        model_version=performance.model_version,
        as_of=performance.as_of,
        validation_auc=performance.validation_auc,
        realized=performance.realized.flat() if performance.realized else None,
        estimated=performance.estimated.flat() if performance.estimated else None,
        min_auc=request.min_auc,
        max_auc_drop=request.max_auc_drop,
    )


def retrain_reason(
    request: MonitorRequest, drift_share: float, outcome: decision_lib.PolicyDecision
) -> tuple[str, str]:
    """(trigger kind, reason text) of a retraining: ``drift`` when the drift rule fired (the text
    starts as it always did), else ``performance``."""
    ref, cur = request.as_of_ref, request.as_of_cur
    perf = list(outcome.performance_reasons)
    if outcome.drift_triggered:
        text = f"drift {ref} vs {cur}: drift_share={drift_share:.4f} >= threshold={request.threshold:.2f}"
        return "drift", text + "".join(f"; {r}" for r in perf)
    return "performance", f"performance {ref} vs {cur}: " + "; ".join(perf)


def retrain_candidate(
    current_df: pd.DataFrame,
    request: MonitorRequest,
    drift_share: float,
    outcome: decision_lib.PolicyDecision,
    performance: MonitorPerformance,
    settings: Settings,
    emit: Emit,
) -> dict[str, Any]:
    """Candidate on the current month vs production on the same held-out rows; promote iff better."""
    trigger, reason = retrain_reason(request, drift_share, outcome)
    outcome_ = retrain_and_maybe_promote(
        request.as_of_cur,
        settings,
        min_delta=request.min_delta,
        reason=reason,
        drift_share=drift_share,
        dataset=current_df.drop(columns=[drift_lib.PREDICTION], errors="ignore"),
        progress=lambda m: emit(f"[Retrain] {m}"),
        trigger=trigger,
        triggers=[t.value for t in outcome.triggers],
        signals={
            "realized_auc": performance.realized_auc,
            "estimated_auc": performance.estimated_auc,
            "validation_auc": performance.validation_auc,
        },
    )
    for line in outcome_.lines():
        emit(line)
    return outcome_.as_dict()


# --------------------------------------------------------------------------- the sequence
def run_monitor(
    request: MonitorRequest,
    settings: Settings,
    *,
    emit: Emit,
    step: StepRunner = run_directly,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Run the monitor for ``request``; returns the summary (drift, ``decision`` of the policy,
    ``reasons``, ``performance``, ``prediction_drift``, ``sample``) plus ``metrics_push``,
    ``retrain`` (the comparison, or None) and ``decision_line``. ``progress`` (default: the
    listener set by :func:`progress_to`) receives the rows of the long steps. Raises
    :class:`InputError` subclasses for bad input, :class:`~streamflow.core.errors.OperationalError`
    subclasses when a report or retraining fails."""
    ref, cur = request.as_of_ref, request.as_of_cur
    on_progress = progress or PROGRESS.get()
    ref_df = step("build_dataset", build_dataset, ref, settings, emit, on_progress)
    cur_df = step("build_dataset", build_dataset, cur, settings, emit, on_progress)
    step("validate_inputs", drift_lib.validate_frames, ref_df, cur_df, ref, cur)
    model, model_note = step("load_production_model", load_model, settings, emit)
    compared = step("sample_months", sample_months, ref_df, cur_df, request, emit)
    cur_df, compared, scope = step("score_months", score_months, model, cur_df, compared, emit, on_progress)
    target = step("compute_target_drift", compute_target_drift, ref_df, cur_df, emit)
    del ref_df  # the reference month is only needed through its compared rows from here on
    result = step("run_evidently", run_evidently, compared, request, emit, scope, target, on_progress)
    del compared
    performance = step(
        "measure_performance", measure_performance, model, model_note, cur_df, cur, settings, emit, on_progress
    )
    outcome = step("decide_action", decide_action, result, performance, request, emit)
    summary = monitor_summary(result, performance, outcome, request)
    step("write_summary", write_summary, result, summary)
    pushed = step(
        "push_drift_metrics",
        publish_drift_metrics,
        result,
        request.pushgateway_url,
        emit,
        outcome.decision,
        model_quality(performance, request),
    )

    retrained: dict[str, Any] | None = None
    if outcome.decision is decision_lib.Decision.RETRAINING_TRIGGERED:
        if request.retrain and LABEL not in cur_df.columns:
            emit(
                f"[Retrain] not possible: as_of={cur} has no labels yet, a candidate cannot be trained on it; "
                "run the monitor again once the labels have arrived"
            )
        elif request.retrain:
            retrained = step(
                "retrain_and_maybe_promote",
                retrain_candidate,
                cur_df,
                request,
                result.drift_share,
                outcome,
                performance,
                settings,
                emit,
            )
        else:
            for line in simulated_retrain_lines(
                ref, cur, result.drift_share, request.threshold, outcome.performance_reasons
            ):
                emit(line)
    elif request.retrain:
        emit("[Retrain] not needed: NO_ACTION (retraining only runs when the decision is RETRAINING_TRIGGERED)")

    line = decision_lib.format_decision_line(result, outcome)
    emit(line)
    return {**summary, "metrics_push": pushed, "retrain": retrained, "decision_line": line}


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
