"""Data drift per feature, target drift and prediction drift on Spark, from statistics that merge
(``streamflow.spark.stats``), and the report files:

1. one aggregation (per side and over both): non-null counts, min, max, the reference's standard
   deviation, an approximate distinct count per numerical column;
2. exact value counts (one grouping over every categorical column and every numerical column with
   at most ``STREAMFLOW_SPARK_EXACT_MAX_VALUES`` distinct values) — Evidently's own statistic;
3. for the other numerical columns, counts on bins: the reference's quantiles (``approxQuantile``)
   merged with an equal-width grid over both sides' range (``STREAMFLOW_SPARK_DRIFT_BINS`` each),
   and Sturges' bins for PSI (Spark ML's ``Bucketizer``, numpy's histogram rule).

Spark adds the counts up across partitions (partial aggregation, then the shuffle merges them);
the scores are computed once on the driver from the merged counts. Output: the same
:class:`~streamflow.monitoring.drift.DriftResult` as the Evidently path, and an Evidently-shaped
report JSON (``DriftedColumnsCount`` and one ``ValueDrift`` per column with its drift test, the
shapes ``streamflow.monitoring.drift.extract_*`` read from Evidently's own snapshot).
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamflow.core.data_model import CATEGORICAL_FEATURES, FEATURES, FLAG_FEATURES, INT_FEATURES, LABEL
from streamflow.core.fileio import PRIVATE_MODE, atomic_write_text
from streamflow.monitoring import drift as drift_lib
from streamflow.monitoring.decision import decide_action, validate_threshold
from streamflow.spark import stats
from streamflow.spark.stats import BinnedCounts, ColumnDrift, ColumnKind, ValueCounts

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

PREDICTION = drift_lib.PREDICTION
SIDE = "_side"
REF, CUR = 0, 1


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: ColumnKind
    string: bool = False  # compared as text (else as a double)
    integer: bool = False  # an integer dtype in the single-machine frame (numpy's histogram rule)


def column_specs(with_label: bool, with_prediction: bool) -> list[ColumnSpec]:
    """The 14 features (Evidently's column types of the single-machine report), then the label and
    the prediction when both months have them."""
    out = []
    for f in FEATURES:
        if f in CATEGORICAL_FEATURES:
            out.append(ColumnSpec(f, "categorical", string=True))
        elif f in FLAG_FEATURES:
            out.append(ColumnSpec(f, "categorical"))
        else:
            out.append(ColumnSpec(f, "numerical", integer=f in INT_FEATURES))
    if with_label:
        out.append(ColumnSpec(LABEL, "categorical", integer=True))
    if with_prediction:
        out.append(ColumnSpec(PREDICTION, "numerical"))
    return out


@dataclass
class SideStats:
    rows: int
    non_null: dict[str, int]
    means: dict[str, float | None]


@dataclass
class DriftComputation:
    columns: dict[str, ColumnDrift]
    ref: SideStats
    cur: SideStats
    exact_columns: list[str]
    binned_columns: list[str]
    seconds: float


def _q(name: str) -> str:
    return f"`{name}`"


def compute(both: DataFrame, specs: list[ColumnSpec], *, exact_max_values: int, bins: int) -> DriftComputation:
    """The drift of every column of ``specs`` between the rows of ``both`` with ``_side`` 0
    (reference) and 1 (current)."""
    from pyspark.ml.feature import Bucketizer
    from pyspark.sql import functions as F

    started = time.perf_counter()
    numeric = [s for s in specs if s.kind == "numerical"]
    # 1. counts, ranges, spread, cardinality
    aggs = [F.count("*").alias("_rows")]
    for s in specs:
        c = F.col(_q(s.name))
        aggs.append(F.count(c).alias(f"nn_{s.name}"))
        if not s.string:
            aggs.append(F.avg(c.cast("double")).alias(f"mean_{s.name}"))
    for s in numeric:
        c = F.col(_q(s.name)).cast("double")
        aggs += [
            F.min(c).alias(f"min_{s.name}"),
            F.max(c).alias(f"max_{s.name}"),
            F.stddev_pop(c).alias(f"std_{s.name}"),
            F.approx_count_distinct(c, 0.05).alias(f"nd_{s.name}"),
        ]
    rows = both.rollup(SIDE).agg(F.grouping(SIDE).alias("_all"), *aggs).collect()
    passes = {"summary": time.perf_counter() - started}
    by_side = {("all" if r["_all"] else int(r[SIDE])): r for r in rows}
    side_stats = {
        side: SideStats(
            rows=int(by_side[side]["_rows"]) if side in by_side else 0,
            non_null={s.name: int(by_side[side][f"nn_{s.name}"]) if side in by_side else 0 for s in specs},
            means={
                s.name: (float(v) if (v := by_side[side][f"mean_{s.name}"]) is not None else None)
                for s in specs
                if not s.string and side in by_side
            },
        )
        for side in (REF, CUR)
    }
    total = by_side["all"]
    binned = [s for s in numeric if int(total[f"nd_{s.name}"] or 0) > exact_max_values]
    exact = [s for s in specs if s not in binned]

    # 2. exact value counts (and nulls) of every other column
    values: dict[tuple[int, str], dict[Any, int]] = {}
    nulls: dict[tuple[int, str], int] = {}
    if exact:
        idx = {s.name: i for i, s in enumerate(exact)}
        cells = F.array(
            *(
                F.struct(
                    F.lit(i).alias("c"),
                    (F.lit(None).cast("double") if s.string else F.col(_q(s.name)).cast("double")).alias("d"),
                    (F.col(_q(s.name)) if s.string else F.lit(None).cast("string")).alias("s"),
                )
                for i, s in enumerate(exact)
            )
        )
        counted = both.select(SIDE, F.explode(cells).alias("x")).groupBy(SIDE, "x.c", "x.d", "x.s").count().collect()
        names = {i: s for s, i in idx.items()}
        strings = {s.name for s in exact if s.string}
        for r in counted:
            name = names[int(r["c"])]
            value = r["s"] if name in strings else r["d"]
            key = (int(r[SIDE]), name)
            if value is None:
                nulls[key] = nulls.get(key, 0) + int(r["count"])
            else:
                values.setdefault(key, {})[value] = int(r["count"])

    passes["values"] = time.perf_counter() - started - sum(passes.values())
    # 3. bin counts of the high-cardinality numerical columns
    bin_counts: dict[tuple[int, str, str], dict[int, int]] = {}
    edges: dict[tuple[str, str], np.ndarray] = {}
    if binned:
        probs = [i / bins for i in range(1, bins)]
        reference = both.filter(F.col(SIDE) == REF)
        quantiles = reference.approxQuantile([s.name for s in binned], probs, 1.0 / (4 * bins))
        for s, q in zip(binned, quantiles, strict=True):
            low, high = float(total[f"min_{s.name}"]), float(total[f"max_{s.name}"])
            edges[(s.name, "w")] = stats.drift_bin_edges(q, low, high, bins)
            edges[(s.name, "psi")] = stats.sturges_edges(low, high, int(total[f"nn_{s.name}"]), s.integer)
        usable = [(k, e) for k, e in edges.items() if len(e) >= 3]
        if usable:
            bucketized = Bucketizer(
                splitsArray=[e.tolist() for _, e in usable],
                inputCols=[name for (name, _), _ in usable],
                outputCols=[f"_b{i}" for i in range(len(usable))],
                handleInvalid="keep",
            ).transform(both.select(SIDE, *(F.col(_q(s.name)).cast("double").alias(s.name) for s in binned)))
            cells = F.array(*(F.struct(F.lit(i).alias("c"), F.col(f"_b{i}").alias("b")) for i in range(len(usable))))
            for r in (
                bucketized.select(SIDE, F.explode(cells).alias("x"))
                .filter(F.col("x.b").isNotNull())
                .groupBy(SIDE, "x.c", "x.b")
                .count()
                .collect()
            ):
                name, which = usable[int(r["c"])][0]
                bin_counts.setdefault((int(r[SIDE]), name, which), {})[int(r["b"])] = int(r["count"])
        for (name, which), e in edges.items():
            if len(e) < 3:  # a single bin holds every value
                for side in (REF, CUR):
                    bin_counts[(side, name, which)] = {0: side_stats[side].non_null[name]}

    passes["bins"] = time.perf_counter() - started - sum(passes.values())
    # 4. the scores, on the driver, from the merged counts
    out: dict[str, ColumnDrift] = {}
    for s in specs:
        if s in binned:

            def counts(side: int, which: str, name: str = s.name) -> BinnedCounts:
                e = edges[(name, which)]
                found = bin_counts.get((side, name, which), {})
                arr = np.array([found.get(i, 0) for i in range(len(e) - 1)], dtype=np.int64)
                return BinnedCounts(e, arr, side_stats[side].rows - side_stats[side].non_null[name])

            ref_std = by_side[REF][f"std_{s.name}"]
            out[s.name] = stats.score_binned(
                s.name,
                counts(REF, "w"),
                counts(CUR, "w"),
                float(ref_std) if ref_std is not None else 0.0,
                psi_ref=counts(REF, "psi"),
                psi_cur=counts(CUR, "psi"),
            )
        else:
            sides = []
            for side in (REF, CUR):
                found = values.get((side, s.name), {})
                keys = list(found)
                vals = np.array(keys, dtype=object if s.string else np.float64)
                sides.append(ValueCounts.of(vals, [found[k] for k in keys], nulls.get((side, s.name), 0)))
            out[s.name] = stats.score_exact(s.name, s.kind, sides[0], sides[1], integer=s.integer)
    seconds = time.perf_counter() - started
    passes["scores"] = seconds - sum(passes.values())
    log.info(
        "event=spark_drift_stats columns=%d exact=%d binned=%d seconds=%.2f passes=%s",
        len(specs),
        len(exact),
        len(binned),
        seconds,
        {k: round(v, 2) for k, v in passes.items()},
    )
    return DriftComputation(
        out, side_stats[REF], side_stats[CUR], [s.name for s in exact], [s.name for s in binned], seconds
    )


# --------------------------------------------------------------------------- the result and its files
def to_feature_drift(c: ColumnDrift) -> drift_lib.FeatureDrift:
    return drift_lib.FeatureDrift(
        feature=c.column, method=c.method, score=c.score, threshold=c.threshold, drifted=c.drifted
    )


def build_result(
    computation: DriftComputation,
    *,
    as_of_ref: str,
    as_of_cur: str,
    threshold: float,
    report_dir: Path,
    labels_missing: tuple[str, ...],
    prediction_population: str | None,
    started: float,
) -> drift_lib.DriftResult:
    """The DriftResult of the single-machine path, from the Spark computation (files not written yet)."""
    limit = validate_threshold(threshold)
    html_path, json_path, summary_path = drift_lib.report_paths(report_dir, as_of_ref, as_of_cur)
    cols = computation.columns
    feature_drifts = tuple(to_feature_drift(cols[f]) for f in FEATURES)
    count = sum(f.drifted for f in feature_drifts)
    share = count / len(FEATURES)
    target = None
    if LABEL in cols:
        ref_rate, cur_rate = computation.ref.means[LABEL], computation.cur.means[LABEL]
        assert ref_rate is not None and cur_rate is not None
        target = drift_lib.TargetDrift(ref_rate=ref_rate, cur_rate=cur_rate, abs_diff=abs(cur_rate - ref_rate))
    prediction = None
    if PREDICTION in cols:
        p = cols[PREDICTION]
        ref_mean, cur_mean = computation.ref.means[PREDICTION], computation.cur.means[PREDICTION]
        assert ref_mean is not None and cur_mean is not None
        prediction = drift_lib.PredictionDrift(
            method=p.method,
            score=p.score,
            threshold=p.threshold,
            drifted=p.drifted,
            ref_mean=ref_mean,
            cur_mean=cur_mean,
            population=prediction_population or "month",
            n_ref=p.n_reference,
            n_cur=p.n_current,
        )
    return drift_lib.DriftResult(
        as_of_ref=as_of_ref,
        as_of_cur=as_of_cur,
        drift_share=share,
        drifted_count=count,
        feature_drifts=feature_drifts,
        target=target,
        target_value_drift=cols[LABEL].score if LABEL in cols else float("nan"),
        target_value_drift_method=cols[LABEL].method if LABEL in cols else None,
        threshold=limit,
        decision=decide_action(share, limit),
        report_html=html_path,
        report_json=json_path,
        summary_json=summary_path,
        n_ref=computation.ref.rows,
        n_cur=computation.cur.rows,
        generated_at=datetime.now(UTC),
        elapsed_seconds=time.perf_counter() - started,
        prediction=prediction,
        labels_missing=labels_missing,
    )


def _metric(name: str, config: dict[str, Any], value: Any) -> dict[str, Any]:
    return {"id": hashlib.md5(name.encode()).hexdigest(), "metric_name": name, "config": config, "value": value}


def evidently_snapshot(result: drift_lib.DriftResult, computation: DriftComputation) -> dict[str, Any]:
    """The report in the shape of Evidently 0.7's ``Snapshot.dict()``: RowCount, MissingValueCount
    per column (current month), DriftedColumnsCount over the 14 features, and one ValueDrift per
    column with its ``drift`` test (FAIL = drift detected)."""
    metrics = [_metric("RowCount()", {"type": "evidently:metric_v2:RowCount"}, float(result.n_cur))]
    for name, c in computation.columns.items():
        rows = computation.cur.rows
        metrics.append(
            _metric(
                f"MissingValueCount(column={name})",
                {"type": "evidently:metric_v2:MissingValueCount", "column": name},
                {"count": float(c.nulls_current), "share": c.nulls_current / rows if rows else 0.0},
            )
        )
    metrics.append(
        _metric(
            f"DriftedColumnsCount(columns={','.join(FEATURES)},drift_share={result.threshold:g})",
            {
                "type": "evidently:metric_v2:DriftedColumnsCount",
                "columns": list(FEATURES),
                "drift_share": result.threshold,
            },
            {"count": float(result.drifted_count), "share": result.drift_share},
        )
    )
    tests = []
    for name, c in computation.columns.items():
        config = {
            "type": "evidently:metric_v2:ValueDrift",
            "column": name,
            "method": c.method,
            "threshold": c.threshold,
        }
        metric = _metric(f"ValueDrift(column={name},method={c.method},threshold={c.threshold:g})", config, c.score)
        metrics.append(metric)
        tests.append(
            {
                "id": "drift",
                "name": f"Value Drift for column {name}",
                "description": f"Drift score is {c.score:0.2f}. The drift detection method is {c.method}. "
                f"The drift threshold is {c.threshold:0.2f}.",
                "metric_config": {"metric_id": metric["id"], "params": config},
                "test_config": {},
                "status": "FAIL" if c.drifted else "SUCCESS",
                "bound_test": {
                    "type": "evidently:bound_test:ValueDriftBoundTest",
                    "test": {"type": "evidently:test_v2:ValueDriftTest", "is_critical": True},
                    "metric_fingerprint": metric["id"],
                },
            }
        )
    return {"metrics": metrics, "tests": tests}


def scores_path(result: drift_lib.DriftResult) -> Path:
    return result.report_json.with_name(result.report_json.name.replace(".json", ".scores.json"))


def column_scores(computation: DriftComputation) -> list[dict[str, Any]]:
    """Every column's score with how it was computed (exact value counts or bins, PSI alongside)."""
    return [
        {
            **{k: drift_lib._json_float(v) if isinstance(v, float) else v for k, v in asdict(c).items()},
            "drifted": c.drifted,
        }
        for c in computation.columns.values()
    ]


def _html(result: drift_lib.DriftResult, computation: DriftComputation) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(c['column'])}</td><td>{html.escape(c['method'])}</td><td>{c['score']:.4f}</td>"
        f"<td>{c['threshold']:g}</td><td>{'DRIFTED' if c['drifted'] else ''}</td><td>{c['statistic']}</td>"
        f"<td>{'' if c['psi'] is None else format(c['psi'], '.4f')}</td></tr>"
        for c in column_scores(computation)
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>StreamFlow drift (Spark)</title></head><body>"
        f"<h1>Drift {result.as_of_ref} vs {result.as_of_cur} (Spark engine)</h1>"
        f"<p>drift_share {result.drift_share:.4f} ({result.drifted_count}/{len(FEATURES)} features, threshold "
        f"{result.threshold:g}) → {result.decision.value}; reference {result.n_ref:,} rows, current {result.n_cur:,} "
        "rows. Scores are Evidently's default tests computed from merged counts (docs/scale.md).</p>"
        "<table border='1' cellpadding='4'><tr><th>column</th><th>method</th><th>score</th><th>threshold</th>"
        f"<th>drift</th><th>statistic</th><th>PSI</th></tr>{rows}</table></body></html>\n"
    )


def write_reports(result: drift_lib.DriftResult, computation: DriftComputation) -> Path:
    """The report JSON (Evidently's shape), the per-column scores and an HTML table, atomically."""
    result.report_json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        result.report_json,
        json.dumps(evidently_snapshot(result, computation), indent=1, allow_nan=False) + "\n",
        mode=PRIVATE_MODE,
    )
    path = scores_path(result)
    atomic_write_text(path, json.dumps(column_scores(computation), indent=1, allow_nan=False) + "\n", mode=PRIVATE_MODE)
    atomic_write_text(result.report_html, _html(result, computation), mode=PRIVATE_MODE)
    return path
