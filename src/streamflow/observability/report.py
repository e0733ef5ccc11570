"""Monitoring report: the Grafana dashboard's panels, evaluated against the live Prometheus.

The panels come from the dashboard's Python definition (the provisioned JSON is its output); each
query runs as ``query_range`` over the last ``minutes``, each panel is drawn to PNG with matplotlib
(Agg, no display). Together with target health, alert states and the latest drift summary
(``*.summary.json`` under ``settings.evidently_dir``) the report's sections are built once as data
(:mod:`streamflow.observability.document`) and rendered twice: ``monitoring_report.md`` (PNGs beside
it) and a self-contained ``monitoring_report.html`` (PNGs embedded as data URIs).

Numbers are rounded for people (:func:`round_sig`, :func:`format_value`: 4 significant digits, ms
for sub-second durations, % for ratios). Alert annotations of firing/pending alerts are the ones
Prometheus rendered; an inactive rule's template is rendered with the rule's labels and its other
placeholders shown as ``‹name›`` (:func:`render_rule_template`), with a note saying so.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib import dates as mdates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from streamflow.core.fileio import PRIVATE_MODE, atomic_write, atomic_write_text
from streamflow.core.settings import Settings
from streamflow.observability.dashboards import DASHBOARD_TITLE, DASHBOARD_UID
from streamflow.observability.document import (
    Block,
    Bullets,
    Code,
    Document,
    Image,
    Inline,
    Note,
    Section,
    Styled,
    Table,
    line,
    to_html,
    to_markdown,
)
from streamflow.observability.panels import (
    DashboardPanel,
    PanelQuery,
    dashboard_panels,
    render_legend,
    substitute_template_vars,
)
from streamflow.observability.prometheus_api import PrometheusClient, PrometheusError

logger = logging.getLogger(__name__)

REPORT_NAME = "monitoring_report"
ASSETS_DIR = "monitoring_report_assets"
MAX_POINTS = 240  # range-query resolution: step = window / MAX_POINTS (at least 1 s)
MAX_SERIES_PLOTTED = 12
SIGNIFICANT_DIGITS = 4
ALERT_STATE_ORDER = {"firing": 0, "pending": 1, "inactive": 2}


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
    panel: DashboardPanel
    series: list[Series] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    image: Path | None = None

    @property
    def queries(self) -> tuple[PanelQuery, ...]:
        return self.panel.queries

    @property
    def title(self) -> str:
        return self.panel.title

    @property
    def unit(self) -> str:
        return self.panel.unit

    @property
    def value_texts(self) -> Mapping[str, str]:
        return self.panel.value_texts


@dataclass(frozen=True)
class AlertRow:
    """One alert rule without active alert, or one active (pending/firing) alert instance."""

    name: str
    state: str
    severity: str
    labels: str
    active_at: str
    summary: str
    description: str
    # an inactive rule's annotation template with placeholders left (‹instance›, ‹value›)
    summary_placeholders: bool = False
    description_placeholders: bool = False

    @property
    def templated(self) -> bool:
        return self.summary_placeholders or self.description_placeholders


# --------------------------------------------------------------------------- formatting
def round_sig(value: float, digits: int = SIGNIFICANT_DIGITS) -> str:
    """``value`` to ``digits`` significant digits, without exponent between 1e-4 and 1e6.

    >>> round_sig(0.006531307681385767), round_sig(0.5), round_sig(1234.56), round_sig(2.0)
    ('0.006531', '0.5', '1235', '2')
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)))
    if exponent >= 6 or exponent < -4:
        return f"{value:.{digits - 1}e}"
    text = f"{value:.{max(digits - 1 - exponent, 0)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_duration(seconds: float) -> str:
    """Seconds for people: ms below 1 s, then s, min, h, d."""
    size = abs(seconds)
    if size < 1:
        return f"{round_sig(seconds * 1000)} ms"
    for limit, divisor, name in ((60, 1, "s"), (3600, 60, "min"), (86400, 3600, "h")):
        if size < limit:
            return f"{round_sig(seconds / divisor)} {name}"
    return f"{round_sig(seconds / 86400)} d"


