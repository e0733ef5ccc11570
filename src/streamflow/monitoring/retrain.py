"""Real retraining after a trigger (drift, or the model's measured/estimated performance): train a
candidate on the current month, compare it with the ``production`` model on the *same* held-out
rows of that month, and move the alias only if the candidate is better by more than ``min_delta``.

* The candidate is trained by :func:`streamflow.training.train.train_model` (same pipeline,
  same MLflow logging: scikit-learn + ONNX, registered as a new version) on the 75 % train
  part of the stratified split with ``settings.random_seed``; the remaining 25 % is the
  held-out set both models are scored on. The production model is scored through its ONNX
  artefact (``onnx/model.onnx``, what the API serves), never by unpickling its scikit-learn form.
* The comparison is recorded on the candidate's MLflow run (tags ``trigger`` = ``drift`` or
  ``performance``, ``triggers`` (every rule that fired), ``as_of``, ``drift_share``,
  ``retrain_decision``…; metrics ``heldout_auc_candidate``, ``heldout_auc_production``,
  ``heldout_auc_delta``, ``promote_min_delta``, ``trigger_<signal>`` such as
  ``trigger_realized_auc``).
* Promotion goes through :func:`streamflow.training.registry.promote` with compare-and-set: the
  production model is read (the deployed version) before the candidate is trained, and the
  promotion is refused if production moved meanwhile (another monitor promoted first), if the MLflow
  alias and the deployed version disagree, or if the candidate was trained on an older month than
  the deployed model. A refused candidate keeps its version, tagged ``rejected_reason``; the outcome
  is REJECTED with that reason (``refusal``: ``not_better`` / ``production_moved`` /
  ``older_month``); nothing moves.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import pandas as pd

from streamflow.core.dates import parse_as_of
from streamflow.core.errors import InputError, OperationalError
from streamflow.core.faults import fault_point
from streamflow.core.settings import Settings
from streamflow.features.dataset import build_point_in_time_dataset
from streamflow.monitoring.production_model import ScoringModel, load_model_version
from streamflow.training.registry import OlderModelError, PromotionConflict, configure_mlflow, deployed, promote
from streamflow.training.train import evaluate, train_model

log = logging.getLogger(__name__)
Progress = Callable[[str], None]

PROMOTED = "PROMOTED"
REJECTED = "REJECTED"


class PromotionRuleError(InputError, ValueError):
    """A promotion margin that is not a finite number >= 0."""


class InvalidMetricError(OperationalError, ValueError):
    """A model metric that is not a finite number (the comparison cannot be made)."""


class RetrainError(OperationalError, RuntimeError):
    """Retraining could not produce a comparable, registered candidate."""


@dataclass(frozen=True)
class RetrainOutcome:
    """The candidate-vs-production comparison on the current month's held-out rows."""

    as_of: str
    candidate_version: str
    candidate_run_id: str
    candidate_auc: float
    production_version: str | None  # the production model at the time of the comparison
    production_auc: float | None
    delta: float | None  # candidate_auc - production_auc
    min_delta: float
    promoted: bool
    reason: str
    n_train: int
    n_heldout: int
    alias: str
    model_name: str
    # why a candidate was not promoted: "not_better" (the rule), "production_moved" (compare-and-set
    # refused: another promotion came first, or the MLflow alias and the deployment disagree),
    # "older_month" (trained on an older month than the deployed model); None when promoted
    refusal: str | None = None

    @property
    def decision(self) -> str:
        return PROMOTED if self.promoted else REJECTED

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decision": self.decision}

    def lines(self) -> list[str]:
        """Human-readable comparison (what the monitor prints)."""
        cand = f"candidate v{self.candidate_version} auc={self.candidate_auc:.4f}"
        if self.production_version is None or self.production_auc is None or self.delta is None:
            prod = "no production model"
            cmp = ""
        else:
            prod = f"production v{self.production_version} auc={self.production_auc:.4f}"
            cmp = f" delta={self.delta:+.4f} (must be > {self.min_delta:.4f})"
        return [
            f"[Retrain] as_of={self.as_of} held-out rows={self.n_heldout} (train rows={self.n_train}): "
            f"{cand} vs {prod}{cmp}",
            f"[Retrain] {self.decision}: {self.reason}",
        ]


