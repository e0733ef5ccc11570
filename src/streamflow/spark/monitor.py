"""``streamflow monitor --engine spark``: the monthly monitor on Apache Spark, for a user base one
process cannot hold.

    load_month ×2 (CSV months validated with the ingest's rules, or the lake's Parquet months)
    → build_feature_table ×2 (point in time) → load_production_model → score_months (ONNX in the
    executors) → compute_target_drift → compute_drift (merged counts → Evidently's scores)
    → measure_performance (realized, CBPE) → decide_action → write_summary → push_drift_metrics
    → write_feature_tables → decision line

The decision policy, the summary JSON, the Pushgateway metrics and the course's decision line are
the single-machine monitor's own functions (``streamflow.monitoring.monitor``), fed with the same
dataclasses: what the two engines print and publish has one shape. Differences: nothing is read
from or stored in PostgreSQL (inputs are files; the performance measurements are in the summary);
``--retrain`` is not offered (retraining is the single-machine trainer's job); Evidently's own HTML
report is replaced by a table of the same scores.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamflow.core.data_model import ENTITY, FEATURES, LABEL
from streamflow.core.errors import InputError
from streamflow.core.settings import Settings
from streamflow.ingest.validation import limits_from
from streamflow.monitoring import decision as decision_lib
from streamflow.monitoring import monitor as local
from streamflow.monitoring.drift import PREDICTION, TargetDrift
from streamflow.monitoring.monitor import Emit, MonitorPerformance, MonitorRequest, StepRunner, run_directly
from streamflow.monitoring.production_model import ScoringModel
from streamflow.spark import drift as spark_drift
from streamflow.spark import fs, lake
from streamflow.spark.csv_month import CsvMonth, read_csv_month
from streamflow.spark.features import AS_OF, FeatureTable, build_feature_table, write_feature_table
from streamflow.spark.performance import measure
from streamflow.spark.scoring import UNSEEN, mark_unseen, score
from streamflow.spark.session import spark_session

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


class SparkRetrainError(InputError, ValueError):
    """--retrain asked of the Spark engine."""


@dataclass(frozen=True)
class SparkInputs:
    """Where the two months come from: a directory of the six CSVs each, or (None) the lake."""

    ref_month: str | None = None
    cur_month: str | None = None

    def describe(self, which: str) -> str:
        month = self.ref_month if which == "ref" else self.cur_month
        return f"CSV {month}" if month else "the lake"


@dataclass
class LoadedMonth:
    as_of: str
    tables: dict[str, DataFrame]
    earlier_months: bool
    source: str
    csv: CsvMonth | None = None

    def users(self) -> DataFrame:
        return self.tables["users"].select(ENTITY)

    def release(self) -> None:
        if self.csv is not None:
            self.csv.unpersist()


def load_month(
    spark: SparkSession, settings: Settings, month_dir: str | None, as_of: str, known: DataFrame | None, emit: Emit
) -> LoadedMonth:
    """A month's tables: its CSVs read and validated (the ingest's rules; a missing labels.csv means
    no labels yet), or the lake's months up to ``as_of``."""
    from pyspark.sql import functions as F

    started = time.perf_counter()
    if month_dir is None:
        lake_root = settings.resolved_lake_path
        tables, earlier = lake.read_month_tables(spark, lake_root, as_of)
        emit(f"[Month] as_of={as_of} from the lake {lake_root} ({'with' if 'labels' in tables else 'no'} labels)")
        return LoadedMonth(as_of, tables, earlier, f"lake {lake_root}")
    lake_known = lake.known_users(spark, settings.resolved_lake_path) if _lake_exists(spark, settings) else None
    if lake_known is not None:
        known = lake_known if known is None else known.unionByName(lake_known)
    month = read_csv_month(spark, month_dir, limits_from(settings), known_users=known, require_labels=False)
    tables = {name: df.withColumn(AS_OF, F.lit(as_of).cast("date")) for name, df in month.tables.items()}
    rows = ", ".join(f"{name}={n:,}" for name, n in month.rows.items())
    emit(
        f"[Validate] {month_dir}: {len(month.tables)} files valid ({rows}) in {time.perf_counter() - started:.1f}s"
        + ("" if "labels" in month.tables else "; no labels.csv: labels not arrived yet")
    )
    return LoadedMonth(as_of, tables, False, f"CSV {month_dir}", month)


