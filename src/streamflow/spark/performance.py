"""The production model's quality on the current month, on Spark: realized metrics (labels) for the
populations ``month`` and ``unseen``, and the CBPE estimate — the numbers of
``streamflow.monitoring.performance`` from sums that merge.

* counts and sums (confusion matrix at 0.5, Σp, Σ(p − y)², the calibration bins) are one aggregation;
* AUC needs the ranking: the scores are grouped by value (positives and negatives per distinct score),
  range-partitioned by score, and each partition adds ``pos · (2·neg_below + neg)`` with the
  negatives below it from the earlier partitions — the Mann-Whitney count with ties as ½, in
  integers, so the AUC equals scikit-learn's (the same number, up to the last bit of a division);
* CBPE's expected ROC curve is made of one straight segment per distinct score (every row of a
  score has the same calibrated probability), so each segment's trapezoid only needs the expected
  positives above it; NannyML rounds every point of the curve to 5 decimals, the segments here
  round their two ends (a difference below 1e-8 of AUC).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from streamflow.core.data_model import LABEL
from streamflow.model import cbpe
from streamflow.model.cbpe import CBPECalibration
from streamflow.monitoring.drift import PREDICTION
from streamflow.monitoring.monitor import MonitorPerformance
from streamflow.monitoring.performance import (
    ESTIMATED,
    N_BINS,
    POPULATION_MONTH,
    POPULATION_UNSEEN,
    REALIZED,
    CalibrationBin,
    Measurement,
    Metrics,
)
from streamflow.monitoring.production_model import ScoringModel
from streamflow.spark.scoring import UNSEEN

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

_ROUND = 5  # NannyML rounds the expected curve's cumulative counts to 5 decimals


# --------------------------------------------------------------------------- pure pieces
@dataclass(frozen=True)
class Sums:
    """What the realized metrics need, as sums over rows."""

    n: int
    positives: int
    sum_p: float
    sum_sq: float  # Σ (p − y)²
    tp: int
    fp: int
    fn: int
    tn: int


def realized_from_sums(s: Sums, auc: float | None) -> Metrics:
    """``streamflow.monitoring.performance.realized_metrics`` from :class:`Sums` (same keys, same order)."""

    def ratio(a: int, b: int) -> float:
        return a / b if b else 0.0

    precision = ratio(s.tp, s.tp + s.fp)
    recall = ratio(s.tp, s.tp + s.fn)
    return {
        "auc": auc,
        "f1": ratio(2 * s.tp, 2 * s.tp + s.fp + s.fn),
        "precision": precision,
        "recall": recall,
        "accuracy": (s.tp + s.tn) / s.n,
        "brier": s.sum_sq / s.n,
        "predicted_churn_rate": s.sum_p / s.n,
        "predicted_positive_rate": (s.tp + s.fp) / s.n,
        "actual_churn_rate": s.positives / s.n,
        "n": float(s.n),
    }


def auc_from_mann_whitney(twice_numerator: int, positives: int, negatives: int) -> float | None:
    """AUC = Σ pos·(neg_below + neg/2) / (P·N), from the doubled (integer) numerator."""
    if positives == 0 or negatives == 0:
        return None
    return twice_numerator / (2.0 * positives * negatives)


def calibration_bins_from(rows: dict[int, tuple[int, float, int]]) -> tuple[CalibrationBin, ...]:
    """The reliability table from (count, Σp, Σy) per bin index."""
    out = []
    for i in range(N_BINS):
        count, sum_p, sum_y = rows.get(i, (0, 0.0, 0))
        out.append(
            CalibrationBin(
                index=i,
                lower=i / N_BINS,
                upper=(i + 1) / N_BINS,
                count=count,
                mean_predicted=sum_p / count if count else None,
                observed_rate=sum_y / count if count else None,
            )
        )
    return tuple(out)


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def estimated_from_sums(
    calibration: CBPECalibration, n: int, auc: float, cells: tuple[float, float, float, float], sum_p: float,
    n_positive_pred: int, sum_q: float,
) -> Metrics:  # fmt: skip
    """``streamflow.monitoring.performance.estimated_metrics`` from sums (same keys, same order)."""
    tp, fp, fn, tn = cells
    est = {
        "auc": auc,
        "f1": tp / (tp + 0.5 * (fp + fn)) if tp + 0.5 * (fp + fn) != 0 else 0.0,
        "accuracy": (tp + tn) / n,
        "precision": tp / (tp + fp) if tp + fp != 0 else 0.0,
        "recall": tp / (tp + fn) if tp + fn != 0 else 0.0,
    }
    out: Metrics = {m: _finite_or_none(float(est[m])) for m in cbpe.METRICS}
    out.update(
        {
            f"{m}_sampling_error": _finite_or_none(cbpe._sampling_error(calibration.sampling_error_components[m], n))
            for m in cbpe.METRICS
        }
    )
    out["predicted_churn_rate"] = sum_p / n
    out["predicted_positive_rate"] = n_positive_pred / n
    out["expected_churn_rate"] = _finite_or_none(sum_q / n)
    out["n"] = float(n)
    return out


# --------------------------------------------------------------------------- on Spark
# Grouped per distinct score; the columns each population needs (weights of that score).
_POPS = ("m", "u")  # month, unseen


def _partition_sums(
    calibration: CBPECalibration | None, offsets: dict[int, dict[str, float]], totals: dict[str, float],
    estimate_pop: str,
) -> Any:  # fmt: skip
    """The per-partition pass over scores sorted ascending: Mann-Whitney numerators (integers) and
    the expected curve's trapezoids and cells (CBPE) with the partition's offsets."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        state: dict[str, float] | None = None
        num = {pop: 0 for pop in _POPS}
        area = 0.0
        cells = np.zeros(4)
        sum_q = 0.0
        seen = False
        for b in batches:
            if b.empty:
                continue
            pid = int(b["_pid"].iloc[0])
            if state is None:
                state = dict(offsets.get(pid, {}))
            seen = True
            for pop in _POPS:
                pos = b[f"pos_{pop}"].to_numpy(np.int64)
                neg = b[f"neg_{pop}"].to_numpy(np.int64)
                below = int(state.get(f"neg_{pop}", 0)) + np.concatenate([[0], np.cumsum(neg)[:-1]])
                num[pop] += int(np.sum(pos * (2 * below + neg)))
                state[f"neg_{pop}"] = int(state.get(f"neg_{pop}", 0)) + int(neg.sum())
            if calibration is not None:
                p = b["p"].to_numpy(np.float64)
                c = b[f"n_{estimate_pop}"].to_numpy(np.float64)
                q = calibration.calibrate(p) if len(p) else p
                tp_inc, fp_inc = c * q, c * (1.0 - q)
                t_excl = state.get("t", 0.0) + np.concatenate([[0.0], np.cumsum(tp_inc)[:-1]])
                f_excl = state.get("f", 0.0) + np.concatenate([[0.0], np.cumsum(fp_inc)[:-1]])
                t_incl, f_incl = t_excl + tp_inc, f_excl + fp_inc
                t_tot, f_tot = totals["t"], totals["f"]
                t_top, f_top = np.round(totals["t_raw"], _ROUND), np.round(totals["f_raw"], _ROUND)
                # descending order: a group's segment runs from (above it) to (it and above)
                y0, y1 = np.round(t_tot - t_incl, _ROUND) / t_top, np.round(t_tot - t_excl, _ROUND) / t_top
                x0, x1 = np.round(f_tot - f_incl, _ROUND) / f_top, np.round(f_tot - f_excl, _ROUND) / f_top
                with np.errstate(divide="ignore", invalid="ignore"):
                    area += float(np.sum((x1 - x0) * (y1 + y0) / 2.0))
                positive = p >= calibration.threshold
                cells += [
                    float(np.sum(np.where(positive, tp_inc, 0.0))),
                    float(np.sum(np.where(positive, fp_inc, 0.0))),
                    float(np.sum(np.where(~positive, tp_inc, 0.0))),
                    float(np.sum(np.where(~positive, fp_inc, 0.0))),
                ]
                sum_q += float(np.sum(tp_inc))
                state["t"] = float(t_excl[-1] + tp_inc[-1])
                state["f"] = float(f_excl[-1] + fp_inc[-1])
        if seen:
            yield pd.DataFrame(
                {
                    "num_m": [num["m"]],
                    "num_u": [num["u"]],
                    "area": [area],
                    "tp": [cells[0]],
                    "fp": [cells[1]],
                    "fn": [cells[2]],
                    "tn": [cells[3]],
                    "sum_q": [sum_q],
                }
            )

    return run