def format_percent(ratio: float) -> str:
    return f"{round_sig(ratio * 100)}%"


def format_value(value: float, unit: str = "short", value_texts: Mapping[str, str] | None = None) -> str:
    """A value as Grafana would roughly show it: value mapping first, then the panel's unit."""
    if math.isnan(value) or math.isinf(value):
        return round_sig(value)
    if value_texts and float(value).is_integer() and str(int(value)) in value_texts:
        return value_texts[str(int(value))]
    if unit == "s":
        return format_duration(value)
    if unit == "percentunit":
        return format_percent(value)
    if unit == "reqps":
        return f"{round_sig(value)} req/s"
    return round_sig(value)


_TEMPLATE_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.S)
_LABEL_REF = re.compile(r"^(?:\$labels|\.Labels)\.([A-Za-z_][A-Za-z0-9_]*)$")


def render_rule_template(template: str, labels: Mapping[str, str]) -> tuple[str, bool]:
    """An inactive rule's annotation template for people; ``(text, placeholders_left)``.

    ``{{ $labels.x }}`` is filled from the rule's own labels when it has ``x``; any other action
    (``$value``, a label only the firing series carries...) becomes ``‹x›`` / ``‹value›``.
    """
    left = False

    def substitute(match: re.Match[str]) -> str:
        nonlocal left
        head = match.group(1).split("|", 1)[0].strip()
        label = _LABEL_REF.match(head)
        if label and labels.get(label.group(1)):
            return labels[label.group(1)]
        left = True
        if label:
            return f"‹{label.group(1)}›"
        return "‹value›" if head in ("$value", ".Value") else "‹…›"

    return _TEMPLATE_ACTION.sub(substitute, template), left


# --------------------------------------------------------------------------- collection
def _collect_panels(
    client: PrometheusClient | None,
    panels: Sequence[DashboardPanel],
    start: float,
    end: float,
    step_s: float,
) -> list[PanelResult]:
    results: list[PanelResult] = []
    for panel in panels:
        if not panel.queries:
            continue
        result = PanelResult(panel=panel)
        for query in panel.queries:
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


def _collect_alerts(client: PrometheusClient | None) -> tuple[list[AlertRow], str | None]:
    """One row per alert rule without active alert and one per active alert instance."""
    if client is None:
        return [], "Prometheus unreachable"
    try:
        rules = list(client.alert_rules())
    except PrometheusError as exc:
        return [], str(exc)
    rows: list[AlertRow] = []
    for rule in rules:
        name, rule_labels = str(rule.get("name", "")), dict(rule.get("labels", {}))
        severity = str(rule_labels.get("severity", ""))
        active = rule.get("alerts", [])
        if not active:  # the rule's annotations are unrendered templates
            annotations = rule.get("annotations", {})
            summary, left_s = render_rule_template(str(annotations.get("summary", "")), rule_labels)
            description, left_d = render_rule_template(str(annotations.get("description", "")), rule_labels)
            state = str(rule.get("state", "inactive"))
            rows.append(AlertRow(name, state, severity, "", "", summary, description, left_s, left_d))
        for alert in active:  # Prometheus rendered these annotations with the alert's labels and value
            labels = {k: v for k, v in alert.get("labels", {}).items() if k not in ("alertname", "severity")}
            annotations = alert.get("annotations", {})
            rows.append(
                AlertRow(
                    name=name,
                    state=str(alert.get("state", "")),
                    severity=severity,
                    labels=", ".join(f"{k}={v}" for k, v in sorted(labels.items())),
                    active_at=str(alert.get("activeAt", ""))[:19].replace("T", " "),
                    summary=str(annotations.get("summary", "")),
                    description=str(annotations.get("description", "")),
                )
            )
    rows.sort(key=lambda r: (ALERT_STATE_ORDER.get(r.state, 3), r.name, r.labels))
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
            logger.warning("event=drift_summary_unreadable path=%s error=%s", path, exc)
            continue
        if isinstance(data, dict):
            return path, data
    return None


