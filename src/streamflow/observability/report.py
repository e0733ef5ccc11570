"""Monitoring report: the Grafana dashboard's panels, evaluated against the live Prometheus.

The panel queries are read from the provisioned dashboard JSON (one source of truth), run as
``query_range`` over the last ``minutes``, rendered to PNG with matplotlib (Agg, no display) and
written to ``monitoring_report.md`` (PNGs beside it) and a self-contained ``monitoring_report.html``
(PNGs embedded as data URIs), together with alert states, target health and the latest drift
summary (``*.summary.json`` under ``settings.evidently_dir``).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib import dates as mdates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from streamflow.observability.dashboard import (
    PanelQuery,
    iter_panels,
    load_dashboard,
    panel_queries,
    render_legend,
    substitute_template_vars,
)
from streamflow.observability.prometheus_client import PrometheusClient, PrometheusError
from streamflow.settings import Settings

logger = logging.getLogger(__name__)

REPORT_NAME = "monitoring_report"
ASSETS_DIR = "monitoring_report_assets"
MAX_POINTS = 240  # range-query resolution: step = window / MAX_POINTS (at least 1 s)
MAX_SERIES_PLOTTED = 12
DRIFT_FIELDS = ("as_of_ref", "as_of_cur", "drift_share", "drifted_features", "target_drift", "decision", "threshold")


# --------------------------------------------------------------------------- data
@dataclass
class Series:
    legend: str
    ref_id: str
    times: list[float]
    values: list[float]

    @property
    def last(self) -> float:
        for value in reversed(self.values):
            if not math.isnan(value):
                return value
        return math.nan

    def _finite(self) -> list[float]:
        return [v for v in self.values if math.isfinite(v)]

    @property
    def minimum(self) -> float:
        finite = self._finite()
        return min(finite) if finite else math.nan

    @property
    def maximum(self) -> float:
        finite = self._finite()
        return max(finite) if finite else math.nan


@dataclass
class PanelResult:
    panel: dict[str, Any]
    queries: list[PanelQuery]
    series: list[Series] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    image: Path | None = None

    @property
    def title(self) -> str:
        return str(self.panel.get("title", f"panel {self.panel.get('id')}"))

    @property
    def unit(self) -> str:
        return str(self.panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short"))

    @property
    def mappings(self) -> list[dict[str, Any]]:
        return list(self.panel.get("fieldConfig", {}).get("defaults", {}).get("mappings", []))


# --------------------------------------------------------------------------- formatting
def format_value(value: float, unit: str = "short", mappings: Sequence[Mapping[str, Any]] = ()) -> str:
    """A value as Grafana would roughly show it (value mappings, then unit)."""
    if math.isnan(value):
        return "NaN"
    for mapping in mappings:
        if mapping.get("type") == "value" and float(value).is_integer():
            hit = mapping.get("options", {}).get(str(int(value)))
            if hit and hit.get("text"):
                return str(hit["text"])
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if abs(value) < 1 else f"{value:.3g} s"
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "reqps":
        return f"{value:.3g} req/s"
    return f"{value:.4g}"


def _md_cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# --------------------------------------------------------------------------- collection
def _collect_panels(
    client: PrometheusClient | None,
    dashboard: Mapping[str, Any],
    start: float,
    end: float,
    step_s: float,
) -> list[PanelResult]:
    queries = panel_queries(dashboard)
    results: list[PanelResult] = []
    for panel in iter_panels(dashboard):
        mine = [q for q in queries if q.panel_id == panel.get("id")]
        if not mine:
            continue
        result = PanelResult(panel=panel, queries=mine)
        for query in mine:
            if client is None:
                result.errors.append("Prometheus unreachable")
                break
            expr = substitute_template_vars(query.expr, step_s=step_s, range_s=end - start)
            try:
                raw = client.query_range(expr, start, end, step_s)
            except PrometheusError as exc:
                result.errors.append(f"{query.ref_id}: {exc}")
                continue
            for item in raw:
                points = item.get("values", [])
                result.series.append(
                    Series(
                        legend=render_legend(query.legend_format, item.get("metric", {})),
                        ref_id=query.ref_id,
                        times=[float(t) for t, _ in points],
                        values=[float(v) for _, v in points],
                    )
                )
        results.append(result)
    return results


def _collect_targets(client: PrometheusClient | None) -> tuple[list[dict[str, Any]], str | None]:
    if client is None:
        return [], "Prometheus unreachable"
    try:
        return client.targets(), None
    except PrometheusError as exc:
        return [], str(exc)


def _collect_alerts(client: PrometheusClient | None) -> tuple[list[dict[str, Any]], str | None]:
    """One row per alert rule (inactive included) and one per active alert instance."""
    if client is None:
        return [], "Prometheus unreachable"
    try:
        rules = list(client.alert_rules())
    except PrometheusError as exc:
        return [], str(exc)
    rows: list[dict[str, Any]] = []
    for rule in rules:
        severity = rule.get("labels", {}).get("severity", "")
        active = rule.get("alerts", [])
        if not active:
            rows.append(
                {
                    "name": rule.get("name", ""),
                    "state": rule.get("state", "inactive"),
                    "severity": severity,
                    "labels": "",
                    "active_at": "",
                    "summary": rule.get("annotations", {}).get("summary", ""),
                }
            )
        for alert in active:
            labels = {k: v for k, v in alert.get("labels", {}).items() if k not in ("alertname", "severity")}
            rows.append(
                {
                    "name": rule.get("name", ""),
                    "state": alert.get("state", ""),
                    "severity": severity,
                    "labels": ", ".join(f"{k}={v}" for k, v in sorted(labels.items())),
                    "active_at": str(alert.get("activeAt", ""))[:19].replace("T", " "),
                    "summary": alert.get("annotations", {}).get("summary", ""),
                }
            )
    order = {"firing": 0, "pending": 1, "inactive": 2}
    rows.sort(key=lambda r: (order.get(r["state"], 3), r["name"]))
    return rows, None


def latest_drift_summary(settings: Settings) -> tuple[Path, dict[str, Any]] | None:
    """The most recent ``*.summary.json`` under ``settings.evidently_dir``, if any."""
    root = settings.evidently_dir
    if not root.is_dir():
        return None
    candidates = sorted(root.rglob("*.summary.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("unreadable drift summary %s: %s", path, exc)
            continue
        if isinstance(data, dict):
            return path, data
    return None


# --------------------------------------------------------------------------- rendering
def _render_panel_png(result: PanelResult, path: Path) -> None:
    ptype = str(result.panel.get("type", "timeseries"))
    height = 3.4
    if ptype == "stat" and result.series:  # a value tile: as tall as its lines
        height = 0.8 + 0.35 * min(len(result.series), MAX_SERIES_PLOTTED)
    fig = Figure(figsize=(9, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # Agg rendering, no GUI backend and no pyplot global state
    ax = fig.add_subplot()
    unit, mappings = result.unit, result.mappings
    ax.set_title(result.title, fontsize=11, loc="left")
    if not result.series:
        message = "; ".join(result.errors) if result.errors else "no data in the window"
        ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, color="grey", wrap=True)
        ax.set_axis_off()
    elif ptype == "stat":
        shown = result.series[:MAX_SERIES_PLOTTED]
        text_mode = result.panel.get("options", {}).get("textMode", "auto")
        lines = [
            s.legend if text_mode == "name" else f"{s.legend}: {format_value(s.last, unit, mappings)}" for s in shown
        ]
        ax.text(0.02, 0.5, "\n".join(lines), ha="left", va="center", fontsize=13, family="monospace")
        ax.set_axis_off()
    elif ptype == "bargauge":
        shown = sorted(result.series, key=lambda s: s.legend)[: MAX_SERIES_PLOTTED * 2]
        values = [0.0 if math.isnan(s.last) else s.last for s in shown]
        ax.barh([s.legend for s in shown], values, color="tab:orange")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
        for i, value in enumerate(values):
            ax.text(value, i, f" {format_value(value, unit)}", va="center", fontsize=7)
    elif ptype == "heatmap":
        _render_heatmap(ax, result.series)
    elif all(math.isnan(v) for s in result.series for v in s.values):
        ax.text(
            0.5, 0.5, "only NaN in the window (a rate needs two scrapes that saw traffic)",
            ha="center", va="center", fontsize=10, color="grey",
        )  # fmt: skip
        ax.set_axis_off()
    else:
        for series in result.series[:MAX_SERIES_PLOTTED]:
            times = [datetime.fromtimestamp(t, tz=UTC) for t in series.times]
            ax.plot(times, series.values, label=series.legend, linewidth=1.2)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
        ax.tick_params(labelsize=8)
        ax.yaxis.set_major_formatter(lambda v, _pos: format_value(v, unit))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", ncols=2)
        if len(result.series) > MAX_SERIES_PLOTTED:
            ax.set_title(f"{result.title} (first {MAX_SERIES_PLOTTED} of {len(result.series)} series)", loc="left")
    fig.savefig(path, format="png")


def _render_heatmap(ax: Any, series: list[Series]) -> None:
    """Cumulative ``le`` buckets -> per-bucket counts over time, as Grafana's heatmap does."""

    def upper(s: Series) -> float:
        try:
            return float(s.legend)
        except ValueError:
            return math.inf

    buckets = sorted(series, key=upper)
    times = sorted({t for s in buckets for t in s.times})
    index = {t: i for i, t in enumerate(times)}
    cumulative = [[0.0] * len(times) for _ in buckets]
    for row, s in zip(cumulative, buckets, strict=True):
        for t, v in zip(s.times, s.values, strict=True):
            row[index[t]] = v if math.isfinite(v) else 0.0
    counts = [cumulative[0]] + [
        [max(cur - prev, 0.0) for cur, prev in zip(cumulative[i], cumulative[i - 1], strict=True)]
        for i in range(1, len(cumulative))
    ]
    labels = [s.legend for s in buckets]
    x = [datetime.fromtimestamp(t, tz=UTC) for t in times]
    mesh = ax.pcolormesh(x, list(range(len(labels))), counts, shading="nearest", cmap="Oranges")
    ax.set_yticks(list(range(len(labels))), labels, fontsize=6)
    ax.set_ylabel("bucket (le)", fontsize=8)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
    ax.tick_params(axis="x", labelsize=8)
    ax.figure.colorbar(mesh, ax=ax, label="count")


