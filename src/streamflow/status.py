"""What is in the system: snapshots per as_of (row counts, churn rate), the online store,
registered model versions with the production alias, and the prediction log."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from streamflow.db.engine import get_engine
from streamflow.db.schema import migrate
from streamflow.schema import SNAPSHOT_TABLES
from streamflow.settings import Settings
from streamflow.training.registry import list_versions


def snapshot_status(settings: Settings) -> list[dict[str, Any]]:
    engine = get_engine(settings)
    migrate(engine)
    by_date: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        for table in SNAPSHOT_TABLES:
            rows = conn.execute(
                sa.text(f"SELECT as_of::date AS d, count(*) FROM {table} GROUP BY 1 ORDER BY 1")  # table: constant
            ).all()
            for d, n in rows:
                entry = by_date.setdefault(str(d), {"as_of": str(d), "tables": {t: 0 for t in SNAPSHOT_TABLES}})
                entry["tables"][table] = int(n)
        rates = conn.execute(
            sa.text("SELECT as_of::date, avg(churn_label::int) FROM labels_snapshots GROUP BY 1")
        ).all()
    for d, rate in rates:
        by_date[str(d)]["churn_rate"] = round(float(rate), 4)
    for entry in by_date.values():
        entry.setdefault("churn_rate", None)
    return [by_date[k] for k in sorted(by_date)]


def model_status(settings: Settings) -> list[dict[str, Any]]:
    return [
        {
            "version": v.version,
            "aliases": v.aliases,
            "as_of": v.as_of,
            "run_id": v.run_id,
            "val_auc": v.metrics.get("val_auc"),
        }
        for v in list_versions(settings)
    ]


def online_store_status(settings: Settings) -> dict[str, Any]:
    """``{"as_of", "stale", "reason", …}`` of the Feast online store (see features.online_state)."""
    from streamflow.features.online_state import online_store_state

    return online_store_state(settings).to_dict()


def system_status(settings: Settings) -> dict[str, Any]:
    from streamflow.db.predictions import prediction_stats

    return {
        "snapshots": snapshot_status(settings),
        "online_store": online_store_status(settings),
        "models": model_status(settings),
        "predictions": prediction_stats(settings),
    }