def _lake_exists(spark: SparkSession, settings: Settings) -> bool:
    return bool(lake.lake_months(spark, settings.resolved_lake_path))


def feature_table(month: LoadedMonth, emit: Emit) -> FeatureTable:
    table = build_feature_table(month.tables, month.as_of, earlier_months=month.earlier_months)
    rate = f"{table.churn_rate:.4f}" if table.churn_rate is not None else "n/a (no labels yet)"
    emit(f"[Dataset] as_of={month.as_of} rows={table.rows} churn_rate={rate}")
    return table


@dataclass
class Scored:
    ref: DataFrame
    cur: DataFrame
    population: str | None  # "unseen" when the prediction drift compares the unseen users only


def score_months(
    spark: SparkSession,
    model: ScoringModel | None,
    ref: FeatureTable,
    cur: FeatureTable,
    emit: Emit,
    threads: int = 1,
) -> Scored:
    """Both months with ``churn_probability`` (and ``_unseen``), persisted: drift and performance
    read them. ``threads``: onnxruntime's per task (the local monitor's ``score_threads`` gives its
    probabilities bit for bit)."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    columns = [ENTITY, *FEATURES]
    ref_df = ref.frame.select(*columns, *([LABEL] if ref.has_labels else []))
    cur_df = cur.frame.select(*columns, *([LABEL] if cur.has_labels else []))
    if model is None:
        return Scored(ref_df, cur_df, None)
    shipped = spark.sparkContext.broadcast(model.onnx_bytes)
    out = []
    for df in (ref_df, cur_df):
        scored = mark_unseen(spark, score(df, shipped, threads), model.trained_user_ids)
        out.append(scored.persist(StorageLevel.MEMORY_AND_DISK))
    aggs = [F.avg(PREDICTION).alias("mean"), F.count("*").alias("n")]
    if model.trained_user_ids is not None:
        aggs.append(F.sum(F.col(UNSEEN).cast("long")).alias("unseen"))
    ref_s, cur_s = (o.agg(*aggs).first() for o in out)
    assert ref_s is not None and cur_s is not None
    population = None
    compared = "every user (training users unknown)"
    if model.trained_user_ids is not None and ref_s["unseen"] and cur_s["unseen"]:
        population = "unseen"
        compared = f"the users v{model.version} was not trained on ({int(ref_s['unseen'])} / {int(cur_s['unseen'])})"
    emit(
        f"[Predictions] v{model.version} mean churn_probability: ref={ref_s['mean']:.4f} cur={cur_s['mean']:.4f} "
        f"(all users, ONNX on Spark executors); prediction drift compares {compared}"
    )
    return Scored(out[0], out[1], population)


def target_drift(ref: FeatureTable, cur: FeatureTable, emit: Emit) -> TargetDrift | None:
    missing = [name for name, t in (("reference", ref), ("current", cur)) if not t.has_labels]
    if missing:
        emit(f"[Target drift] n/a: the {' and '.join(missing)} month has no labels yet")
        return None
    assert ref.churn_rate is not None and cur.churn_rate is not None
    t = TargetDrift(ref.churn_rate, cur.churn_rate, abs(cur.churn_rate - ref.churn_rate))
    emit(f"[Target drift] ref_rate={t.ref_rate:.4f} cur_rate={t.cur_rate:.4f} abs_diff={t.abs_diff:.4f}")
    return t


def compute_drift(
    scored: Scored, ref: FeatureTable, cur: FeatureTable, request: MonitorRequest, settings: Settings, emit: Emit
) -> tuple[Any, spark_drift.DriftComputation]:
    """Merged counts → every column's score → the DriftResult and its report files."""
    from pyspark.sql import functions as F

    started = time.perf_counter()
    with_label = ref.has_labels and cur.has_labels
    with_prediction = PREDICTION in scored.ref.columns
    specs = spark_drift.column_specs(with_label, with_prediction)

    def side(df: DataFrame, value: int) -> DataFrame:
        cols = [F.col(f"`{s.name}`") for s in specs if s.name != PREDICTION]
        if with_prediction:
            p = F.col(PREDICTION)
            cols.append((F.when(F.col(UNSEEN), p) if scored.population == "unseen" else p).alias(PREDICTION))
        return df.select(*cols, F.lit(value).alias(spark_drift.SIDE))

    both = side(scored.ref, spark_drift.REF).unionByName(side(scored.cur, spark_drift.CUR))
    computation = spark_drift.compute(
        both, specs, exact_max_values=settings.spark_exact_max_values, bins=settings.spark_drift_bins
    )
    labels_missing = tuple(t.as_of for t in (ref, cur) if not t.has_labels)
    result = spark_drift.build_result(
        computation,
        as_of_ref=request.as_of_ref,
        as_of_cur=request.as_of_cur,
        threshold=request.threshold,
        report_dir=request.report_dir,
        labels_missing=labels_missing,
        prediction_population=scored.population,
        started=started,
    )
    scores = spark_drift.write_reports(result, computation)
    drifted = ", ".join(f"{f.feature} ({f.method} {f.score:.4g} vs {f.threshold:g})" for f in result.drifted_features)
    target = (
        f"ValueDrift({LABEL})={result.target_value_drift:.4g} ({result.target_value_drift_method})"
        if result.target is not None
        else f"ValueDrift({LABEL}) n/a (no labels)"
    )
    binned = computation.binned_columns
    how = f"exact value counts for {len(computation.exact_columns)} columns" + (
        f", bins for {', '.join(binned)}" if binned else ""
    )
    emit(
        f"[Drift] drifted features {result.drifted_count}/{len(result.feature_drifts)}: {drifted or 'none'}; "
        f"{target} (Evidently's tests from merged counts: {how}; {computation.seconds:.1f}s)"
    )
    if result.prediction is not None:
        p = result.prediction
        emit(
            f"[Prediction drift] ValueDrift({p.column})={p.score:.4g} ({p.method}, threshold {p.threshold:g}): "
            f"{'DRIFTED' if p.drifted else 'not drifted'}; {p.population} users: mean ref={p.ref_mean:.4f} "
            f"(n={p.n_ref}) cur={p.cur_mean:.4f} (n={p.n_cur})"
        )
    emit(f"[Drift] summary_json={result.summary_json} scores_json={scores}")
    return result, computation


