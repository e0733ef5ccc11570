"""Prefect flows (``monitor_month``, ``monthly_monitoring``): thin wrappers over the library, and
the choice of running the monitor through Prefect or directly.

This module does not import Prefect: :func:`run_monitor_with` only does when it is asked to.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, Literal

from streamflow.core.errors import OperationalError
from streamflow.core.progress import ProgressCallback, no_progress
from streamflow.core.settings import Settings
from streamflow.monitoring.monitor import MonitorRequest, progress_to, run_monitor

log = logging.getLogger(__name__)

Orchestrator = Literal["auto", "prefect", "none"]
Engine = Literal["local", "spark"]


class OrchestratorUnavailable(OperationalError):
    """Prefect could not run the flow (its API server did not answer)."""


class _LinesTo(io.TextIOBase):
    """A text stream that hands every complete line to ``emit`` (the flow prints its lines).
    Whatever ``emit`` itself writes to stdout goes to the real stdout (no recursion)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._partial = ""
        self._stdout = sys.stdout
        self._emitting = False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self._emitting:
            return self._stdout.write(text)
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._send(line)
        return len(text)

    def _send(self, line: str) -> None:
        self._emitting = True
        try:
            self._emit(line)
        finally:
            self._emitting = False

    def flush(self) -> None:
        if self._emitting:
            self._stdout.flush()
        elif self._partial:
            line, self._partial = self._partial, ""
            self._send(line)


def prefect_environment(settings: Settings) -> None:
    """Keep Prefect's local state (ephemeral server DB, logs) under STREAMFLOW_HOME unless a
    Prefect API or home is configured explicitly. Call before importing prefect (Prefect reads
    its settings when imported); only ever called at run time, never at import."""
    os.environ.setdefault("PREFECT_HOME", str(settings.home / "prefect"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(settings.prefect_startup_seconds))


def run_monitor_with(
    orchestrator: Orchestrator,
    request: MonitorRequest,
    settings: Settings,
    *,
    emit: Callable[[str], None],
    progress: ProgressCallback = no_progress,
    engine: Engine = "local",
    ref_month: str | None = None,
    cur_month: str | None = None,
) -> tuple[dict[str, Any], str]:
    """Run the monitor for ``request``; returns (summary, how it ran: "prefect" or "direct").
    ``progress`` receives the rows of the long steps (either way).

    ``engine``: ``local`` (:func:`~streamflow.monitoring.monitor.run_monitor`) or ``spark``
    (:func:`streamflow.spark.monitor.run_spark_monitor`, months from ``ref_month`` / ``cur_month``
    CSV directories or the lake).

    ``none`` runs the steps directly. ``prefect`` runs the flow ``monitor_month`` (its settings come
    from this process's environment, so ``settings`` must be ``get_settings()``'s) and raises
    :class:`OrchestratorUnavailable` when Prefect cannot start it. ``auto`` does the same but, when
    Prefect fails *before* the first step ran, says so and runs the same steps directly: an
    orchestrator hiccup must not cost the month its monitoring. A failure after the flow started is
    never re-run (retraining must not happen twice).
    """

    def direct() -> dict[str, Any]:
        if engine == "spark":
            from streamflow.spark.monitor import SparkInputs, run_spark_monitor

            return run_spark_monitor(request, SparkInputs(ref_month, cur_month), settings, emit=emit)
        return run_monitor(request, settings, emit=emit, progress=progress)

    if orchestrator == "none":
        return direct(), "direct"
    prefect_environment(settings)
    from streamflow.flows.monitor import flow_bodies_started, monitor_month

    started_before = flow_bodies_started()
    lines = _LinesTo(emit)
    try:
        # the flow's lines go where the caller wants them; its progress too (flow parameters cannot carry it)
        with contextlib.redirect_stdout(lines), progress_to(progress):
            summary = monitor_month(
                as_of_ref=request.as_of_ref,
                as_of_cur=request.as_of_cur,
                threshold=request.threshold,
                retrain=request.retrain,
                report_dir=str(request.report_dir),
                min_delta=request.min_delta,
                pushgateway_url=request.pushgateway_url,
                engine=engine,
                ref_month=ref_month,
                cur_month=cur_month,
            )
        lines.flush()
    except Exception as exc:
        lines.flush()
        if flow_bodies_started() != started_before:
            raise  # the monitor itself failed (or Prefect failed mid-run): never run it twice
        detail = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        log.warning("event=orchestrator_unavailable orchestrator=prefect error=%r", detail)
        if orchestrator == "prefect":
            raise OrchestratorUnavailable(f"Prefect could not run the monitor flow ({detail})") from exc
        emit(f"[Orchestrator] Prefect unavailable ({detail}): running the same monitor steps without it")
        return direct(), "direct"
    return summary, "prefect"
