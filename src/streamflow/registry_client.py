"""The registry look-ups the API needs, shared with training: an ``MlflowClient`` for the
settings' store and the model version behind ``models:/{name}@{alias}``.

Only the MLflow client is imported (lazily) — no model flavour, no scikit-learn — so the
serving process stays light."""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamflow.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

# What the registry answers when the registered model or the alias does not exist
# (sqlalchemy store: RESOURCE_DOES_NOT_EXIST / INVALID_PARAMETER_VALUE; REST: NOT_FOUND).
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


def registry_client(settings: Settings) -> MlflowClient:
    """A client of the settings' tracking and registry store (no global MLflow state)."""
    from mlflow import MlflowClient

    uri = settings.tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version ``name@alias`` points at; None when the model or the alias does not
    exist. Any other registry error (unreachable store, …) is raised."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in NOT_FOUND_CODES:
            return None
        raise
