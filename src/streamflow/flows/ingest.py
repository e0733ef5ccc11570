"""Prefect flow `ingest_month`: validate → load → snapshot → materialize, one month."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task

from streamflow.features.store import materialize_latest
from streamflow.ingest.loader import ingest_month
from streamflow.settings import get_settings


@task(name="load_month")
def load_month(month_dir: str, as_of: str) -> dict[str, int]:
    result = ingest_month(Path(month_dir), as_of, get_settings(), materialize=False)
    return result.rows


@task(name="materialize_online_store")
def materialize() -> str | None:
    latest = materialize_latest(get_settings())
    return str(latest) if latest else None


@flow(name="ingest_month")
def ingest_month_flow(month_dir: str, as_of: str) -> dict[str, object]:
    logger = get_run_logger()
    rows = load_month(month_dir, as_of)
    latest = materialize()
    logger.info("ingested %s as_of=%s rows=%s online=%s", month_dir, as_of, rows, latest)
    return {"as_of": as_of, "rows": rows, "online_as_of": latest}
