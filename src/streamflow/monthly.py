"""The monthly data path, end to end: ingest a month, then publish it to the online store.

Ingestion (``streamflow.ingest``) and the feature store (``streamflow.features``) do not know
each other; this small module composes them for every entry point — the CLI ``ingest``
command, ``demo.bootstrap``, the Prefect ingest flow and the monthly schedule.

Crash safety: the ingest commits first, then the online store is materialized. A crash (or a
failure) in between leaves the online store on the previous month and marked stale
(``streamflow status``); ``publish_if_stale`` — run by the flows on every run, and by
``streamflow materialize`` — heals it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from streamflow.faults import fault_point
from streamflow.features.online_state import OnlineStoreState, online_store_state
from streamflow.features.store import MaterializationResult, materialize_online
from streamflow.ingest.loader import IngestResult, ensure_schema, ingest_month
from streamflow.progress import ProgressCallback
from streamflow.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class PublishResult:
    ingest: IngestResult
    materialization: MaterializationResult | None = None
    seconds_materialize: float = 0.0

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
    progress: ProgressCallback | None = None,
) -> PublishResult:
    """Validate, load and snapshot one month (one transaction), then materialize the online
    store (atomic swap). Raises what ``ingest_month`` raises; nothing is written then."""
    result = PublishResult(ingest=ingest_month(month_dir, as_of, settings, progress=progress))
    fault_point("after_commit", settings)
    if materialize:
        t0 = time.perf_counter()
        result.materialization = materialize_online(settings, progress)
        result.seconds_materialize = time.perf_counter() - t0
    return result


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
