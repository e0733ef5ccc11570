"""Integration fixtures: a real embedded PostgreSQL, real Feast stores and a real
MLflow registry under a temporary STREAMFLOW_HOME. Everything started is stopped."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from streamflow.db.engine import get_engine
from tests.helpers.stack import Stack, course_months_stack, make_settings

pytestmark = pytest.mark.integration


# The executors' interpreter, pinned when the suite starts: the virtualenv's, which has pyarrow
# (a worker started from another interpreter fails every mapInPandas with "No module named pyarrow").
THIS_PYTHON = sys.executable


@pytest.fixture(scope="session", autouse=True)
def _no_outside_mlflow_uri() -> Iterator[None]:
    """MLFLOW_TRACKING_URI overrides every Settings' own store (documented behaviour): one set in
    the environment running the tests must not send the test stacks to a foreign registry.
    (In-process, `configure_mlflow` leaves the variable as it found it.)"""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved


@pytest.fixture(scope="session")
def course_stack(tmp_path_factory: pytest.TempPathFactory, course_seeds: Path) -> Iterator[Stack]:
    """Both course months ingested and materialized (online = 2024-02-29); a model
    trained on 2024-01-31 holds the production alias."""
    with course_months_stack(tmp_path_factory.mktemp("course_home"), course_seeds) as stack:
        yield stack


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port for the session (always stopped)."""
    from tests.helpers.redis_server import redis_server

    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One local[2] SparkSession for every Spark test (started on first use, always stopped). The
    engine's own ``spark_session`` finds it active and uses it as it is."""
    from streamflow.spark.session import spark_session

    settings = make_settings(
        tmp_path_factory.mktemp("spark_home"),
        spark_master="local[2]",
        spark_python=THIS_PYTHON,
        spark_driver_memory="1g",
        spark_shuffle_partitions=4,
    )
    with spark_session(settings) as session:
        yield session


# ---- over the course stack: its users and its production model ------------------------------
@pytest.fixture(scope="session")
def user_ids(course_stack: Stack) -> list[str]:
    with get_engine(course_stack.settings).connect() as conn:
        return [r[0] for r in conn.execute(sa.text("SELECT user_id FROM users ORDER BY user_id"))]


@pytest.fixture(scope="session")
def production(course_stack: Stack) -> Any:
    from streamflow.training.registry import production_version

    info = production_version(course_stack.settings)
    assert info is not None
    return info
