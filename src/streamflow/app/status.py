"""What is in the system: snapshots per as_of (row counts, churn rate), the online store,
registered model versions with the production alias, the deployed (served) version — with a note
when the MLflow alias and the deployment disagree — and the prediction log."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from streamflow.core.data_model import SNAPSHOT_TABLES
from streamflow.core.settings import Settings
from streamflow.db.engine import get_engine
from streamflow.db.schema import migrate
from streamflow.training.registry import deployed, list_versions


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


def production_status(settings: Settings, models: list[dict[str, Any]]) -> dict[str, Any]:
    """The MLflow alias vs the deployment the API serves (``model_deployments``)."""
    alias = next((m["version"] for m in models if settings.model_alias in m["aliases"]), None)
    dep = deployed(settings)
    version = dep.version if dep is not None else None
    note: str | None = None
    if alias != version:
        model = f"{settings.model_name}@{settings.model_alias}"
        if version is None:
            note = (
                f"the MLflow alias {model} points at v{alias} but nothing is deployed: the API serves no model; "
                f"publish it with `streamflow promote {alias}`"
            )
        elif alias is None:
            note = (
                f"the MLflow alias {model} is not set but v{version} is deployed (and served); "
                f"`streamflow promote {version}` sets the alias again"
            )
        else:
            note = (
                f"the MLflow alias {model} points at v{alias} but v{version} is deployed (and served): the alias "
                f"was moved outside `streamflow promote`; `streamflow promote {alias}` publishes it, "
                f"`streamflow promote {version}` moves the alias back"
            )
    return {
        "alias_version": alias,
        "deployed_version": version,
        "in_sync": note is None,
        "note": note,
        "deployment": None
        if dep is None
        else {
            k: v
            for k, v in dep.as_dict().items()
            if k in ("id", "version", "run_id", "as_of", "onnx_sha256", "onnx_size", "promoted_at", "reason")
        },
    }


def online_store_status(settings: Settings) -> dict[str, Any]:
    """``{"as_of", "stale", "reason", …}`` of the Feast online store (see features.online_state)."""
    from streamflow.features.online_state import online_store_state

    return online_store_state(settings).to_dict()


def system_status(settings: Settings) -> dict[str, Any]:
    from streamflow.db.predictions import prediction_stats

    models = model_status(settings)
    return {
        "snapshots": snapshot_status(settings),
        "online_store": online_store_status(settings),
        "models": models,
        "production": production_status(settings, models),
        "predictions": prediction_stats(settings),
    }