# --------------------------------------------------------------------------- rendering
def _date_numbers(times: list[datetime]) -> Any:
    """matplotlib's date numbers (its converter is untyped)."""
    return mdates.date2num(times)  # type: ignore[no-untyped-call]


def _time_axis() -> Any:
    """HH:MM:SS ticks in UTC (matplotlib's formatter is untyped)."""
    return mdates.DateFormatter("%H:%M:%S", tz=UTC)  # type: ignore[no-untyped-call]


def _render_panel_png(result: PanelResult, path: Path) -> None:
    ptype = result.panel.type
    height = 3.4
    if ptype == "stat" and result.series:  # a value tile: as tall as its lines
        height = 0.8 + 0.35 * min(len(result.series), MAX_SERIES_PLOTTED)
    fig = Figure(figsize=(9, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # Agg rendering, no GUI backend and no pyplot global state
    ax = fig.add_subplot()
    unit, value_texts = result.unit, result.value_texts
    ax.set_title(result.title, fontsize=11, loc="left")
    if not result.series:
        message = "; ".join(result.errors) if result.errors else "no data in the window"
        ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, color="grey", wrap=True)
        ax.set_axis_off()
    elif ptype == "stat":
        shown = result.series[:MAX_SERIES_PLOTTED]
        text_mode = result.panel.text_mode
        lines = [
            s.legend if text_mode == "name" else f"{s.legend}: {format_value(s.last, unit, value_texts)}" for s in shown
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
        shown = result.series[:MAX_SERIES_PLOTTED]
        for series in shown:
            times = _date_numbers([datetime.fromtimestamp(t, tz=UTC) for t in series.times])
            sparse = sum(1 for v in series.values if math.isfinite(v)) < 3  # a lone sample has no line: mark it
            ax.plot(times, series.values, label=series.legend, linewidth=1.2, marker="o" if sparse else None)
        stamps = {t for s in shown for t in s.times}
        if len(stamps) == 1:  # one instant: a minute either side, not matplotlib's default of days
            (only,) = stamps
            ax.set_xlim(
                float(_date_numbers([datetime.fromtimestamp(only - 60, tz=UTC)])[0]),
                float(_date_numbers([datetime.fromtimestamp(only + 60, tz=UTC)])[0]),
            )
        ax.xaxis.set_major_formatter(_time_axis())
        ax.tick_params(labelsize=8)
        ax.yaxis.set_major_formatter(lambda v, _pos: format_value(v, unit))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", ncols=2)
        if len(result.series) > MAX_SERIES_PLOTTED:
            ax.set_title(f"{result.title} (first {MAX_SERIES_PLOTTED} of {len(result.series)} series)", loc="left")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), mode=PRIVATE_MODE)


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
    ax.xaxis.set_major_formatter(_time_axis())
    ax.tick_params(axis="x", labelsize=8)
    ax.figure.colorbar(mesh, ax=ax, label="count")


# --------------------------------------------------------------------------- sections (built once)
DRIFT_FIELDS = ("as_of_ref", "as_of_cur", "drift_share", "drifted_features", "target_drift", "decision", "threshold")