def should_promote(candidate_auc: float, production_auc: float | None, min_delta: float) -> tuple[bool, str]:
    """The promotion rule: promote iff there is no production model or
    ``candidate_auc > production_auc + min_delta``. Returns (promote, reason)."""
    if not math.isfinite(min_delta) or min_delta < 0:
        raise PromotionRuleError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
    if not math.isfinite(candidate_auc):
        raise InvalidMetricError(f"candidate AUC is not a number: {candidate_auc!r}")
    if production_auc is None:
        return True, f"no production model; candidate auc={candidate_auc:.4f}"
    delta = candidate_auc - production_auc
    if delta > min_delta:
        return True, (
            f"candidate auc={candidate_auc:.4f} beats production auc={production_auc:.4f} "
            f"by {delta:+.4f} > min_delta={min_delta:.4f}"
        )
    return False, (
        f"candidate auc={candidate_auc:.4f} does not beat production auc={production_auc:.4f} "
        f"by more than min_delta={min_delta:.4f} (delta={delta:+.4f})"
    )


def _load_version(settings: Settings, version: str) -> ScoringModel:
    """The version's ONNX artefact (scored like the API serves it)."""
    return load_model_version(settings, version)


def retrain_and_maybe_promote(
    as_of_cur: str | date,
    settings: Settings,
    *,
    min_delta: float | None = None,
    reason: str = "drift",
    drift_share: float | None = None,
    dataset: pd.DataFrame | None = None,
    progress: Progress | None = None,
    trigger: str = "drift",
    triggers: Sequence[str] = (),
    signals: Mapping[str, float | None] | None = None,
) -> RetrainOutcome:
    """Train a candidate on ``as_of_cur``, score it and the production model on the same held-out
    rows, promote the candidate iff it wins by more than ``min_delta`` (default
    ``settings.promote_min_delta``) or there is no production model.

    ``reason`` says why retraining happened (e.g. the drift decision); it is stored as the
    ``retrain_trigger_reason`` tag and prefixed to the promotion reason. ``trigger`` is the kind
    of trigger (``drift`` / ``performance``; tag ``trigger``), ``triggers`` every policy rule that
    fired (tag ``triggers``), ``signals`` the numbers behind them (metrics ``trigger_<name>``, e.g.
    ``realized_auc``). ``dataset`` skips rebuilding the point-in-time dataset when the caller
    already has it."""
    say = progress or (lambda _m: None)
    as_of_d = parse_as_of(as_of_cur)
    delta_min = settings.promote_min_delta if min_delta is None else float(min_delta)
    if not math.isfinite(delta_min) or delta_min < 0:
        raise PromotionRuleError(f"min_delta must be a finite number >= 0, got {min_delta!r}")

    df = dataset if dataset is not None else build_point_in_time_dataset(as_of_d, settings)
    production = deployed(settings)  # read before training: the compare-and-set expects it unchanged
    expected = production.version if production is not None else None

    say(f"training a candidate on as_of={as_of_d} ({len(df)} rows)")
    trained = train_model(as_of_d, settings, promote_if_first=False, dataset=df)
    if trained.version is None:
        raise RetrainError(f"candidate run {trained.run_id} was not registered as a model version")
    split = trained.split
    cand_metrics = evaluate(trained.pipeline, split.X_val, split.y_val)

    prod_metrics: dict[str, float] | None = None
    if production is not None:
        say(f"scoring production v{production.version} on the same {len(split.X_val)} held-out rows")
        prod_metrics = evaluate(_load_version(settings, production.version), split.X_val, split.y_val)

    cand_auc = cand_metrics["val_auc"]
    prod_auc = prod_metrics["val_auc"] if prod_metrics is not None else None
    promote_it, why = should_promote(cand_auc, prod_auc, delta_min)
    refusal: str | None = None if promote_it else "not_better"
    if promote_it:
        fault_point("before_promote", settings)
        try:
            promote(settings, trained.version, f"{reason}: {why}", expected_current=expected)
        except (PromotionConflict, OlderModelError) as exc:
            promote_it = False
            refusal = "older_month" if isinstance(exc, OlderModelError) else "production_moved"
            why = f"{why}, but {exc}"
            log.warning("event=promotion_refused candidate=%s refusal=%s reason=%r", trained.version, refusal, str(exc))
    outcome = RetrainOutcome(
        as_of=str(as_of_d),
        candidate_version=trained.version,
        candidate_run_id=trained.run_id,
        candidate_auc=cand_auc,
        production_version=expected,
        production_auc=prod_auc,
        delta=(cand_auc - prod_auc) if prod_auc is not None else None,
        min_delta=delta_min,
        promoted=promote_it,
        reason=why,
        n_train=len(split.X_train),
        n_heldout=len(split.X_val),
        alias=settings.model_alias,
        model_name=settings.model_name,
        refusal=refusal,
    )
    _record(settings, outcome, cand_metrics, prod_metrics, reason, drift_share, trigger, triggers, signals)
    log.info(
        "event=retrain as_of=%s candidate=%s candidate_auc=%.4f production=%s production_auc=%s "
        "min_delta=%.4f decision=%s refusal=%s",
        outcome.as_of,
        outcome.candidate_version,
        cand_auc,
        outcome.production_version,
        f"{prod_auc:.4f}" if prod_auc is not None else None,
        delta_min,
        outcome.decision,
        refusal,
    )
    return outcome


