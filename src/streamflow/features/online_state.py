"""Is the online store up to date? The staleness marker of the monthly data path.

Each ingestion is a row of ``ingestions`` (id, as_of); each materialization records the newest
ingestion it covers (``feature_materializations.ingestion_id``). The online store is stale when
an ingestion newer than the one covered exists — a crash between an ingest's commit and its
materialization, a failed materialization, or ``ingest --no-materialize``. ``streamflow
materialize`` (or the next scheduled run) heals it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from streamflow.core.settings import Settings
from streamflow.db.engine import libpq_url


@dataclass(frozen=True)
class OnlineStoreState:
    as_of: str | None  # newest as_of online (the latest materialization)
    stale: bool
    reason: str | None
    materialized_at: str | None = None
    ingestion_id: int | None = None  # newest ingestion the online store covers
    latest_ingestion_id: int | None = None
    latest_ingestion_as_of: str | None = None
    writer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def online_store_state_from(conn: psycopg.Connection[Any]) -> OnlineStoreState:
    ing = conn.execute("SELECT id, as_of, ingested_at FROM ingestions ORDER BY id DESC LIMIT 1").fetchone()
    mat = conn.execute(
        "SELECT as_of, materialized_at, ingestion_id, writer FROM feature_materializations"
        " ORDER BY materialized_at DESC LIMIT 1"
    ).fetchone()
    latest_id = int(ing[0]) if ing else None
    latest_as_of = str(ing[1]) if ing else None
    if mat is None:
        if ing is None:
            return OnlineStoreState(as_of=None, stale=False, reason="nothing ingested yet")
        return OnlineStoreState(
            as_of=None,
            stale=True,
            reason=f"never materialized: ingestion #{latest_id} (as_of {latest_as_of}) is not online; "
            "run `streamflow materialize`",
            latest_ingestion_id=latest_id,
            latest_ingestion_as_of=latest_as_of,
        )
    as_of, materialized_at, covered, writer = mat
    base = {
        "as_of": str(as_of) if as_of else None,
        "materialized_at": materialized_at.isoformat() if materialized_at else None,
        "ingestion_id": int(covered) if covered is not None else None,
        "latest_ingestion_id": latest_id,
        "latest_ingestion_as_of": latest_as_of,
        "writer": writer,
    }
    if ing is None:
        return OnlineStoreState(stale=False, reason=None, **base)
    # rows recorded before ingestion ids were: compare times
    newer = ing[2] > materialized_at if covered is None else latest_id is not None and latest_id > int(covered)
    if not newer:
        return OnlineStoreState(stale=False, reason=None, **base)
    covers = f"ingestion #{covered}" if covered is not None else f"the state of {base['materialized_at']}"
    return OnlineStoreState(
        stale=True,
        reason=f"ingestion #{latest_id} (as_of {latest_as_of}, {ing[2]:%Y-%m-%d %H:%M:%S}) is newer than the online "
        f"store (covers {covers}); run `streamflow materialize`",
        **base,
    )


def online_store_state(settings: Settings) -> OnlineStoreState:
    with psycopg.connect(libpq_url(settings)) as conn:
        return online_store_state_from(conn)