@dataclass
class ReportData:
    """Everything the report shows, collected before any rendering."""

    generated: str
    window: str
    prometheus_url: str
    notes: list[str]
    targets: list[dict[str, Any]]
    targets_error: str | None
    alerts: list[AlertRow]
    alerts_error: str | None
    drift: tuple[Path, dict[str, Any]] | None
    panels: list[PanelResult]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def drift_value(key: str, data: Mapping[str, Any]) -> str:
    """One field of a drift summary for people: ratios in %, scores rounded, lists short."""
    value = data.get(key, "")
    number = _number(value)
    if key in ("drift_share", "threshold") and number is not None:
        text = format_percent(number)
        count, total = _number(data.get("drifted_count")), _number(data.get("n_features"))
        if key == "drift_share" and count is not None and total:
            text += f" ({count:g} of {total:g} features)"
        return text
    if key == "target_drift" and number is not None:
        text = f"{round_sig(number * 100)} percentage points"
        ref, cur = _number(data.get("target_ref_rate")), _number(data.get("target_cur_rate"))
        if ref is not None and cur is not None:
            text += f" (churn rate {format_percent(ref)} → {format_percent(cur)})"
        return text
    if number is not None:
        return round_sig(number)
    if isinstance(value, list | tuple):
        items = []
        for item in value:
            if isinstance(item, Mapping) and "feature" in item:
                score = _number(item.get("score"))
                items.append(f"{item['feature']} ({round_sig(score)})" if score is not None else str(item["feature"]))
            else:
                items.append(str(item))
        return ", ".join(items) or "(none)"
    return str(value)


def _summary(data: ReportData) -> Bullets:
    if data.targets_error:
        items = [line(f"Targets: {data.targets_error}")]
    else:
        up = sum(1 for t in data.targets if t.get("health") == "up")
        items = [line(f"Targets up: {up}/{len(data.targets)}")]
    if data.alerts_error:
        items.append(line(f"Alerts: {data.alerts_error}"))
    else:
        for state in ("firing", "pending"):
            names = sorted({a.name for a in data.alerts if a.state == state})
            items.append(line(f"Alerts {state}: " + (", ".join(names) or "none")))
    if data.drift:
        d = data.drift[1]
        items.append(
            line(
                f"Latest drift run: {d.get('as_of_ref')} vs {d.get('as_of_cur')}: drift share "
                f"{drift_value('drift_share', d)}, threshold {drift_value('threshold', d)} → {d.get('decision')}"
            )
        )
    else:
        items.append(line("Latest drift run: no ", Code("*.summary.json"), " found"))
    return Bullets(tuple(items))


def _targets_section(data: ReportData) -> Section:
    if data.targets_error:
        return Section("Targets", 2, [Note(line(data.targets_error))])
    rows = sorted(
        (
            str(t.get("labels", {}).get("job", t.get("scrapePool", ""))),
            str(t.get("labels", {}).get("instance", t.get("scrapeUrl", ""))),
            str(t.get("health", "unknown")),
            str(t.get("lastScrape", ""))[:19].replace("T", " "),
            str(t.get("lastError", "")),
        )
        for t in data.targets
    )
    header = ("job", "instance", "health", "last scrape (UTC)", "last error")
    return Section("Targets", 2, [Table(header, tuple(rows))])


def _alerts_section(data: ReportData) -> Section:
    if data.alerts_error:
        return Section("Alerts", 2, [Note(line(data.alerts_error))])

    def text(value: str, templated: bool) -> Inline:
        return Styled(value, "template") if templated else value

    rows = tuple(
        (
            a.name,
            Styled(a.state, a.state) if a.state in ("firing", "pending") else a.state,
            a.severity,
            a.labels,
            a.active_at,
            text(a.summary, a.summary_placeholders),
            text(a.description, a.description_placeholders),
        )
        for a in data.alerts
    )
    header = ("alert", "state", "severity", "labels", "active since (UTC)", "summary", "description")
    blocks: list[Block] = [Table(header, rows)]
    if any(a.templated for a in data.alerts):
        blocks.append(
            Note(
                line(
                    "Rules that are not active show their annotation templates: ‹name› stands for a value "
                    "Prometheus fills in (from the alerting series) when the alert fires."
                )
            )
        )
    return Section("Alerts", 2, blocks)


def _drift_section(data: ReportData) -> Section:
    if not data.drift:
        return Section(
            "Latest drift summary",
            2,
            [Note(line("No ", Code("*.summary.json"), " found under the Evidently report directory."))],
        )
    path, summary = data.drift
    rows = tuple((key, drift_value(key, summary)) for key in DRIFT_FIELDS)
    return Section(
        "Latest drift summary", 2, [Bullets((line("Source: ", Code(str(path))),)), Table(("field", "value"), rows)]
    )