def _record(
    settings: Settings,
    outcome: RetrainOutcome,
    cand_metrics: dict[str, float],
    prod_metrics: dict[str, float] | None,
    reason: str,
    drift_share: float | None,
    trigger: str = "drift",
    triggers: Sequence[str] = (),
    signals: Mapping[str, float | None] | None = None,
) -> None:
    """The comparison as tags/metrics on the candidate run (and the refusal on its version)."""
    client = configure_mlflow(settings)
    run_id = outcome.candidate_run_id
    tags: dict[str, str] = {
        "trigger": trigger,
        "as_of": outcome.as_of,
        "retrain_trigger_reason": reason,
        "retrain_decision": outcome.decision,
        "retrain_decision_reason": outcome.reason,
        "compared_with_version": outcome.production_version or "none",
    }
    if drift_share is not None:
        tags["drift_share"] = f"{drift_share:.6f}"
    if triggers:
        tags["triggers"] = ",".join(triggers)
    if not outcome.promoted:
        tags["rejected_reason"] = outcome.reason
    for key, text in tags.items():
        client.set_tag(run_id, key, text)
    metrics: dict[str, float] = {
        "heldout_auc_candidate": cand_metrics["val_auc"],
        "heldout_f1_candidate": cand_metrics["val_f1"],
        "promote_min_delta": outcome.min_delta,
    }
    if prod_metrics is not None and outcome.delta is not None:
        metrics.update(
            {
                "heldout_auc_production": prod_metrics["val_auc"],
                "heldout_f1_production": prod_metrics["val_f1"],
                "heldout_auc_delta": outcome.delta,
            }
        )
    if drift_share is not None:
        metrics["drift_share"] = drift_share
    for name, value in (signals or {}).items():
        if value is not None and math.isfinite(value):
            metrics[f"trigger_{name}"] = value
    for key, number in metrics.items():
        client.log_metric(run_id, key, float(number))
    client.set_model_version_tag(settings.model_name, outcome.candidate_version, "trigger", trigger)
    if not outcome.promoted:
        client.set_model_version_tag(settings.model_name, outcome.candidate_version, "rejected_reason", outcome.reason)
