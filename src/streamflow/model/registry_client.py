"""The MLflow client of the settings' tracking/registry store, with every HTTP call bounded, and
the registry look-ups training and the monitor share (the version behind ``name@alias``).

Bounded calls: MLflow's REST client reads ``MLFLOW_HTTP_REQUEST_TIMEOUT`` (seconds per attempt,
MLflow's default 120), ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` (default 7, read timeouts included)
and ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR`` (default 2) from the environment at every call
(``mlflow.utils.rest_utils.http_request``, MLflow 3.17); left alone, one call to a server that
accepts connections and never answers blocks for ~20 minutes. :func:`apply_http_limits` exports
the settings' values (``mlflow_http_timeout_seconds`` 10, ``mlflow_http_max_retries`` 2,
``mlflow_http_backoff_factor`` 1: at most ``settings.mlflow_call_bound_seconds`` ≈ 33 s per call)
before any client is used. They apply to http(s) stores; the default sqlite store has no HTTP.

The API does not use this module: it serves deployment records from PostgreSQL
(``streamflow.model.deployments``) and never imports MLflow.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from streamflow.core.errors import OperationalError
from streamflow.core.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

# What the registry answers when the registered model or the alias does not exist
# (sqlalchemy store: RESOURCE_DOES_NOT_EXIST / INVALID_PARAMETER_VALUE; REST: NOT_FOUND).
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"})


class RegistryUnavailableError(OperationalError, ConnectionError):
    """The MLflow registry did not answer (within the bounded timeouts) or refused a call."""


def display_uri(uri: str) -> str:
    """``uri`` without credentials (for messages)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def http_limits(settings: Settings) -> dict[str, str]:
    """The MLflow environment variables that bound each HTTP call, from the settings."""
    return {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(settings.mlflow_http_timeout_seconds),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(settings.mlflow_http_max_retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(settings.mlflow_http_backoff_factor),
    }


def apply_http_limits(settings: Settings) -> None:
    """Export :func:`http_limits` (MLflow reads them from the environment at each call)."""
    os.environ.update(http_limits(settings))


def registry_client(settings: Settings) -> MlflowClient:
    """A client of the settings' tracking and registry store (no global MLflow state), bounded."""
    from mlflow import MlflowClient

    apply_http_limits(settings)
    uri = settings.tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def is_not_found(exc: BaseException) -> bool:
    return getattr(exc, "error_code", "") in NOT_FOUND_CODES


@contextlib.contextmanager
def registry_errors(settings: Settings, doing: str) -> Iterator[None]:
    """MLflow errors other than "not found" become one :class:`RegistryUnavailableError` line
    naming the store (without credentials), what was being done and the bound."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        if is_not_found(exc):
            raise
        text = str(exc).strip().splitlines()
        raise RegistryUnavailableError(
            f"MLflow registry at {display_uri(settings.tracking_uri)} failed while {doing}: "
            f"{text[0] if text else type(exc).__name__} (each call gives up after at most "
            f"{settings.mlflow_call_bound_seconds:.0f} s: MLFLOW_HTTP_REQUEST_TIMEOUT="
            f"{settings.mlflow_http_timeout_seconds}, "
            f"MLFLOW_HTTP_REQUEST_MAX_RETRIES={settings.mlflow_http_max_retries})"
        ) from exc


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    """The version ``name@alias`` points at; None when the model or the alias does not
    exist. Any other registry error (unreachable store, …) is raised."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if is_not_found(exc):
            return None
        raise
