"""Batch scoring on Spark with the production model's ONNX artefact: ``mapInPandas`` with
onnxruntime in the executors. The artefact's bytes are broadcast once; each task loads them once
(``OnnxModel`` with the monitor's ``score_threads``, the layout metadata checked — what the
monitor loads; onnxruntime's tree ensemble adds the trees in an order that depends on its thread
count, so the same count gives the same float32 probabilities) and scores its Arrow batches.
The probabilities are those of
:meth:`~streamflow.monitoring.production_model.ScoringModel.churn_probability`, row for row."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from streamflow.core.data_model import ENTITY, FEATURE_DTYPES, FEATURES
from streamflow.monitoring.drift import PREDICTION

if TYPE_CHECKING:
    from pyspark import Broadcast
    from pyspark.sql import DataFrame, SparkSession

UNSEEN = "_unseen"  # True: a user the model was not trained on


def score(frame: DataFrame, model_bytes: Broadcast[bytes], threads: int = 1) -> DataFrame:
    """``frame`` plus ``churn_probability`` (double, in [0, 1]); ``threads``: onnxruntime's per task."""
    from pyspark.sql.types import DoubleType, StructField, StructType

    schema = StructType([*frame.schema.fields, StructField(PREDICTION, DoubleType(), nullable=False)])

    def run(batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from streamflow.model.onnx_model import OnnxModel

        model = OnnxModel(model_bytes.value, threads=threads)  # once per task
        for batch in batches:
            X = batch[FEATURES].astype(FEATURE_DTYPES)
            proba = np.clip(np.asarray(model.predict_proba(X), dtype=np.float64), 0.0, 1.0)
            yield batch.assign(**{PREDICTION: proba})

    return frame.mapInPandas(run, schema)


def mark_unseen(spark: SparkSession, frame: DataFrame, trained_user_ids: frozenset[str] | None) -> DataFrame:
    """``frame`` plus ``_unseen`` (the model's training users are known) — or unchanged."""
    from pyspark.sql import functions as F

    if trained_user_ids is None:
        return frame
    trained = spark.createDataFrame(pd.DataFrame({ENTITY: sorted(trained_user_ids), "_trained": True}))
    return frame.join(trained, on=ENTITY, how="left").withColumn(UNSEEN, F.col("_trained").isNull()).drop("_trained")
