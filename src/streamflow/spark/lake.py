"""The lake: the months' six tables as Parquet, partitioned by ``as_of``, under one root (a local
directory here, object storage in production through Hadoop's filesystems)::

    {lake}/users/as_of=2024-01-31/part-….parquet          typed columns of the course schema
    {lake}/subscriptions/as_of=…/  usage_agg_30d/  payments_agg_90d/  support_agg_90d/  labels/
    {lake}/_months/as_of=2024-01-31/part-….json          the month's marker: its row counts
    {lake}/feature_table/as_of=…/                        the point-in-time feature table (for Feast)

``streamflow lake export MONTH_DIR --as-of D`` validates the month's CSVs on Spark (the ingest's
rules: nothing is written when one fails), then replaces the month's partition of every table and
writes its marker last. Readers only see months that have a marker, so a month being rewritten (or
whose export crashed half-way) is not read; the marker is removed before a month is rewritten.
A month without a ``labels`` partition is read as a month whose labels have not arrived yet."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from streamflow.core.data_model import SOURCE_TABLES
from streamflow.core.dates import parse_as_of
from streamflow.core.errors import InputError
from streamflow.core.settings import Settings
from streamflow.ingest.validation import limits_from
from streamflow.spark import fs
from streamflow.spark.csv_month import LINE, read_csv_month
from streamflow.spark.features import AS_OF, FEATURE_TABLE_DIR

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

MONTHS_DIR = "_months"
LABELS = "labels"


class LakeMonthMissingError(InputError, LookupError):
    """A month that is not in the lake (never exported, or its export did not finish)."""


@dataclass(frozen=True)
class ExportResult:
    lake: str
    as_of: str
    rows: dict[str, int]


def table_uri(lake: str, name: str) -> str:
    return fs.join(lake, name)


def feature_table_uri(lake: str) -> str:
    return fs.join(lake, FEATURE_TABLE_DIR)


def _marker_uri(lake: str, as_of: str) -> str:
    return fs.join(lake, MONTHS_DIR, f"{AS_OF}={as_of}")


def _exists(spark: SparkSession, uri: str) -> bool:
    if fs.is_local(uri):
        return fs.local_path(uri).exists()
    return fs.HadoopFS(spark, uri).exists(uri)


def _delete(spark: SparkSession, uri: str) -> None:
    if fs.is_local(uri):
        import shutil

        shutil.rmtree(fs.local_path(uri), ignore_errors=True)
    else:
        fs.HadoopFS(spark, uri).delete(uri)


def _subdirs(spark: SparkSession, uri: str) -> list[str]:
    if fs.is_local(uri):
        p = fs.local_path(uri)
        return sorted(d.name for d in p.iterdir() if d.is_dir()) if p.is_dir() else []
    return fs.HadoopFS(spark, uri).list_dirs(uri)


def lake_months(spark: SparkSession, lake: str) -> list[str]:
    """The months whose export finished (they have a marker), oldest first."""
    prefix = f"{AS_OF}="
    return sorted(d[len(prefix) :] for d in _subdirs(spark, fs.join(lake, MONTHS_DIR)) if d.startswith(prefix))


def has_labels(spark: SparkSession, lake: str, as_of: str) -> bool:
    return _exists(spark, fs.join(table_uri(lake, LABELS), f"{AS_OF}={as_of}"))


def read_table(spark: SparkSession, lake: str, name: str, months: list[str]) -> DataFrame:
    """The rows of table ``name`` for ``months`` (``as_of`` as a date column)."""
    from pyspark.sql import functions as F

    base = fs.spark_uri(table_uri(lake, name))
    df = spark.read.option("basePath", base).parquet(*(f"{base}/{AS_OF}={m}" for m in months))
    return df.withColumn(AS_OF, F.col(AS_OF).cast("date"))


def read_month_tables(spark: SparkSession, lake: str, as_of: str) -> tuple[dict[str, DataFrame], bool]:
    """Every table of the months up to ``as_of`` (the point-in-time join may need earlier ones), and
    whether earlier months are included. ``labels`` is absent when the month has no labels yet."""
    day = parse_as_of(as_of).isoformat()
    months = lake_months(spark, lake)
    if day not in months:
        raise LakeMonthMissingError(
            f"as_of={day} is not in the lake {lake} (months there: {', '.join(months) or 'none'}); "
            "export it first (streamflow lake export MONTH_DIR --as-of YYYY-MM-DD)"
        )
    upto = [m for m in months if m <= day]
    tables = {t.name: read_table(spark, lake, t.name, upto) for t in SOURCE_TABLES if t.name != LABELS}
    if has_labels(spark, lake, day):
        tables[LABELS] = read_table(spark, lake, LABELS, [day])
    return tables, len(upto) > 1


def known_users(spark: SparkSession, lake: str) -> DataFrame | None:
    """Every user of the lake's months (what the single-machine ingest finds in its ``users`` table)."""
    months = lake_months(spark, lake)
    return read_table(spark, lake, "users", months).select("user_id") if months else None


def export_month(spark: SparkSession, settings: Settings, month_dir: str, as_of: str) -> ExportResult:
    """Validate ``month_dir``'s six CSVs on Spark and write them as the lake's month ``as_of``
    (nothing is written when validation fails)."""
    from pyspark.sql import functions as F

    day = parse_as_of(as_of).isoformat()
    lake = settings.resolved_lake_path
    month = read_csv_month(spark, month_dir, limits_from(settings), known_users=known_users(spark, lake))
    try:
        marker = _marker_uri(lake, day)
        _delete(spark, marker)
        for name, df in month.tables.items():
            out = df.drop(LINE).withColumn(AS_OF, F.lit(day).cast("date"))
            out.write.mode("overwrite").option("partitionOverwriteMode", "dynamic").partitionBy(AS_OF).parquet(
                fs.spark_uri(table_uri(lake, name))
            )
        info = {"as_of": day, "source": month_dir, "rows": month.rows, "exported_at": datetime.now(UTC).isoformat()}
        spark.createDataFrame([(json.dumps(info),)], "value string").coalesce(1).write.mode("overwrite").text(
            fs.spark_uri(marker)
        )
    finally:
        month.unpersist()
    log.info("event=lake_export as_of=%s lake=%s rows=%s", day, lake, month.rows)
    return ExportResult(lake, day, dict(month.rows))