def _panel_blocks(panel: PanelResult) -> list[Block]:
    blocks: list[Block] = [Image(panel.image, panel.title)] if panel.image is not None else []
    items = [line(Code(q.ref_id), ": ", Code(q.expr)) for q in panel.queries]
    items += [line(f"error: {e}") for e in panel.errors]
    if not panel.series and not panel.errors:
        items.append(line("no data in the window"))
    blocks.append(Bullets(tuple(items)))
    if panel.series:
        rows = tuple(
            (
                s.legend,
                format_value(s.last, panel.unit, panel.value_texts),
                format_value(s.minimum, panel.unit, panel.value_texts),
                format_value(s.maximum, panel.unit, panel.value_texts),
            )
            for s in panel.series[: MAX_SERIES_PLOTTED * 2]
        )
        blocks.append(Table(("series", "last", "min", "max"), rows))
    return blocks


def _panel_sections(panels: Sequence[PanelResult]) -> Iterator[Section]:
    """One section per panel; panels under a Grafana row are grouped under the row's title."""
    yield Section("Dashboard panels", 2)
    row: str | None = None
    for panel in panels:
        if panel.panel.row and panel.panel.row != row:
            yield Section(panel.panel.row, 3)
        row = panel.panel.row
        yield Section(panel.title, 4 if row else 3, _panel_blocks(panel))


def build_document(data: ReportData) -> Document:
    """The report's sections, as data: rendered to Markdown and to HTML from this one structure."""
    intro = Bullets(
        (
            line(f"Generated: {data.generated}"),
            line(f"Window: {data.window}"),
            line(f"Prometheus: {data.prometheus_url}"),
            line(f"Dashboard: {DASHBOARD_TITLE} (uid {DASHBOARD_UID})"),
            *(line(f"Note: {n}") for n in data.notes),
        )
    )
    sections = [
        Section("Summary", 2, [_summary(data)]),
        _targets_section(data),
        _alerts_section(data),
        _drift_section(data),
        *_panel_sections(data.panels),
    ]
    return Document("StreamFlow monitoring report", [intro], sections)


# --------------------------------------------------------------------------- entry point
def generate_monitoring_report(
    settings: Settings,
    minutes: float = 30,
    out_dir: Path | None = None,
    *,
    prometheus_url: str | None = None,
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
        panels = _collect_panels(live, dashboard_panels(), start_ts, end_ts, step_s)
        targets, targets_error = _collect_targets(live)
        alerts, alerts_error = _collect_alerts(live)

    for i, panel in enumerate(panels, start=1):
        image = assets / f"panel_{i:02d}_{panel.panel.id}.png"
        _render_panel_png(panel, image)
        panel.image = image

    fmt = "%Y-%m-%d %H:%M:%S UTC"
    document = build_document(
        ReportData(
            generated=datetime.now(tz=UTC).strftime(fmt),
            window=(
                f"last {minutes:g} min ({datetime.fromtimestamp(start_ts, tz=UTC).strftime(fmt)} → "
                f"{datetime.fromtimestamp(end_ts, tz=UTC).strftime(fmt)}, step {step_s:g}s)"
            ),
            prometheus_url=url,
            notes=notes,
            targets=targets,
            targets_error=targets_error,
            alerts=alerts,
            alerts_error=alerts_error,
            drift=latest_drift_summary(settings),
            panels=panels,
        )
    )
    md_path = out / f"{REPORT_NAME}.md"
    html_path = out / f"{REPORT_NAME}.html"
    atomic_write_text(md_path, to_markdown(document, images_href=ASSETS_DIR), mode=PRIVATE_MODE)
    atomic_write_text(html_path, to_html(document), mode=PRIVATE_MODE)
    logger.info("event=monitoring_report_written markdown=%s html=%s panels=%d", md_path, html_path, len(panels))
    return md_path
