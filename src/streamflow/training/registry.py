"""MLflow tracking/registry helpers: one place that knows the tracking URI, the
experiment, the registered model name and the `production` alias — and the alias's history
(``model_alias_history`` in PostgreSQL, written by :func:`promote`)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import mlflow
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from streamflow.home import ensure_private_home
from streamflow.registry_client import version_by_alias
from streamflow.settings import Settings

log = logging.getLogger(__name__)
EXPERIMENT_NAME = "streamflow_churn"


def configure_mlflow(settings: Settings) -> MlflowClient:
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        ensure_private_home(settings.home)
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI to the environment, which
    # would then override the settings of every later Settings object of this process
    # (another STREAMFLOW_HOME would silently write to this registry): restore it.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(settings: Settings) -> str:
    client = configure_mlflow(settings)
    exp = client.get_experiment_by_name(EXPERIMENT_NAME)
    if exp is not None:
        return str(exp.experiment_id)
    local = settings.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in settings.tracking_uri
    # Local store: keep artifacts under STREAMFLOW_HOME (MLflow would default to ./mlruns).
    artifact_location = settings.artifact_root if local else None
    return str(client.create_experiment(EXPERIMENT_NAME, artifact_location=artifact_location))


@dataclass(frozen=True)
class ModelVersionInfo:
    version: str
    run_id: str
    aliases: list[str]
    as_of: str | None
    metrics: dict[str, float]
    tags: dict[str, str]


def _version_info(client: MlflowClient, mv: Any) -> ModelVersionInfo:
    run = client.get_run(mv.run_id)
    return ModelVersionInfo(
        version=str(mv.version),
        run_id=mv.run_id,
        aliases=list(getattr(mv, "aliases", []) or []),
        as_of=run.data.tags.get("as_of"),
        metrics=dict(run.data.metrics),
        tags=dict(mv.tags or {}),
    )


def list_versions(settings: Settings) -> list[ModelVersionInfo]:
    client = configure_mlflow(settings)
    try:
        versions = client.search_model_versions(f"name='{settings.model_name}'")
    except MlflowException:
        return []
    infos = [_version_info(client, client.get_model_version(settings.model_name, v.version)) for v in versions]
    return sorted(infos, key=lambda i: int(i.version))


def production_version(settings: Settings) -> ModelVersionInfo | None:
    """The version holding the production alias; None when there is none (the same
    look-up as the API's, ``streamflow.registry_client.version_by_alias``)."""
    client = configure_mlflow(settings)
    mv = version_by_alias(client, settings.model_name, settings.model_alias)
    return None if mv is None else _version_info(client, mv)


def promote(settings: Settings, version: str, reason: str) -> None:
    """Point the production alias at `version`; the previous holder keeps its version
    (nothing is archived) and both carry tags saying what happened and why.

    The move is recorded in ``model_alias_history`` (PostgreSQL) in the same step: the row is
    inserted in a transaction that commits only once MLflow accepted the move, so a refused
    move leaves no history row (see :func:`alias_history`)."""
    client = configure_mlflow(settings)
    previous = production_version(settings)
    with _history_engine(settings).begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO model_alias_history (model_name, alias, version, previous_version, reason) "
                "VALUES (:name, :alias, :version, :previous, :reason)"
            ),
            {
                "name": settings.model_name,
                "alias": settings.model_alias,
                "version": version,
                "previous": previous.version if previous else None,
                "reason": reason,
            },
        )
        client.set_registered_model_alias(settings.model_name, settings.model_alias, version)
    client.set_model_version_tag(settings.model_name, version, "promoted_reason", reason)
    if previous is not None and previous.version != version:
        client.set_model_version_tag(settings.model_name, version, "replaced_version", previous.version)
        client.set_model_version_tag(
            settings.model_name, previous.version, "demoted_reason", f"replaced by v{version}: {reason}"
        )
    log.info(
        "event=alias_moved model=%s alias=%s version=%s previous=%s reason=%r",
        settings.model_name,
        settings.model_alias,
        version,
        previous.version if previous else None,
        reason,
    )


@dataclass(frozen=True)
class AliasChange:
    """One move of the alias, as recorded by :func:`promote`."""

    version: str
    previous_version: str | None
    reason: str
    set_at: datetime


def _history_engine(settings: Settings) -> sa.Engine:
    from streamflow.db.engine import get_engine
    from streamflow.db.schema import migrate

    engine = get_engine(settings)
    migrate(engine)
    return engine


def alias_history(settings: Settings) -> list[AliasChange]:
    """Every recorded move of ``settings.model_alias`` of ``settings.model_name``, oldest first.
    Moves made outside :func:`promote` (the MLflow UI, a raw client call) are not in it."""
    with _history_engine(settings).connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT version, previous_version, reason, set_at FROM model_alias_history "
                "WHERE model_name = :name AND alias = :alias ORDER BY set_at, id"
            ),
            {"name": settings.model_name, "alias": settings.model_alias},
        ).all()
    return [AliasChange(str(r.version), r.previous_version, str(r.reason), r.set_at) for r in rows]
