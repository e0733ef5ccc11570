"""The model's quality per month: realized when the month's labels are known, estimated (CBPE)
before — measured with the model's ONNX artefact and stored in ``model_performance``.

* :func:`realized_metrics` / :func:`calibration_bins` / :func:`estimated_metrics` — pure numbers
  from labels and probabilities (no I/O);
* :func:`measure_realized` / :func:`measure_estimated` — one model on one month's frame, for the
  populations ``month`` (every user of the month that has a label) and ``unseen`` (the users the
  model was not trained on: the population its validation AUC and CBPE calibration describe);
* :func:`store_measurements` — replaces each (model_version, as_of, source, population) group in
  one transaction;
* :func:`version_for_month` — which version served a month: the one that held the production
  alias when the month was ingested (``model_alias_history`` vs ``ingestions.ingested_at``);
* :func:`measure_served` — realized performance of what the API actually served: the
  prediction log's rows whose features are of the month, latest per user and model version,
  joined with the month's labels (population ``served``, one measurement per model version);
* :func:`record_realized_performance` — what the monthly ingest orchestration calls right after
  ingesting a month that has labels (it measures the served population too);
  :func:`measure_months` — ``streamflow performance``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import sqlalchemy as sa

from streamflow.core.data_model import ENTITY, LABEL
from streamflow.core.dates import as_of_timestamp, parse_as_of
from streamflow.core.errors import InputError
from streamflow.core.settings import Settings
from streamflow.model.cbpe import DEFAULT_THRESHOLD, METRICS, CBPECalibration, estimate
from streamflow.monitoring.production_model import ScoringModel, load_model_version, production_model_version

log = logging.getLogger(__name__)
Progress = Callable[[str], None]

REALIZED = "realized"
ESTIMATED = "estimated"
SOURCES: tuple[str, ...] = (REALIZED, ESTIMATED)
POPULATION_MONTH = "month"  # every user of the month that has a label (realized) / every user (estimated)
POPULATION_UNSEEN = "unseen"  # the month's users the model was not trained on
POPULATION_SERVED = "served"  # what the prediction log says was served (latest per user and version)
N_BINS = 10
REALIZED_METRICS: tuple[str, ...] = (
    "auc",
    "f1",
    "precision",
    "recall",
    "accuracy",
    "brier",
    "predicted_churn_rate",
    "predicted_positive_rate",
    "actual_churn_rate",
    "n",
)
ESTIMATED_METRICS: tuple[str, ...] = (
    *METRICS,
    *(f"{m}_sampling_error" for m in METRICS),
    "predicted_churn_rate",
    "predicted_positive_rate",
    "expected_churn_rate",
    "n",
)
Metrics = dict[str, float | None]
FloatArray = npt.NDArray[np.float64]


class NoProductionModelError(InputError, LookupError):
    """Nothing to measure: no model holds the production alias (train one first)."""


class NoLabelsError(InputError, LookupError):
    """Realized performance was asked for a month that has no labels (yet)."""


# --------------------------------------------------------------------------- pure numbers
def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _checked(labels: Any, proba: Any) -> tuple[npt.NDArray[np.int64], FloatArray]:
    y = np.asarray(labels).astype(np.int64)
    p = np.asarray(proba, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1 or len(y) != len(p):
        raise ValueError(f"labels and probabilities must be 1-d and of equal length, got {y.shape} and {p.shape}")
    if len(y) == 0:
        raise ValueError("no rows to measure")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    if not (np.isfinite(p).all() and p.min() >= 0.0 and p.max() <= 1.0):
        raise ValueError("probabilities must be finite and in [0, 1]")
    return y, p


def realized_metrics(labels: Any, proba: Any, threshold: float = DEFAULT_THRESHOLD) -> Metrics:
    """AUC, F1, precision, recall, accuracy, Brier score, predicted (mean probability) and actual
    churn rate, share predicted positive and n. AUC is None when the labels have one class;
    precision/recall/F1 are 0 when undefined (nothing predicted / no positive)."""
    from sklearn.metrics import (
        accuracy_score,
        brier_score_loss,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y, p = _checked(labels, proba)
    pred = (p >= threshold).astype(np.int64)
    two_classes = y.min() != y.max()
    return {
        "auc": float(roc_auc_score(y, p)) if two_classes else None,
        "f1": float(f1_score(y, pred, zero_division=0.0)),
        "precision": float(precision_score(y, pred, zero_division=0.0)),
        "recall": float(recall_score(y, pred, zero_division=0.0)),
        "accuracy": float(accuracy_score(y, pred)),
        "brier": float(brier_score_loss(y, p)),
        "predicted_churn_rate": float(p.mean()),
        "predicted_positive_rate": float(pred.mean()),
        "actual_churn_rate": float(y.mean()),
        "n": float(len(y)),
    }


@dataclass(frozen=True)
class CalibrationBin:
    """One of 10 equal-width probability bins: [lower, upper) (the last one includes 1.0)."""

    index: int
    lower: float
    upper: float
    count: int
    mean_predicted: float | None  # None for an empty bin
    observed_rate: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "bin": self.index,
            "lower": self.lower,
            "upper": self.upper,
            "count": self.count,
            "mean_predicted": self.mean_predicted,
            "observed_rate": self.observed_rate,
        }


def calibration_bins(labels: Any, proba: Any, n_bins: int = N_BINS) -> tuple[CalibrationBin, ...]:
    """Reliability table: per equal-width bin of predicted probability, the mean prediction, the
    observed churn rate and the row count."""
    y, p = _checked(labels, proba)
    index = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    out = []
    for i in range(n_bins):
        mask = index == i
        count = int(mask.sum())
        out.append(
            CalibrationBin(
                index=i,
                lower=i / n_bins,
                upper=(i + 1) / n_bins,
                count=count,
                mean_predicted=float(p[mask].mean()) if count else None,
                observed_rate=float(y[mask].mean()) if count else None,
            )
        )
    return tuple(out)


def estimated_metrics(calibration: CBPECalibration, proba: Any) -> Metrics:
    """CBPE's AUC, F1, accuracy, precision, recall (+ their sampling errors), the predicted churn
    rate (mean probability), the expected churn rate (mean calibrated probability), the share
    predicted positive and n."""
    p = np.asarray(proba, dtype=np.float64)
    est = estimate(calibration, p)
    out: Metrics = {m: _finite_or_none(est[m]) for m in METRICS}
    out.update({f"{m}_sampling_error": _finite_or_none(est[f"{m}_sampling_error"]) for m in METRICS})
    out["predicted_churn_rate"] = float(p.mean())
    out["predicted_positive_rate"] = float((p >= calibration.threshold).mean())
    out["expected_churn_rate"] = _finite_or_none(est["expected_positive_rate"])
    out["n"] = float(est["n"])
    return out


# --------------------------------------------------------------------------- measurements
@dataclass(frozen=True)
class Measurement:
    """One model version on one month, one source, one population."""

    model_version: str
    as_of: str
    source: str
    population: str
    metrics: Metrics
    calibration_bins: tuple[CalibrationBin, ...] = ()

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.population not in (POPULATION_MONTH, POPULATION_UNSEEN, POPULATION_SERVED):
            raise ValueError(f"unknown population {self.population!r}")

    @property
    def n(self) -> int:
        return int(self.metrics.get("n") or 0)

    def rows(self) -> list[tuple[str, float | None]]:
        """(metric, value) as stored: the flat metrics, then ``calibration_bin_{i}_{field}``."""
        rows = list(self.metrics.items())
        for b in self.calibration_bins:
            rows += [
                (f"calibration_bin_{b.index}_mean_predicted", b.mean_predicted),
                (f"calibration_bin_{b.index}_observed_rate", b.observed_rate),
                (f"calibration_bin_{b.index}_count", float(b.count)),
            ]
        return rows

    def flat(self) -> dict[str, float | int | None]:
        """The metrics as the summary JSON shows them (``n`` as an int)."""
        return {k: (int(v) if k == "n" and v is not None else v) for k, v in self.metrics.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "as_of": self.as_of,
            "source": self.source,
            "population": self.population,
            "metrics": self.flat(),
            "calibration_bins": [b.as_dict() for b in self.calibration_bins] or None,
        }


def _labelled(frame: pd.DataFrame, as_of: str) -> None:
    if LABEL not in frame.columns:
        raise NoLabelsError(f"as_of={as_of} has no labels yet: realized performance needs them")


def measure_realized(
    model: ScoringModel, frame: pd.DataFrame, as_of: str, proba: FloatArray | None = None
) -> list[Measurement]:
    """Realized performance of ``model`` on ``frame`` (features + ``churn_label``): population
    ``month`` always, ``unseen`` too when the model's training users are known (and some are left).
    ``proba`` skips scoring again when the caller already has the probabilities of ``frame``."""
    _labelled(frame, as_of)
    p = model.churn_probability(frame) if proba is None else np.asarray(proba, dtype=np.float64)
    y = frame[LABEL].to_numpy()
    out = [
        Measurement(model.version, as_of, REALIZED, POPULATION_MONTH, realized_metrics(y, p), calibration_bins(y, p))
    ]
    unseen = model.unseen(frame[ENTITY])
    if unseen is not None and unseen.any():
        out.append(
            Measurement(
                model.version,
                as_of,
                REALIZED,
                POPULATION_UNSEEN,
                realized_metrics(y[unseen], p[unseen]),
                calibration_bins(y[unseen], p[unseen]),
            )
        )
    return out


def measure_estimated(
    model: ScoringModel, frame: pd.DataFrame, as_of: str, proba: FloatArray | None = None
) -> tuple[Measurement | None, str | None]:
    """CBPE estimate of ``model`` on ``frame`` (labels not needed) and a note when there is none
    or when it had to fall back to every user. Estimated on the ``unseen`` users when the model's
    training users are known (CBPE over-estimates on memorised training rows)."""
    if model.calibration is None:
        return None, model.notes.get("calibration", f"v{model.version} has no CBPE calibration")
    p = model.churn_probability(frame) if proba is None else np.asarray(proba, dtype=np.float64)
    unseen = model.unseen(frame[ENTITY])
    note: str | None = None
    if unseen is None:
        population, rows = POPULATION_MONTH, p
        note = f"{model.notes.get('trained_users', 'training users unknown')}: estimated on every user of the month"
    elif not unseen.any():
        return None, f"every user of as_of={as_of} was in v{model.version}'s training rows: none left to estimate on"
    else:
        population, rows = POPULATION_UNSEEN, p[unseen]
    try:
        metrics = estimated_metrics(model.calibration, rows)
    except ValueError as exc:
        return None, f"CBPE could not estimate v{model.version} on as_of={as_of}: {exc}"
    return Measurement(model.version, as_of, ESTIMATED, population, metrics), note


# --------------------------------------------------------------------------- storage
def _engine(settings: Settings) -> sa.Engine:
    from streamflow.db.engine import get_engine
    from streamflow.db.schema import migrate

    engine = get_engine(settings)
    migrate(engine)
    return engine


def store_measurements(
    settings: Settings, measurements: Sequence[Measurement], *, replace_served_of: date | None = None
) -> None:
    """Replace each measurement's (model_name, model_version, as_of, source, population) rows, all
    in one transaction (a failure leaves the previous rows in place). ``model_name`` is
    ``settings.model_name``. ``replace_served_of``: first delete every ``served`` measurement of
    that month (whatever the version), so versions no longer in the prediction log disappear."""
    if not measurements and replace_served_of is None:
        return
    computed_at = datetime.now(UTC)
    with _engine(settings).begin() as conn:
        # Two monitors measuring the same month at once would both delete-then-insert the same keys
        # (the second insert fails with a unique violation): replace groups one writer at a time.
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
            {"k": f"streamflow.model_performance:{settings.model_name}"},
        )
        if replace_served_of is not None:
            conn.execute(
                sa.text("DELETE FROM model_performance WHERE model_name = :name AND as_of = :d AND population = :p"),
                {"name": settings.model_name, "d": replace_served_of, "p": POPULATION_SERVED},
            )
        for m in measurements:
            key = {
                "name": settings.model_name,
                "v": m.model_version,
                "d": parse_as_of(m.as_of),
                "s": m.source,
                "p": m.population,
            }
            conn.execute(
                sa.text(
                    "DELETE FROM model_performance WHERE model_name = :name AND model_version = :v "
                    "AND as_of = :d AND source = :s AND population = :p"
                ),
                key,
            )
            conn.execute(
                sa.text(
                    "INSERT INTO model_performance (model_name, model_version, as_of, source, population, metric, "
                    "value, computed_at) VALUES (:name, :v, :d, :s, :p, :metric, :value, :at)"
                ),
                [{**key, "metric": name, "value": value, "at": computed_at} for name, value in m.rows()],
            )
    if not measurements:
        return
    log.info(
        "event=performance_stored model=%s groups=%d rows=%d",
        settings.model_name,
        len(measurements),
        sum(len(m.rows()) for m in measurements),
    )


def load_measurements(
    settings: Settings, *, as_of: str | date | None = None, model_version: str | None = None
) -> list[dict[str, Any]]:
    """Stored rows of ``settings.model_name`` grouped per (model_version, as_of, source, population):
    ``{"model_version", "as_of", "source", "population", "computed_at", "metrics": {name: value}}``."""
    query = (
        "SELECT model_version, as_of, source, population, metric, value, computed_at FROM model_performance "
        "WHERE model_name = :name"
    )
    params: dict[str, Any] = {"name": settings.model_name}
    if as_of is not None:
        query += " AND as_of = :d"
        params["d"] = parse_as_of(as_of)
    if model_version is not None:
        query += " AND model_version = :v"
        params["v"] = str(model_version)
    query += " ORDER BY as_of, model_version, source, population, metric"
    groups: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    with _engine(settings).connect() as conn:
        for r in conn.execute(sa.text(query), params):
            key = (str(r.model_version), r.as_of.isoformat(), str(r.source), str(r.population))
            g = groups.setdefault(
                key,
                {
                    "model_version": key[0],
                    "as_of": key[1],
                    "source": key[2],
                    "population": key[3],
                    "computed_at": r.computed_at.isoformat(),
                    "metrics": {},
                },
            )
            g["metrics"][str(r.metric)] = r.value
    return list(groups.values())


# --------------------------------------------------------------------------- served predictions
SERVED_QUERY = sa.text(
    "SELECT DISTINCT ON (p.model_version, p.user_id) p.model_version, p.user_id, p.churn_probability, "
    "l.churn_label FROM predictions p JOIN labels_snapshots l ON l.user_id = p.user_id AND l.as_of = :ts "
    "WHERE p.model_name = :name AND p.as_of = :d "
    "ORDER BY p.model_version, p.user_id, p.served_at DESC, p.request_id DESC"
)


def served_predictions(settings: Settings, as_of: str | date) -> pd.DataFrame:
    """The prediction log's rows whose features are of ``as_of`` and whose user has a label that
    month: the latest prediction per (model_version, user_id), with the label. Columns:
    ``model_version``, ``user_id``, ``churn_probability``, ``churn_label``."""
    day = parse_as_of(as_of)
    with _engine(settings).connect() as conn:
        rows = conn.execute(SERVED_QUERY, {"name": settings.model_name, "d": day, "ts": as_of_timestamp(day)}).all()
    return pd.DataFrame(rows, columns=["model_version", ENTITY, "churn_probability", LABEL])


def measure_served(settings: Settings, as_of: str | date) -> list[Measurement]:
    """Realized performance of what was actually served for month ``as_of``: per model version,
    the same metrics and calibration bins as the ``month`` population, over the latest served
    probability of each labelled user (:func:`served_predictions`). Empty when nothing was served."""
    day = parse_as_of(as_of).isoformat()
    frame = served_predictions(settings, day)
    out = []
    for version, group in frame.groupby("model_version", sort=True):
        y = group[LABEL].astype(np.int64).to_numpy()
        p = group["churn_probability"].to_numpy(dtype=np.float64)
        out.append(
            Measurement(str(version), day, REALIZED, POPULATION_SERVED, realized_metrics(y, p), calibration_bins(y, p))
        )
    return out


def record_served_performance(settings: Settings, as_of: str | date) -> list[Measurement]:
    """:func:`measure_served` and store it (replacing the month's earlier ``served`` rows)."""
    day = parse_as_of(as_of)
    served = measure_served(settings, day)
    store_measurements(settings, served, replace_served_of=day)
    for m in served:
        log.info(
            "event=served_performance as_of=%s model_version=%s auc=%s n=%d",
            day,
            m.model_version,
            f"{m.metrics['auc']:.4f}" if m.metrics["auc"] is not None else None,
            m.n,
        )
    return served


# --------------------------------------------------------------------------- which version
@dataclass(frozen=True)
class VersionChoice:
    version: str
    reason: str  # how it was chosen, for people


def version_for_month(settings: Settings, as_of: str | date) -> VersionChoice:
    """The version that held the production alias when ``as_of`` was ingested (its first
    ingestion). Months ingested before the alias was ever set (the bootstrap: both months, then
    the first model) get the first version that held it; without any recorded alias history
    (moves made before the history existed, or outside ``promote()``), the current production
    version. Raises :class:`NoProductionModelError` when there is no model at all."""
    from streamflow.training.registry import alias_history

    day = parse_as_of(as_of)
    with _engine(settings).connect() as conn:
        ingested_at = conn.execute(
            sa.text("SELECT min(ingested_at) FROM ingestions WHERE as_of = :d"), {"d": day}
        ).scalar()
    history = alias_history(settings)
    if history and ingested_at is not None:
        before = [h for h in history if h.set_at <= ingested_at]
        when = ingested_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if before:
            return VersionChoice(before[-1].version, f"in production when {day} was ingested ({when})")
        return VersionChoice(
            history[0].version, f"the first production version (the alias was first set after {day} was ingested)"
        )
    current = production_model_version(settings)
    if current is None:
        raise NoProductionModelError(
            f"no version of {settings.model_name!r} is deployed: train one first (streamflow train --as-of YYYY-MM-DD)"
        )
    why = "no alias history recorded" if not history else f"{day} has no ingestion record"
    return VersionChoice(current, f"the current production version ({why})")


# --------------------------------------------------------------------------- entry points
@dataclass(frozen=True)
class RealizedPerformance:
    """What :func:`record_realized_performance` measured and stored for one month."""

    as_of: str
    model_version: str
    version_reason: str
    measurements: tuple[Measurement, ...]
    validation_auc: float | None
    notes: dict[str, str] = field(default_factory=dict)
    # what the API served with the month's features (and the previous month's), per model version
    served: tuple[Measurement, ...] = ()

    @property
    def month(self) -> Measurement:
        return next(m for m in self.measurements if m.population == POPULATION_MONTH)

    @property
    def unseen(self) -> Measurement | None:
        return next((m for m in self.measurements if m.population == POPULATION_UNSEEN), None)

    def as_dict(self) -> dict[str, Any]:
        unseen = self.unseen
        return {
            "as_of": self.as_of,
            "model_version": self.model_version,
            "version_reason": self.version_reason,
            "validation_auc": self.validation_auc,
            "realized": self.month.flat(),
            "realized_unseen": unseen.flat() if unseen else None,
            "calibration_bins": [b.as_dict() for b in self.month.calibration_bins],
            "served": [{"as_of": m.as_of, "model_version": m.model_version, "metrics": m.flat()} for m in self.served],
            "notes": self.notes,
        }


def _dataset(settings: Settings, as_of: str) -> pd.DataFrame:
    from streamflow.features.dataset import build_point_in_time_dataset

    return build_point_in_time_dataset(as_of, settings, require_labels=False)


def record_realized_performance(
    as_of: str | date,
    settings: Settings,
    *,
    model_version: str | None = None,
    dataset: pd.DataFrame | None = None,
    model: ScoringModel | None = None,
    served_previous_month: bool = True,
) -> RealizedPerformance:
    """Score month ``as_of`` (its point-in-time features, every user with a label) with the
    version that served it (:func:`version_for_month`; or ``model_version``), compute the realized
    metrics and store them (``model_performance``, source ``realized``, populations ``month`` and
    ``unseen``), replacing an earlier measurement of the same version and month; then measure
    what the API actually served with that month's features (population ``served``,
    :func:`measure_served`) — and, with ``served_previous_month``, with the previous labelled
    month's: right after a month is ingested its features have not been served yet, while the
    previous month's were served until now (its served measurement is complete).

    The monthly ingest orchestration calls this right after ingesting a month that has labels.
    Raises :class:`NoLabelsError` for a month without labels and
    :class:`NoProductionModelError` when there is no model."""
    day = parse_as_of(as_of).isoformat()
    if model is not None:
        choice = VersionChoice(model.version, "given")
    elif model_version is not None:
        choice = VersionChoice(str(model_version), "given (--model-version)")
    else:
        choice = version_for_month(settings, day)
    scorer = model if model is not None else load_model_version(settings, choice.version)
    frame = dataset if dataset is not None else _dataset(settings, day)
    measurements = measure_realized(scorer, frame, day)
    store_measurements(settings, measurements)
    served = record_served_performance(settings, day)
    if served_previous_month:
        previous = [d for d in months_with_labels(settings) if d < day]
        if previous:
            served += record_served_performance(settings, previous[-1])
    notes = {}
    if scorer.trained_user_ids is None:
        notes["unseen"] = scorer.notes.get("trained_users", "training users unknown")
    result = RealizedPerformance(
        as_of=day,
        model_version=scorer.version,
        version_reason=choice.reason,
        measurements=tuple(measurements),
        validation_auc=scorer.validation_auc,
        notes=notes,
        served=tuple(served),
    )
    m = result.month.metrics
    log.info(
        "event=realized_performance as_of=%s model_version=%s auc=%s n=%d version_reason=%r",
        day,
        scorer.version,
        f"{m['auc']:.4f}" if m["auc"] is not None else None,
        result.month.n,
        choice.reason,
    )
    return result


def months_with_labels(settings: Settings) -> list[str]:
    from streamflow.features.dataset import label_dates

    return [d.isoformat() for d in label_dates(settings)]


def measure_months(
    settings: Settings,
    *,
    as_of: str | date | None = None,
    model_version: str | None = None,
    progress: Progress | None = None,
) -> list[RealizedPerformance]:
    """``streamflow performance``: realized performance of ``as_of`` (default: every month that has
    labels), each with the version that served it unless ``model_version`` is given."""
    from streamflow.features.dataset import snapshot_dates

    say = progress or (lambda _m: None)
    labelled = months_with_labels(settings)
    if as_of is not None:
        day = parse_as_of(as_of).isoformat()
        if day not in labelled:
            known = [d.isoformat() for d in snapshot_dates(settings)]
            if day not in known:
                raise NoLabelsError(
                    f"no snapshot for --as-of {day} (snapshots in the database: {', '.join(known) or 'none'})"
                )
            raise NoLabelsError(
                f"as_of={day} has no labels yet: realized performance needs them "
                f"(months with labels: {', '.join(labelled) or 'none'})"
            )
        months = [day]
    else:
        months = labelled
        if not months:
            raise NoLabelsError("no month has labels yet: ingest a month first (streamflow ingest MONTH_DIR)")
    cache: dict[str, ScoringModel] = {}
    out = []
    for day in months:
        choice = (
            VersionChoice(str(model_version), "given (--model-version)")
            if model_version is not None
            else version_for_month(settings, day)
        )
        if choice.version not in cache:
            say(f"loading model v{choice.version}")
            cache[choice.version] = load_model_version(settings, choice.version)
        say(f"scoring as_of={day} with v{choice.version}")
        result = record_realized_performance(day, settings, model=cache[choice.version], served_previous_month=False)
        out.append(
            RealizedPerformance(
                as_of=result.as_of,
                model_version=result.model_version,
                version_reason=choice.reason,
                measurements=result.measurements,
                validation_auc=result.validation_auc,
                notes=result.notes,
                served=result.served,
            )
        )
    return out
