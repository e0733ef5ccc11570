"""Paths of the checked-in deployment files and a reader of the provisioned dashboard JSON."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "services" / "docker" / "Dockerfile"
GRAFANA = REPO / "services" / "grafana" / "provisioning"
DASHBOARD = GRAFANA / "dashboards" / "json" / "streamflow.json"


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """All panels of the JSON, including those nested in collapsed rows; row panels excluded."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel
