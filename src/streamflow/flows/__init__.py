"""Prefect flows: thin wrappers over the library (the CLI and the API call the same functions)."""

from __future__ import annotations

import os

from streamflow.settings import Settings


def prefect_environment(settings: Settings) -> None:
    """Keep Prefect's local state (ephemeral server DB, logs) under STREAMFLOW_HOME unless
    a Prefect API or home is configured explicitly. Call before importing prefect."""
    os.environ.setdefault("PREFECT_HOME", str(settings.home / "prefect"))
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