# --------------------------------------------------------------------------- documents
@dataclass
class _Report:
    title: str
    generated: str
    window: str
    prometheus_url: str
    dashboard: str
    notes: list[str]
    targets: list[dict[str, Any]]
    targets_error: str | None
    alerts: list[dict[str, Any]]
    alerts_error: str | None
    drift: tuple[Path, dict[str, Any]] | None
    panels: list[PanelResult]


def _target_rows(targets: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for t in targets:
        labels = t.get("labels", {})
        rows.append(
            [
                str(labels.get("job", t.get("scrapePool", ""))),
                str(labels.get("instance", t.get("scrapeUrl", ""))),
                str(t.get("health", "unknown")),
                str(t.get("lastScrape", ""))[:19].replace("T", " "),
                str(t.get("lastError", "")),
            ]
        )
    return sorted(rows)


def _summary_lines(report: _Report) -> list[str]:
    up = sum(1 for t in report.targets if t.get("health") == "up")
    firing = sorted({a["name"] for a in report.alerts if a["state"] == "firing"})
    pending = sorted({a["name"] for a in report.alerts if a["state"] == "pending"})
    if report.targets_error:
        lines = [f"Targets: {report.targets_error}"]
    else:
        lines = [f"Targets up: {up}/{len(report.targets)}"]
    if report.alerts_error:
        lines.append(f"Alerts: {report.alerts_error}")
    else:
        lines.append("Alerts firing: " + (", ".join(firing) or "none"))
        lines.append("Alerts pending: " + (", ".join(pending) or "none"))
    if report.drift:
        data = report.drift[1]
        lines.append(
            f"Latest drift run: {data.get('as_of_ref')} vs {data.get('as_of_cur')}: "
            f"drift_share={data.get('drift_share')} threshold={data.get('threshold')} -> {data.get('decision')}"
        )
    else:
        lines.append("Latest drift run: no *.summary.json found")
    return lines


def _drift_value(value: Any) -> str:
    """Scalars as is; lists (of names or of ``{"feature", "score", ...}``) as a short list."""
    if isinstance(value, list | tuple):
        items = []
        for item in value:
            if isinstance(item, Mapping) and "feature" in item:
                score = item.get("score")
                items.append(f"{item['feature']} ({score:.3g})" if isinstance(score, int | float) else item["feature"])
            else:
                items.append(str(item))
        return ", ".join(items) or "(none)"
    return str(value)


def _write_markdown(report: _Report, path: Path) -> None:
    out: list[str] = [f"# {report.title}", ""]
    out += [
        f"- Generated: {report.generated}",
        f"- Window: {report.window}",
        f"- Prometheus: {report.prometheus_url}",
        f"- Dashboard: {report.dashboard}",
    ]
    out += [f"- Note: {n}" for n in report.notes]
    out += ["", "## Summary", ""] + [f"- {line}" for line in _summary_lines(report)]
    out += ["", "## Targets", ""]
    if report.targets_error:
        out.append(f"_{report.targets_error}_")
    else:
        out += ["| job | instance | health | last scrape (UTC) | last error |", "|---|---|---|---|---|"]
        out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in _target_rows(report.targets)]
    out += ["", "## Alerts", ""]
    if report.alerts_error:
        out.append(f"_{report.alerts_error}_")
    else:
        out += ["| alert | state | severity | labels | active since (UTC) | summary |", "|---|---|---|---|---|---|"]
        for a in report.alerts:
            cells = [a["name"], a["state"], a["severity"], a["labels"], a["active_at"], a["summary"]]
            out.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    out += ["", "## Latest drift summary", ""]
    if report.drift:
        drift_path, data = report.drift
        out += [f"Source: `{drift_path}`", "", "| field | value |", "|---|---|"]
        out += [f"| {k} | {_md_cell(_drift_value(data.get(k, '')))} |" for k in DRIFT_FIELDS]
    else:
        out.append("_No `*.summary.json` found under the Evidently report directory._")
    out += ["", "## Dashboard panels", ""]
    for panel in report.panels:
        out += [f"### {panel.title}", ""]
        if panel.image is not None:
            out += [f"![{panel.title}]({ASSETS_DIR}/{panel.image.name})", ""]
        out += [f"- `{q.ref_id}`: `{q.expr}`" for q in panel.queries]
        out += [f"- error: {e}" for e in panel.errors]
        if panel.series:
            out += ["", "| series | last | min | max |", "|---|---|---|---|"]
            for s in panel.series[: MAX_SERIES_PLOTTED * 2]:
                cells = [
                    s.legend,
                    format_value(s.last, panel.unit, panel.mappings),
                    format_value(s.minimum, panel.unit),
                    format_value(s.maximum, panel.unit),
                ]
                out.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
        elif not panel.errors:
            out.append("- no data in the window")
        out.append("")
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def _html_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _write_html(report: _Report, path: Path) -> None:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(report.title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
        "th{background:#f3f3f3}img{max-width:100%;border:1px solid #ddd}code{background:#f6f6f6}"
        ".firing{color:#c00;font-weight:bold}.pending{color:#c60}</style></head><body>",
        f"<h1>{esc(report.title)}</h1><ul>",
        f"<li>Generated: {esc(report.generated)}</li><li>Window: {esc(report.window)}</li>",
        f"<li>Prometheus: {esc(report.prometheus_url)}</li><li>Dashboard: {esc(report.dashboard)}</li>",
        *[f"<li>Note: {esc(n)}</li>" for n in report.notes],
        "</ul><h2>Summary</h2><ul>",
        *[f"<li>{esc(line)}</li>" for line in _summary_lines(report)],
        "</ul><h2>Targets</h2>",
    ]
    if report.targets_error:
        parts.append(f"<p><em>{esc(report.targets_error)}</em></p>")
    else:
        header = ["job", "instance", "health", "last scrape (UTC)", "last error"]
        parts.append(_html_table(header, _target_rows(report.targets)))
    parts.append("<h2>Alerts</h2>")
    if report.alerts_error:
        parts.append(f"<p><em>{esc(report.alerts_error)}</em></p>")
    else:
        rows = [
            [a["name"], a["state"], a["severity"], a["labels"], a["active_at"], a["summary"]] for a in report.alerts
        ]
        table = _html_table(["alert", "state", "severity", "labels", "active since (UTC)", "summary"], rows)
        for state in ("firing", "pending"):
            table = table.replace(f"<td>{state}</td>", f'<td class="{state}">{state}</td>')
        parts.append(table)
    parts.append("<h2>Latest drift summary</h2>")
    if report.drift:
        drift_path, data = report.drift
        parts.append(f"<p>Source: <code>{esc(str(drift_path))}</code></p>")
        parts.append(_html_table(["field", "value"], [[k, _drift_value(data.get(k, ""))] for k in DRIFT_FIELDS]))
    else:
        parts.append("<p><em>No *.summary.json found under the Evidently report directory.</em></p>")
    parts.append("<h2>Dashboard panels</h2>")
    for panel in report.panels:
        parts.append(f"<h3>{esc(panel.title)}</h3>")
        if panel.image is not None:
            encoded = base64.b64encode(panel.image.read_bytes()).decode("ascii")
            parts.append(f'<img alt="{esc(panel.title)}" src="data:image/png;base64,{encoded}">')
        parts.append("<ul>" + "".join(f"<li><code>{esc(q.expr)}</code></li>" for q in panel.queries) + "</ul>")
        parts += [f"<p><em>error: {esc(e)}</em></p>" for e in panel.errors]
        if panel.series:
            rows = [
                [
                    s.legend,
                    format_value(s.last, panel.unit, panel.mappings),
                    format_value(s.minimum, panel.unit),
                    format_value(s.maximum, panel.unit),
                ]
                for s in panel.series[: MAX_SERIES_PLOTTED * 2]
            ]
            parts.append(_html_table(["series", "last", "min", "max"], rows))
    parts.append("</body></html>")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- entry point
