"""Prefect flow `ingest_month`: validate → load → snapshot → publish, one month.

Self-healing: before loading, a stale online store (an earlier run crashed between its commit
and its materialization) is re-materialized; after loading, the month is published."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task

from streamflow.ingest.loader import ingest_month
from streamflow.monthly import publish_if_stale
from streamflow.settings import get_settings


@task(name="heal_online_store")
def heal() -> str | None:
    healed = publish_if_stale(get_settings())
    return str(healed.as_of) if healed and healed.as_of else None


@task(name="load_month")
def load_month(month_dir: str, as_of: str) -> dict[str, int]:
    result = ingest_month(Path(month_dir), as_of, get_settings())
    return result.rows


@task(name="materialize_online_store")
def materialize() -> str | None:
    from streamflow.features.store import materialize_latest

    latest = materialize_latest(get_settings())
    return str(latest) if latest else None


@flow(name="ingest_month")
def ingest_month_flow(month_dir: str, as_of: str) -> dict[str, object]:
    logger = get_run_logger()
    healed = heal()
    rows = load_month(month_dir, as_of)
    latest = materialize()
    logger.info("ingested %s as_of=%s rows=%s online=%s healed=%s", month_dir, as_of, rows, latest, healed)
    return {"as_of": as_of, "rows": rows, "online_as_of": latest, "healed_before": healed}
