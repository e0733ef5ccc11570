"""The point-in-time feature table of one month on Spark — what Feast's offline retrieval gives the
single-machine monitor (``streamflow.features.dataset.build_point_in_time_dataset``):

* the entities are the users with a ``subscriptions`` row at ``as_of``;
* each feature view takes, per user, its source table's latest row at or before ``as_of`` (Feast's
  point-in-time join with ``ttl=0``: a snapshot stays valid until the next one);
* flags become 1.0 / 0.0 / null (``FEATURE_DTYPES``); ``event_timestamp`` is midnight UTC of as_of;
* ``churn_label`` (0/1) comes from the month's own labels; a month without labels has no label
  column, a month whose labels miss some users is refused.

The table is also written for Feast (Parquet, partitioned by ``as_of``, see :func:`write_feature_table`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamflow.core.data_model import (
    ENTITY,
    FEATURE_VIEWS,
    FEATURES,
    FLAG_FEATURES,
    INT_FEATURES,
    LABEL,
    SOURCE_TABLES,
    TIMESTAMP,
)
from streamflow.core.dates import as_of_timestamp, parse_as_of
from streamflow.core.errors import InputError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

AS_OF = "as_of"
SOURCE_OF_SNAPSHOT = {t.snapshot_table: t.name for t in SOURCE_TABLES if t.snapshot_table}
FEATURE_TABLE_DIR = "feature_table"


class MonthLabelsError(InputError, LookupError):
    """Some users of a month have no label (broken data, not labels still to come)."""


class NoEntitiesError(InputError, LookupError):
    """The month has no subscriptions row: nothing to build a feature table for."""


@dataclass
class FeatureTable:
    """``user_id``, ``event_timestamp``, the 14 features and (when the month has labels) ``churn_label``."""

    as_of: str
    frame: DataFrame
    rows: int
    has_labels: bool
    churn_rate: float | None
    from_earlier_months: dict[str, int]  # feature view → users whose row came from an earlier month


def _latest_at_or_before(table: DataFrame, as_of: str, users: DataFrame) -> DataFrame:
    """The latest row at or before ``as_of`` of each user in ``users`` (Feast's point-in-time row)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    earlier = table.filter(F.col(AS_OF) < F.lit(as_of).cast("date")).join(users, on=ENTITY, how="left_semi")
    rank = F.row_number().over(Window.partitionBy(ENTITY).orderBy(F.col(AS_OF).desc()))
    return earlier.withColumn("_rank", rank).filter(F.col("_rank") == 1).drop("_rank")


def build_feature_table(tables: Mapping[str, DataFrame], as_of: str, *, earlier_months: bool) -> FeatureTable:
    """The point-in-time table of ``as_of`` from source tables holding an ``as_of`` (date) column
    (``labels`` may be absent). ``earlier_months``: the tables also hold earlier months, used for
    users that lack a row at ``as_of`` in some view (never the case for validated months)."""
    from pyspark.sql import functions as F

    day = parse_as_of(as_of).isoformat()
    at = F.lit(day).cast("date")
    entity = tables["subscriptions"].filter(F.col(AS_OF) == at).select(ENTITY)
    frame = entity
    for fv, (snapshot_table, features) in FEATURE_VIEWS.items():
        source = tables[SOURCE_OF_SNAPSHOT[snapshot_table]]
        rows = source.filter(F.col(AS_OF) == at).select(ENTITY, *features, F.lit(True).alias(f"_has_{fv}"))
        frame = frame.join(rows, on=ENTITY, how="left")
    frame = frame.cache()
    gaps = frame.agg(*(F.sum(F.col(f"_has_{fv}").isNull().cast("long")).alias(fv) for fv in FEATURE_VIEWS)).first()
    from_earlier = {fv: int(gaps[fv] or 0) for fv in FEATURE_VIEWS} if gaps is not None else {}
    if any(from_earlier.values()) and earlier_months:
        patched = frame
        for fv, (snapshot_table, features) in FEATURE_VIEWS.items():
            if not from_earlier[fv]:
                continue
            lacking = frame.filter(F.col(f"_has_{fv}").isNull()).select(ENTITY)
            older = _latest_at_or_before(tables[SOURCE_OF_SNAPSHOT[snapshot_table]], day, lacking)
            older = older.select(ENTITY, *(F.col(c).alias(f"_old_{c}") for c in features))
            patched = patched.join(older, on=ENTITY, how="left").select(
                ENTITY,
                *(
                    F.coalesce(F.col(c), F.col(f"_old_{c}")).alias(c) if c in features else F.col(c)
                    for c in patched.columns
                    if c != ENTITY
                ),
            )
        frame.unpersist()
        frame = patched
    out_cols = [
        F.col(ENTITY),
        F.lit(as_of_timestamp(parse_as_of(day))).alias(TIMESTAMP),
        *(
            F.col(c).cast("double").alias(c)
            if c in FLAG_FEATURES
            else F.col(c).cast("long").alias(c)
            if c in INT_FEATURES
            else F.col(c)
            for c in FEATURES
        ),
    ]
    labels = tables.get("labels")
    has_labels = False
    if labels is not None:
        month_labels = labels.filter(F.col(AS_OF) == at).select(ENTITY, F.col(LABEL).alias("_label"))
        has_labels = month_labels.limit(1).count() > 0
        if has_labels:
            frame = frame.join(month_labels, on=ENTITY, how="left")
            out_cols.append(F.col("_label").cast("long").alias(LABEL))
    result = frame.select(*out_cols).cache()
    stats = result.agg(
        F.count("*").alias("n"),
        *(
            [F.sum(F.col(LABEL).isNull().cast("long")).alias("missing"), F.avg(LABEL).alias("rate")]
            if has_labels
            else []
        ),
    ).first()
    assert stats is not None
    if frame.is_cached:
        frame.unpersist()
    n = int(stats["n"])
    if n == 0:
        result.unpersist()
        raise NoEntitiesError(f"no subscriptions row for as_of={day}: no feature table")
    if has_labels and int(stats["missing"] or 0):
        result.unpersist()
        raise MonthLabelsError(f"{int(stats['missing'])} users of as_of={day} have no label in labels")
    rate = float(stats["rate"]) if has_labels else None
    log.info("event=spark_feature_table as_of=%s rows=%d labels=%s", day, n, has_labels)
    return FeatureTable(day, result, n, has_labels, rate, {k: v for k, v in from_earlier.items() if v})


def write_feature_table(table: FeatureTable, uri: str) -> str:
    """Write the table for Feast (a FileSource over ``uri``, timestamp field ``event_timestamp``):
    Parquet partitioned by ``as_of``, replacing that month's partition only. Returns the
    partition's location."""
    from pyspark.sql import functions as F

    from streamflow.spark import fs

    out = table.frame.select(ENTITY, TIMESTAMP, *FEATURES).withColumn(AS_OF, F.lit(table.as_of).cast("date"))
    out.write.mode("overwrite").option("partitionOverwriteMode", "dynamic").partitionBy(AS_OF).parquet(
        fs.spark_uri(uri)
    )
    return fs.join(uri, f"{AS_OF}={table.as_of}")
