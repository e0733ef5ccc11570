"""The dashboard's panels as the report and the tests see them, and Grafana's query-time rendering.

Panels come from the typed dashboard definition (:mod:`streamflow.observability.dashboards`), the
same definition the provisioned JSON is generated from: the report and the integration tests
evaluate exactly the PromQL the dashboard shows. Grafana template variables (``$__rate_interval``
...) are not PromQL; :func:`substitute_template_vars` replaces them the way Grafana would before a
query is sent to Prometheus, and :func:`render_legend` renders a ``legendFormat``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import prometheus
from grafana_foundation_sdk.models import stat as stat_model

from streamflow.observability.dashboards import DATASOURCE_UID, build_dashboard

__all__ = [
    "DATASOURCE_UID",
    "DashboardPanel",
    "PanelQuery",
    "dashboard_panels",
    "panel_queries",
    "render_legend",
    "substitute_template_vars",
]

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


@dataclass(frozen=True)
class DashboardPanel:
    """One panel (rows excluded) with what the report needs to evaluate and show it."""

    id: int
    title: str
    type: str
    unit: str
    queries: tuple[PanelQuery, ...]
    value_texts: Mapping[str, str] = field(default_factory=dict)  # value mapping: "0" -> "DOWN"
    text_mode: str = "auto"  # stat panels: "name" shows the series names only
    row: str | None = None  # title of the Grafana row the panel sits under


def _iter_panels(board: model.Dashboard) -> Iterator[tuple[model.Panel, str | None]]:
    """Every panel with the title of the row above it; collapsed rows' nested panels included."""
    row: str | None = None
    for item in board.panels or []:
        if isinstance(item, model.RowPanel):
            row = item.title
            for nested in item.panels:
                yield nested, row
        else:
            yield item, row


def _queries(panel: model.Panel, pid: int, title: str) -> tuple[PanelQuery, ...]:
    queries = []
    for target in panel.targets or []:
        if not isinstance(target, prometheus.Dataquery) or target.hide or not target.expr.strip():
            continue
        queries.append(
            PanelQuery(
                panel_id=pid,
                panel_title=title,
                panel_type=panel.type_val,
                ref_id=target.ref_id,
                expr=target.expr.strip(),
                legend_format=target.legend_format or "",
                instant=bool(target.instant) and not target.range_val,
            )
        )
    return tuple(queries)


def dashboard_panels(board: model.Dashboard | None = None) -> list[DashboardPanel]:
    """The panels of ``board`` (default: the StreamFlow dashboard), top to bottom."""
    panels: list[DashboardPanel] = []
    for panel, row in _iter_panels(board if board is not None else build_dashboard()):
        pid, title = int(panel.id_val or 0), panel.title or ""
        defaults = panel.field_config.defaults if panel.field_config else None
        texts: dict[str, str] = {}
        for mapping in (defaults.mappings if defaults else None) or []:
            if isinstance(mapping, model.ValueMap) and mapping.options:
                texts.update({value: hit.text for value, hit in mapping.options.items() if hit.text})
        panels.append(
            DashboardPanel(
                id=pid,
                title=title,
                type=panel.type_val,
                unit=(defaults.unit if defaults else None) or "short",
                queries=_queries(panel, pid, title),
                value_texts=texts,
                text_mode=str(panel.options.text_mode) if isinstance(panel.options, stat_model.Options) else "auto",
                row=row,
            )
        )
    return panels


def panel_queries(panels: Sequence[DashboardPanel] | None = None) -> list[PanelQuery]:
    """Every visible query of ``panels`` (default: the StreamFlow dashboard's), in panel order."""
    return [q for p in (dashboard_panels() if panels is None else panels) for q in p.queries]


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