def generate_monitoring_report(
    settings: Settings,
    minutes: float = 30,
    out_dir: Path | None = None,
    *,
    prometheus_url: str | None = None,
    dashboard_file: Path | None = None,
    end: float | None = None,
) -> Path:
    """Write ``monitoring_report.md`` / ``.html`` (+ PNGs) to ``out_dir``; return the .md path.

    ``out_dir`` defaults to ``settings.reports_dir``; Prometheus is ``prometheus_url`` or
    ``settings.resolved_prometheus_url``. An unreachable Prometheus does not raise: the report says
    so and still carries the drift summary.
    """
    out = Path(out_dir) if out_dir is not None else settings.reports_dir
    assets = out / ASSETS_DIR
    assets.mkdir(parents=True, exist_ok=True)
    for stale in assets.glob("panel_*.png"):
        stale.unlink()

    dashboard = load_dashboard(dashboard_file, settings)
    end_ts = float(end if end is not None else time.time())
    start_ts = end_ts - minutes * 60
    step_s = max(1.0, round(minutes * 60 / MAX_POINTS))
    url = prometheus_url or settings.resolved_prometheus_url

    notes: list[str] = []
    with PrometheusClient(url) as client:
        live: PrometheusClient | None = client
        if not client.ready():
            notes.append(f"Prometheus at {url} is unreachable or not ready: no live data in this report")
            live = None
        panels = _collect_panels(live, dashboard, start_ts, end_ts, step_s)
        targets, targets_error = _collect_targets(live)
        alerts, alerts_error = _collect_alerts(live)

    for i, panel in enumerate(panels, start=1):
        image = assets / f"panel_{i:02d}_{panel.panel.get('id', i)}.png"
        _render_panel_png(panel, image)
        panel.image = image

    fmt = "%Y-%m-%d %H:%M:%S UTC"
    report = _Report(
        title="StreamFlow monitoring report",
        generated=datetime.now(tz=UTC).strftime(fmt),
        window=(
            f"last {minutes:g} min ({datetime.fromtimestamp(start_ts, tz=UTC).strftime(fmt)} → "
            f"{datetime.fromtimestamp(end_ts, tz=UTC).strftime(fmt)}, step {step_s:g}s)"
        ),
        prometheus_url=url,
        dashboard=f"{dashboard.get('title', '')} (uid {dashboard.get('uid', '')})",
        notes=notes,
        targets=targets,
        targets_error=targets_error,
        alerts=alerts,
        alerts_error=alerts_error,
        drift=latest_drift_summary(settings),
        panels=panels,
    )
    md_path = out / f"{REPORT_NAME}.md"
    _write_markdown(report, md_path)
    _write_html(report, out / f"{REPORT_NAME}.html")
    logger.info("monitoring report written to %s", md_path)
    return md_path
