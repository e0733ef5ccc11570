"""Prefect flow ``monitor_month``: the monitor of :mod:`streamflow.monitoring.monitor`, each step a
Prefect task (build_dataset ×2, validate_inputs, load_production_model, score_months,
compute_target_drift, run_evidently, measure_performance, decide_action, write_summary,
push_drift_metrics, retrain_and_maybe_promote).

Parameters are explicit and never secret (they are stored by the Prefect API and shown in its UI);
the settings come from the environment of the process that runs the flow (``STREAMFLOW_*``,
``REPORT_DIR``, ``MLFLOW_TRACKING_URI``), like any deployed flow. Importing this module imports
Prefect: call :func:`streamflow.flows.prefect_environment` first to keep Prefect's local state under
``STREAMFLOW_HOME``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from streamflow.core.dates import DEMO_CUR_AS_OF, DEMO_REF_AS_OF
from streamflow.core.errors import InputError
from streamflow.core.settings import get_settings
from streamflow.monitoring.monitor import MonitorInputError, MonitorRequest, run_monitor

T = TypeVar("T")

_started_lock = threading.Lock()


class MonitorEngineError(MonitorInputError):
    """An engine the monitor does not have, or inputs of one engine given to the other."""


_bodies_started = 0


def flow_bodies_started() -> int:
    """How many ``monitor_month`` bodies this process has entered (tells an orchestrator failure
    before the run from one during it)."""
    return _bodies_started


def prefect_step(name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Step runner of :func:`~streamflow.monitoring.monitor.run_monitor`: the step as a Prefect task.
    Inputs are frames and models, so nothing is cached or persisted."""
    runnable = task(name=name, cache_policy=NO_CACHE, persist_result=False)(fn)
    result: T = runnable(*args, **kwargs)
    return result


def emit_line(message: str) -> None:
    """One line of the monitor's output (stdout; the course prints too)."""
    print(message, flush=True)


class _StripInputErrorTracebacks(logging.Filter):
    """Prefect logs every task/flow failure with its traceback; for input errors the message is
    the whole story, so keep the line and drop the stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, InputError):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_input_error_tracebacks() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _StripInputErrorTracebacks) for f in logger.filters):
            logger.addFilter(_StripInputErrorTracebacks())


@flow(name="monitor_month")
def monitor_month(
    as_of_ref: str = DEMO_REF_AS_OF,
    as_of_cur: str = DEMO_CUR_AS_OF,
    threshold: float | None = None,
    retrain: bool = False,
    report_dir: str | None = None,
    min_delta: float | None = None,
    pushgateway_url: str | None = None,
    engine: str = "local",
    ref_month: str | None = None,
    cur_month: str | None = None,
) -> dict[str, Any]:
    """Compare two months, publish the drift metrics, decide, and (optionally) retrain for real.

    ``engine``: ``local`` (PostgreSQL + Feast + Evidently in this process) or ``spark`` (Apache
    Spark at ``STREAMFLOW_SPARK_MASTER``; months from the ``ref_month`` / ``cur_month`` CSV
    directories, or from the lake when they are None — see docs/scale.md).

    ``threshold`` defaults to ``settings.drift_threshold`` (0.3), ``report_dir`` to
    ``settings.evidently_dir`` (``REPORT_DIR`` or ``STREAMFLOW_HOME/reports/evidently``),
    ``min_delta`` to ``settings.promote_min_delta``, ``pushgateway_url`` to
    ``settings.pushgateway_url``. Returns the monitor summary (see ``run_monitor``).
    """
    global _bodies_started
    with _started_lock:
        _bodies_started += 1
    quiet_input_error_tracebacks()
    settings = get_settings()
    request = MonitorRequest.build(
        settings,
        as_of_ref=as_of_ref,
        as_of_cur=as_of_cur,
        threshold=threshold,
        retrain=retrain,
        report_dir=report_dir,
        min_delta=min_delta,
        pushgateway_url=pushgateway_url,
    )
    if engine == "spark":
        from streamflow.spark.monitor import SparkInputs, run_spark_monitor

        return run_spark_monitor(
            request, SparkInputs(ref_month, cur_month), settings, emit=emit_line, step=prefect_step
        )
    if engine != "local":
        raise MonitorEngineError(f"engine must be local or spark, got {engine!r}")
    if ref_month or cur_month:
        raise MonitorEngineError("ref_month / cur_month are inputs of the Spark engine: set engine='spark'")
    return run_monitor(request, settings, emit=emit_line, step=prefect_step)
