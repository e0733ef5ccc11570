"""The SparkSession of a run: built from the settings (master URL, extra configuration, executors'
Python), stopped when the run ends — unless the caller already had one running (tests share one
session; a notebook keeps its own), which is then used as it is and left running."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from streamflow.core.errors import OperationalError
from streamflow.core.settings import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

APP_NAME = "streamflow"
_PYSPARK_PYTHON = "PYSPARK_PYTHON"
_SPARK_LOCAL_IP = "SPARK_LOCAL_IP"
_SPARK_LOCAL_DIRS = "SPARK_LOCAL_DIRS"


class SparkUnavailableError(OperationalError):
    """Spark could not start (no Java, a master that does not answer, a bad configuration)."""


def is_local_master(master: str) -> bool:
    return master == "local" or master.startswith("local[")


def spark_conf(settings: Settings) -> dict[str, str]:
    """The configuration StreamFlow starts Spark with; ``settings.spark_conf`` wins over every default."""
    log4j = resources.files("streamflow.spark").joinpath("log4j2.properties")
    conf = {
        "spark.master": settings.spark_master,
        "spark.app.name": APP_NAME,
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.sql.shuffle.partitions": str(settings.spark_shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(settings.spark_batch_rows),
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": "false",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={log4j}",
    }
    if is_local_master(settings.spark_master):
        conf.update(
            {
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
            }
        )
    conf.update(settings.spark_conf)
    return conf


def local_dir(settings: Settings) -> Path:
    """Spark's scratch space (shuffle files, spills) with a local master: under the home."""
    return settings.home / "spark" / "tmp"


def executors_python(settings: Settings) -> str:
    return settings.spark_python or sys.executable


@contextlib.contextmanager
def spark_session(settings: Settings) -> Iterator[SparkSession]:
    """The active SparkSession if there is one (left running), else a new one from ``settings``
    (stopped on the way out, whatever happens)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    conf = spark_conf(settings)
    if is_local_master(settings.spark_master):
        local_dir(settings).mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    # PySpark reads the executors' interpreter from PYSPARK_PYTHON when the context starts (and ships
    # it with every Python function); set it for that moment only.
    # A local master binds to the loopback interface (spark_conf); SPARK_LOCAL_IP tells the JVM so
    # before it looks up the host's address (otherwise it warns that the hostname is loopback).
    # Its scratch space goes under the home through SPARK_LOCAL_DIRS (the spark.local.dir
    # configuration is deprecated for that and makes Spark warn on every start).
    launch_env = {_PYSPARK_PYTHON: executors_python(settings)}
    if is_local_master(settings.spark_master):
        if _SPARK_LOCAL_IP not in os.environ:
            launch_env[_SPARK_LOCAL_IP] = "127.0.0.1"
        launch_env[_SPARK_LOCAL_DIRS] = str(local_dir(settings))
    saved = {key: os.environ.get(key) for key in launch_env}
    os.environ.update(launch_env)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:
        raise SparkUnavailableError(
            f"Spark could not start with master {settings.spark_master!r}: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        ) from exc
    finally:
        for key, before in saved.items():
            if before is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = before
    log.info("event=spark_started master=%s version=%s", settings.spark_master, spark.version)
    try:
        yield spark
    finally:
        spark.stop()
        log.info("event=spark_stopped master=%s", settings.spark_master)
