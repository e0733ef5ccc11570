"""The monthly data path, end to end: ingest a month, publish it to the online store, and —
when the month has labels and a production model exists — measure how that model did on it.

Ingestion (``streamflow.ingest``) and the feature store (``streamflow.features``) do not know
each other; this small module composes them for every entry point — the CLI ``ingest``
command, ``demo.bootstrap``, the Prefect ingest flow and the monthly schedule.

Crash safety: the ingest commits first, then the online store is materialized. A crash (or a
failure) in between leaves the online store on the previous month and marked stale
(``streamflow status``); ``publish_if_stale`` — run by the flows on every run, and by
``streamflow materialize`` — heals it. Realized performance is measured after the commit too:
its failure is reported and logged, never a reason to undo a good ingest (``streamflow
performance --as-of`` measures again)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from streamflow.core.faults import fault_point
from streamflow.core.progress import ProgressCallback
from streamflow.core.settings import Settings
from streamflow.features.online_state import OnlineStoreState, online_store_state
from streamflow.features.store import MaterializationResult, materialize_online
from streamflow.ingest.loader import IngestResult, ensure_schema, ingest_month

if TYPE_CHECKING:
    from streamflow.monitoring.performance import RealizedPerformance

log = logging.getLogger(__name__)


@dataclass
class PublishResult:
    ingest: IngestResult
    materialization: MaterializationResult | None = None
    seconds_materialize: float = 0.0
    performance: RealizedPerformance | None = None
    performance_note: str | None = None  # why realized performance was not measured

    @property
    def rows(self) -> dict[str, int]:
        return self.ingest.rows

    @property
    def materialized_as_of(self) -> date | None:
        return self.materialization.as_of if self.materialization else None


def ingest_and_publish(
    month_dir: Path | str,
    as_of: str | date,
    settings: Settings,
    *,
    materialize: bool = True,
    measure: bool = True,
    progress: ProgressCallback | None = None,
) -> PublishResult:
    """Validate, load and snapshot one month (one transaction), then materialize the online
    store (atomic swap), then (``measure``) record the production model's realized performance
    on the month. Raises what ``ingest_month`` raises; nothing is written then."""
    result = PublishResult(ingest=ingest_month(month_dir, as_of, settings, progress=progress))
    fault_point("after_commit", settings)
    if materialize:
        t0 = time.perf_counter()
        result.materialization = materialize_online(settings, progress)
        result.seconds_materialize = time.perf_counter() - t0
    if measure:
        result.performance, result.performance_note = measure_month(result.ingest.as_of, settings)
    return result


def measure_month(as_of: date, settings: Settings) -> tuple[RealizedPerformance | None, str | None]:
    """Realized performance of the model that served ``as_of`` on its labels, stored in
    ``model_performance``; (None, why) when there is nothing to measure or measuring failed."""
    from streamflow.monitoring.performance import NoLabelsError, NoProductionModelError, record_realized_performance

    try:
        return record_realized_performance(as_of, settings), None
    except (NoLabelsError, NoProductionModelError) as exc:
        log.info("event=performance_skipped as_of=%s reason=%r", as_of, str(exc))
        return None, str(exc)
    except Exception as exc:  # the month is committed and published: report, do not undo
        log.warning("event=performance_failed as_of=%s error=%r", as_of, f"{type(exc).__name__}: {exc}")
        return (
            None,
            f"measuring realized performance failed ({type(exc).__name__}: {exc}); "
            f"rerun `streamflow performance --as-of {as_of}`",
        )


def publish_if_stale(settings: Settings, progress: ProgressCallback | None = None) -> MaterializationResult | None:
    """Re-materialize when an ingestion is newer than the online store (self-healing after a
    crash between commit and materialization). Returns the materialization, or None if fresh."""
    ensure_schema(settings)
    state = online_store_state(settings)
    if not state.stale:
        return None
    log.warning("event=online_store_stale reason=%r action=materialize", state.reason)
    return materialize_online(settings, progress)


def online_status(settings: Settings) -> OnlineStoreState:
    ensure_schema(settings)
    return online_store_state(settings)