def measure_performance(
    scored: Scored, model: ScoringModel | None, model_note: str | None, cur: FeatureTable, settings: Settings,
    emit: Emit,
) -> MonitorPerformance:  # fmt: skip
    if model is None:
        perf = MonitorPerformance(
            cur.as_of, None, None, None, None, None, {"model": model_note or "no production model"}
        )
    else:
        perf = measure(
            scored.cur, model, cur.as_of, has_labels=cur.has_labels, partitions=settings.spark_shuffle_partitions
        )
    emit(perf.line())
    return perf


def write_feature_tables(tables: list[FeatureTable], settings: Settings, emit: Emit) -> list[str]:
    """Each month's point-in-time table, as Parquet for a Feast FileSource (the lake's feature_table)."""
    uri = lake.feature_table_uri(settings.resolved_lake_path)
    written = []
    for t in tables:
        written.append(write_feature_table(t, uri))
    emit(f"[Feature table] {len(written)} month(s) written for Feast: {fs.join(uri, f'{AS_OF}=…')}")
    return written


def run_spark_monitor(
    request: MonitorRequest,
    inputs: SparkInputs,
    settings: Settings,
    *,
    emit: Emit,
    step: StepRunner = run_directly,
) -> dict[str, Any]:
    """The monitor on Spark; returns what :func:`streamflow.monitoring.monitor.run_monitor` returns
    (the same summary, ``metrics_push``, ``retrain`` = None, ``decision_line``) plus ``engine``."""
    if request.retrain:
        raise SparkRetrainError(
            "--retrain runs the single-machine trainer: run `streamflow monitor --engine local --retrain` "
            "(the Spark engine monitors and decides; it does not train)"
        )
    ref_as_of, cur_as_of = request.as_of_ref, request.as_of_cur
    started = time.perf_counter()
    with spark_session(settings) as spark:
        emit(f"[Engine] spark {spark.version} master={spark.sparkContext.master} ({inputs.describe('ref')} / "
             f"{inputs.describe('cur')})")  # fmt: skip
        months: list[LoadedMonth] = []
        tables: list[FeatureTable] = []
        scored: Scored | None = None
        try:
            ref_month = step("load_month", load_month, spark, settings, inputs.ref_month, ref_as_of, None, emit)
            months.append(ref_month)
            known = ref_month.users() if inputs.cur_month is not None else None
            cur_month = step("load_month", load_month, spark, settings, inputs.cur_month, cur_as_of, known, emit)
            months.append(cur_month)
            ref_t = step("build_feature_table", feature_table, ref_month, emit)
            tables.append(ref_t)
            cur_t = step("build_feature_table", feature_table, cur_month, emit)
            tables.append(cur_t)
            for m in months:
                m.release()
            model, model_note = step("load_production_model", local.load_model, settings, emit)
            scored = step("score_months", score_months, spark, model, ref_t, cur_t, emit, settings.score_threads)
            step("compute_target_drift", target_drift, ref_t, cur_t, emit)
            result, _ = step("compute_drift", compute_drift, scored, ref_t, cur_t, request, settings, emit)
            performance = step(
                "measure_performance", measure_performance, scored, model, model_note, cur_t, settings, emit
            )
            outcome = step("decide_action", local.decide_action, result, performance, request, emit)
            summary = local.monitor_summary(result, performance, outcome, request)
            step("write_summary", local.write_summary, result, summary)
            pushed = step(
                "push_drift_metrics",
                local.publish_drift_metrics,
                result,
                request.pushgateway_url,
                emit,
                outcome.decision,
                local.model_quality(performance, request),
            )
            written = step("write_feature_tables", write_feature_tables, [ref_t, cur_t], settings, emit)
        finally:
            for m in months:
                m.release()
            if scored is not None:
                scored.ref.unpersist()
                scored.cur.unpersist()
            for t in tables:
                t.frame.unpersist()
        master = spark.sparkContext.master
    if outcome.decision is decision_lib.Decision.RETRAINING_TRIGGERED:
        for line in local.simulated_retrain_lines(
            ref_as_of, cur_as_of, result.drift_share, request.threshold, outcome.performance_reasons
        ):
            emit(line.replace("streamflow monitor --ref", "streamflow monitor --engine local --ref"))
    line = decision_lib.format_decision_line(result, outcome)
    emit(line)
    engine = {
        "name": "spark",
        "master": master,
        "inputs": {"ref": inputs.describe("ref"), "cur": inputs.describe("cur")},
        "feature_tables": written,
        "scores_json": str(spark_drift.scores_path(result)),
        "seconds": round(time.perf_counter() - started, 3),
    }
    log.info("event=spark_monitor_done ref=%s cur=%s decision=%s seconds=%.1f", ref_as_of, cur_as_of,
             outcome.decision.value, engine["seconds"])  # fmt: skip
    return {**summary, "metrics_push": pushed, "retrain": None, "decision_line": line, "engine": engine}