def measure(
    scored: DataFrame, model: ScoringModel, as_of: str, *, has_labels: bool, partitions: int
) -> MonitorPerformance:
    """Realized (with labels) and CBPE-estimated performance of ``model`` on the scored month, with
    the single-machine monitor's populations, notes and metric names (nothing is stored)."""
    from pyspark.sql import functions as F

    has_unseen = UNSEEN in scored.columns
    p = F.col(PREDICTION)
    y = F.col(LABEL).cast("long") if has_labels else F.lit(0).cast("long")
    unseen = F.col(UNSEEN) if has_unseen else F.lit(False)
    in_pop = {"m": F.lit(True), "u": unseen}
    notes: dict[str, str] = {}
    calibration = model.calibration
    estimate_pop = "u" if has_unseen else "m"

    # 1. counts and sums, per population
    aggs = []
    for pop, cond in in_pop.items():
        w = F.when(cond, 1).otherwise(0)
        pred = (p >= cbpe.DEFAULT_THRESHOLD).cast("long")
        aggs += [
            F.sum(w).alias(f"n_{pop}"),
            F.sum(w * y).alias(f"pos_{pop}"),
            F.sum(F.when(cond, p).otherwise(0.0)).alias(f"sp_{pop}"),
            F.sum(F.when(cond, (p - y) * (p - y)).otherwise(0.0)).alias(f"sq_{pop}"),
            F.sum(w * pred * y).alias(f"tp_{pop}"),
            F.sum(w * pred * (1 - y)).alias(f"fp_{pop}"),
            F.sum(w * (1 - pred) * y).alias(f"fn_{pop}"),
            F.sum(w * (1 - pred) * (1 - y)).alias(f"tn_{pop}"),
        ]
    s = scored.agg(*aggs).first()
    assert s is not None
    sums = {
        pop: Sums(
            n=int(s[f"n_{pop}"] or 0),
            positives=int(s[f"pos_{pop}"] or 0),
            sum_p=float(s[f"sp_{pop}"] or 0.0),
            sum_sq=float(s[f"sq_{pop}"] or 0.0),
            tp=int(s[f"tp_{pop}"] or 0),
            fp=int(s[f"fp_{pop}"] or 0),
            fn=int(s[f"fn_{pop}"] or 0),
            tn=int(s[f"tn_{pop}"] or 0),
        )
        for pop in _POPS
    }
    want_estimate = calibration is not None and sums[estimate_pop].n > 0

    # 2. one row per distinct score, range-partitioned by score: the ranking's integers and CBPE's curve
    grouped = scored.groupBy(p.alias("p")).agg(
        *(
            expr
            for pop, cond in in_pop.items()
            for expr in (
                F.sum(F.when(cond, y).otherwise(0)).alias(f"pos_{pop}"),
                F.sum(F.when(cond, 1 - y).otherwise(0)).alias(f"neg_{pop}"),
                F.sum(F.when(cond, 1).otherwise(0)).alias(f"n_{pop}"),
            )
        )
    )
    ranked = (
        grouped.repartitionByRange(partitions, "p").sortWithinPartitions("p").withColumn("_pid", F.spark_partition_id())
    ).cache()
    try:
        per_part = {
            int(r["_pid"]): r
            for r in ranked.groupBy("_pid").agg(*(F.sum(f"neg_{pop}").alias(f"neg_{pop}") for pop in _POPS)).collect()
        }
        totals: dict[str, float] = {"t": 0.0, "f": 0.0, "t_raw": 0.0, "f_raw": 0.0}
        offsets: dict[int, dict[str, float]] = {}
        running = {f"neg_{pop}": 0 for pop in _POPS}
        t_run = f_run = 0.0
        part_tq: dict[int, tuple[float, float]] = {}
        if want_estimate:
            assert calibration is not None
            # the expected positives before each partition: the calibrated scores summed per partition
            tq = ranked.select("_pid", "p", F.col(f"n_{estimate_pop}").alias("c")).mapInPandas(
                _calibrated_sums(calibration), "_pid int, t double, f double"
            )
            for r in tq.groupBy("_pid").agg(F.sum("t").alias("t"), F.sum("f").alias("f")).collect():
                part_tq[int(r["_pid"])] = (float(r["t"]), float(r["f"]))
        for pid in sorted(per_part):
            offsets[pid] = {**running, "t": t_run, "f": f_run}
            for pop in _POPS:
                running[f"neg_{pop}"] += int(per_part[pid][f"neg_{pop}"] or 0)
            t_part, f_part = part_tq.get(pid, (0.0, 0.0))
            t_run += t_part
            f_run += f_part
        totals.update({"t": t_run, "f": f_run, "t_raw": t_run, "f_raw": f_run})
        parts = ranked.mapInPandas(
            _partition_sums(calibration if want_estimate else None, offsets, totals, estimate_pop),
            "num_m long, num_u long, area double, tp double, fp double, fn double, tn double, sum_q double",
        ).collect()
    finally:
        ranked.unpersist()
    num = {pop: sum(int(r[f"num_{pop}"]) for r in parts) for pop in _POPS}

    # 3. the calibration bins (realized only)
    bins: dict[str, tuple[CalibrationBin, ...]] = {}
    if has_labels:
        index = F.least(F.floor(p * N_BINS), F.lit(N_BINS - 1)).cast("int")
        rows: dict[str, dict[int, tuple[int, float, int]]] = {pop: {} for pop in _POPS}
        for r in (
            scored.groupBy(index.alias("bin"))
            .agg(
                *(
                    expr
                    for pop, cond in in_pop.items()
                    for expr in (
                        F.sum(F.when(cond, 1).otherwise(0)).alias(f"c_{pop}"),
                        F.sum(F.when(cond, p).otherwise(0.0)).alias(f"p_{pop}"),
                        F.sum(F.when(cond, y).otherwise(0)).alias(f"y_{pop}"),
                    )
                )
            )
            .collect()
        ):
            for pop in _POPS:
                if r[f"c_{pop}"]:
                    rows[pop][int(r["bin"])] = (int(r[f"c_{pop}"]), float(r[f"p_{pop}"]), int(r[f"y_{pop}"]))
        bins = {pop: calibration_bins_from(rows[pop]) for pop in _POPS}

    realized_month = realized_unseen = None
    if has_labels:
        m = sums["m"]
        realized_month = Measurement(
            model.version,
            as_of,
            REALIZED,
            POPULATION_MONTH,
            realized_from_sums(m, auc_from_mann_whitney(num["m"], m.positives, m.n - m.positives)),
            bins["m"],
        )
        u = sums["u"]
        if has_unseen and u.n > 0:
            realized_unseen = Measurement(
                model.version,
                as_of,
                REALIZED,
                POPULATION_UNSEEN,
                realized_from_sums(u, auc_from_mann_whitney(num["u"], u.positives, u.n - u.positives)),
                bins["u"],
            )
    else:
        notes["realized"] = f"no labels for as_of={as_of} yet"

    estimated = None
    if calibration is None:
        notes["estimated"] = model.notes.get("calibration", f"v{model.version} has no CBPE calibration")
    elif has_unseen and sums["u"].n == 0:
        notes["estimated"] = (
            f"every user of as_of={as_of} was in v{model.version}'s training rows: none left to estimate on"
        )
    else:
        if not has_unseen:
            notes["estimated"] = (
                f"{model.notes.get('trained_users', 'training users unknown')}: estimated on every user of the month"
            )
        e = sums[estimate_pop]
        t_top, f_top = round(totals["t_raw"], _ROUND), round(totals["f_raw"], _ROUND)
        area = sum(float(r["area"]) for r in parts)
        auc = area if t_top != 0 and f_top != 0 and math.isfinite(area) else math.nan

        def total(key: str) -> float:
            return sum(float(r[key]) for r in parts)

        metrics = estimated_from_sums(
            calibration,
            e.n,
            auc,
            (total("tp"), total("fp"), total("fn"), total("tn")),
            e.sum_p,
            e.tp + e.fp,
            total("sum_q"),
        )
        estimated = Measurement(
            model.version, as_of, ESTIMATED, POPULATION_UNSEEN if has_unseen else POPULATION_MONTH, metrics
        )
    return MonitorPerformance(
        as_of=as_of,
        model_version=model.version,
        validation_auc=model.validation_auc,
        realized=realized_month,
        realized_unseen=realized_unseen,
        estimated=estimated,
        notes=notes,
    )


def _calibrated_sums(calibration: CBPECalibration) -> Any:
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for b in batches:
            if b.empty:
                continue
            q = calibration.calibrate(b["p"].to_numpy(np.float64))
            c = b["c"].to_numpy(np.float64)
            yield pd.DataFrame(
                {"_pid": [int(b["_pid"].iloc[0])], "t": [float(np.sum(c * q))], "f": [float(np.sum(c * (1 - q)))]}
            )

    return run
