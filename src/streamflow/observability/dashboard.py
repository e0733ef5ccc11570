"""Read the provisioned Grafana dashboard: the one source of truth for panel queries.

The report generator and the integration tests evaluate exactly the PromQL the dashboard shows.
Grafana template variables (``$__rate_interval`` ...) are not PromQL; :func:`substitute_template_vars`
replaces them the way Grafana would before a query is sent to Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamflow.observability.repo_files import dashboard_path
from streamflow.settings import Settings

DATASOURCE_UID = "streamflow-prometheus"
DEFAULT_SCRAPE_INTERVAL_S = 10.0  # the datasource's jsonData.timeInterval

_LEGEND_RE = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


@dataclass(frozen=True)
class PanelQuery:
    panel_id: int
    panel_title: str
    panel_type: str
    ref_id: str
    expr: str
    legend_format: str
    instant: bool


def load_dashboard(path: Path | None = None, settings: Settings | None = None) -> dict[str, Any]:
    with (path or dashboard_path(settings)).open(encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """All panels, including those nested in collapsed rows; row panels themselves excluded."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    queries: list[PanelQuery] = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            expr = str(target.get("expr", "")).strip()
            if not expr or target.get("hide"):
                continue
            queries.append(
                PanelQuery(
                    panel_id=int(panel.get("id", 0)),
                    panel_title=str(panel.get("title", "")),
                    panel_type=str(panel.get("type", "")),
                    ref_id=str(target.get("refId", "")),
                    expr=expr,
                    legend_format=str(target.get("legendFormat") or ""),
                    instant=bool(target.get("instant")) and not target.get("range", False),
                )
            )
    return queries


def _duration(seconds: float) -> str:
    """PromQL duration literal for a number of seconds (ms precision, as Grafana does)."""
    ms = max(round(seconds * 1000), 1)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def substitute_template_vars(
    expr: str,
    *,
    step_s: float,
    range_s: float,
    scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
) -> str:
    """Replace Grafana's built-in interval/range variables by literal values.

    ``$__rate_interval`` follows Grafana: max(interval + scrape interval, 4 * scrape interval).
    """
    interval = max(step_s, scrape_interval_s)
    rate_interval = max(interval + scrape_interval_s, 4 * scrape_interval_s)
    values = {
        "__rate_interval": _duration(rate_interval),
        "__interval_ms": str(int(interval * 1000)),
        "__interval": _duration(interval),
        "__range_s": str(int(range_s)),
        "__range_ms": str(int(range_s * 1000)),
        "__range": _duration(range_s),
    }
    for name in sorted(values, key=len, reverse=True):  # __interval_ms before __interval
        expr = expr.replace("${" + name + "}", values[name])
        expr = re.sub(r"\$" + name + r"(?![A-Za-z0-9_])", values[name], expr)
    return expr


def render_legend(legend_format: str, labels: Mapping[str, str]) -> str:
    """Grafana-style legend: ``{{label}}`` substituted; empty/``__auto`` -> the label set."""
    if legend_format and legend_format != "__auto":
        return _LEGEND_RE.sub(lambda m: labels.get(m.group(1), ""), legend_format)
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    name = labels.get("__name__", "")
    if not shown:
        return name or "value"
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(shown.items())) + "}"
