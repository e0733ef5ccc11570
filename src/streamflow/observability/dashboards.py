"""The StreamFlow Grafana dashboard as code (grafana-foundation-sdk, Grafana 11.2 build).

This module is the one definition of the dashboard: every panel, query, unit, threshold and value
mapping. ``services/grafana/provisioning/dashboards/json/streamflow.json`` is its checked-in output,
loaded by Grafana's file provisioning; regenerate it with ``streamflow dashboards build`` (``--check``
fails when the file differs, and a unit test asserts that regenerating gives the same file). The
monitoring report and the tests read the panels from here (:mod:`streamflow.observability.panels`),
never by re-parsing the JSON.

The dashboard is a sequence of :class:`Section` s stacked top to bottom. A section with a title gets a
Grafana row above its panels; a panel's ``at`` is its grid cell *relative to its section* (24 columns).
Adding a row is a few lines: append ``Section("Model quality", (timeseries(...), ...))`` to
:func:`streamflow_sections` with fresh panel ids.

Every query is plain PromQL (no ``$__rate_interval``): the report and the tests evaluate the very text
Grafana shows, against the provisioned datasource (fixed uid, no ``${DS_...}`` input).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import heatmap as heatmap_model
from grafana_foundation_sdk.models import prometheus as prometheus_model

DATASOURCE_UID = "streamflow-prometheus"
DASHBOARD_UID = "streamflow-overview"
DASHBOARD_TITLE = "StreamFlow — API & model monitoring"
GRID_COLUMNS = 24

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)

Steps = Sequence[tuple[float | None, str]]  # threshold steps: (lower bound, colour); None = base
GREEN: Steps = ((None, "green"),)


# --------------------------------------------------------------------------- building blocks
@dataclass(frozen=True)
class Query:
    """One PromQL target; its refId is given by its position in the panel (A, B, C...)."""

    expr: str
    legend: str
    heatmap: bool = False  # Prometheus "format": "heatmap" (cumulative le buckets -> counts)


@dataclass(frozen=True)
class Cell:
    """Grid cell relative to the section's top-left corner."""

    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class PanelDef:
    """A panel builder and where it sits in its section."""

    builder: Any  # a grafana_foundation_sdk panel builder (stat.Panel, timeseries.Panel, ...)
    at: Cell


@dataclass(frozen=True)
class Section:
    """Panels laid out together; ``title`` adds a Grafana row (with id ``row_id``) above them."""

    title: str | None
    panels: tuple[PanelDef, ...]
    row_id: int | None = None

    @property
    def height(self) -> int:
        return max((p.at.y + p.at.h for p in self.panels), default=0)


def _targets(queries: Sequence[Query]) -> list[prometheus.Dataquery]:
    targets: list[prometheus.Dataquery] = []
    for i, query in enumerate(queries):
        target = (
            prometheus.Dataquery()
            .datasource(DATASOURCE)
            .ref_id(chr(ord("A") + i))
            .expr(query.expr)
            .legend_format(query.legend)
            .range()
            .editor_mode(prometheus_model.QueryEditorMode.CODE)
        )
        if query.heatmap:
            target.format(prometheus_model.PromQueryFormat.HEATMAP)
        targets.append(target)
    return targets


def _thresholds(steps: Steps) -> dashboard_builders.ThresholdsConfig:
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


def _value_texts(texts: dict[int, tuple[str, str]]) -> list[model.ValueMapping]:
    """Value mapping ``{value: (text, colour)}``."""
    options = {str(value): model.ValueMappingResult(text=text, color=color) for value, (text, color) in texts.items()}
    return [model.ValueMap(options=options)]


def _common(builder: Any, pid: int, title: str, description: str, queries: Sequence[Query], unit: str) -> None:
    builder.id(pid).title(title).description(description).datasource(DATASOURCE).targets(_targets(queries))
    builder.unit(unit)


def stat_panel(
    pid: int,
    title: str,
    at: Cell,
    queries: Sequence[Query],
    *,
    description: str = "",
    unit: str = "short",
    steps: Steps = GREEN,
    value_texts: dict[int, tuple[str, str]] | None = None,
    color_mode: common.BigValueColorMode = common.BigValueColorMode.VALUE,
    graph_mode: common.BigValueGraphMode = common.BigValueGraphMode.NONE,
    text_mode: common.BigValueTextMode = common.BigValueTextMode.AUTO,
    decimals: int | None = None,
) -> PanelDef:
    """A value tile showing each series' last non-null value."""
    panel = stat.Panel()
    _common(panel, pid, title, description, queries, unit)
    panel.color_scheme(dashboard_builders.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
    panel.thresholds(_thresholds(steps))
    if value_texts:
        panel.mappings(_value_texts(value_texts))
    if decimals is not None:
        panel.decimals(decimals)
    panel.reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
    panel.color_mode(color_mode).graph_mode(graph_mode).text_mode(text_mode)
    panel.justify_mode(common.BigValueJustifyMode.AUTO).orientation(common.VizOrientation.AUTO)
    panel.wide_layout(True).show_percent_change(False)
    return PanelDef(panel, at)


def timeseries_panel(
    pid: int,
    title: str,
    at: Cell,
    queries: Sequence[Query],
    *,
    description: str = "",
    unit: str = "short",
    steps: Steps = GREEN,
    threshold_line: bool = False,
    stacked: bool = False,
    min_value: float | None = None,
    max_value: float | None = None,
) -> PanelDef:
    """Lines over time, one per series; ``threshold_line`` draws the thresholds as line + area."""
    panel = timeseries.Panel()
    _common(panel, pid, title, description, queries, unit)
    panel.color_scheme(dashboard_builders.FieldColor().mode(model.FieldColorModeId.PALETTE_CLASSIC))
    panel.thresholds(_thresholds(steps))
    if min_value is not None:
        panel.min(min_value)
    if max_value is not None:
        panel.max(max_value)
    panel.draw_style(common.GraphDrawStyle.LINE).line_width(1).fill_opacity(10)
    panel.show_points(common.VisibilityMode.NEVER).span_nulls(False)
    if threshold_line:
        panel.thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.LINE_AND_AREA)
        )
    if stacked:
        panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL).group("A"))
    panel.legend(
        common_builders.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM)
        .show_legend(True)
    )
    panel.tooltip(
        common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)
    )
    return PanelDef(panel, at)


def heatmap_panel(
    pid: int, title: str, at: Cell, query: Query, *, description: str = "", unit: str = "short"
) -> PanelDef:
    """Prometheus ``le`` buckets as a heatmap (no calculation: the buckets are the rows)."""
    panel = heatmap.Panel()
    _common(panel, pid, title, description, [query], unit)
    panel.color_scheme(dashboard_builders.FieldColor().mode(model.FieldColorModeId.PALETTE_CLASSIC))
    panel.thresholds(_thresholds(GREEN))
    panel.calculate(False).cell_gap(1)
    panel.y_axis(heatmap.YAxisConfig().axis_placement(common.AxisPlacement.LEFT).decimals(2))
    panel.color(
        heatmap.HeatmapColorOptions()
        .mode(heatmap_model.HeatmapColorMode.SCHEME)
        .scheme("Oranges")
        .fill("dark-orange")
        .scale(heatmap_model.HeatmapColorScale.EXPONENTIAL)
        .exponent(0.5)
        .steps(64)
        .reverse(False)
    )
    panel.rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.AUTO))
    panel.mode(common.TooltipDisplayMode.SINGLE).hide_y_histogram()
    panel.show_legend().exemplars_color("rgba(255,0,255,0.7)")
    panel.cell_values(heatmap.CellValues()).show_value(common.VisibilityMode.NEVER)
    panel.filter_values(heatmap.FilterValueRange().le(1e-09))
    return PanelDef(panel, at)


def bargauge_panel(
    pid: int,
    title: str,
    at: Cell,
    queries: Sequence[Query],
    *,
    description: str = "",
    unit: str = "short",
    min_value: float | None = None,
    decimals: int | None = None,
) -> PanelDef:
    """One horizontal gradient bar per series (last non-null value)."""
    panel = bargauge.Panel()
    _common(panel, pid, title, description, queries, unit)
    panel.color_scheme(dashboard_builders.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
    panel.thresholds(_thresholds(GREEN))
    if min_value is not None:
        panel.min(min_value)
    if decimals is not None:
        panel.decimals(decimals)
    panel.reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
    panel.orientation(common.VizOrientation.HORIZONTAL).display_mode(common.BarGaugeDisplayMode.GRADIENT)
    panel.show_unfilled(True).value_mode(common.BarGaugeValueMode.COLOR)
    panel.name_placement(common.BarGaugeNamePlacement.AUTO).sizing(common.BarGaugeSizing.AUTO)
    panel.min_viz_height(10).min_viz_width(0).max_viz_height(300)
    return PanelDef(panel, at)


# --------------------------------------------------------------------------- the dashboard
def streamflow_sections() -> tuple[Section, ...]:
    """The dashboard, top to bottom (fresh builders on every call)."""
    overview = Section(
        None,
        (
            stat_panel(
                1,
                "Targets up",
                Cell(0, 0, 6, 4),
                [Query("up", "{{job}} {{instance}}")],
                description="1 = Prometheus scrapes the target, 0 = down (StreamflowApiDown fires after 1m).",
                steps=((None, "red"), (1, "green")),
                value_texts={0: ("DOWN", "red"), 1: ("UP", "green")},
                color_mode=common.BigValueColorMode.BACKGROUND,
                text_mode=common.BigValueTextMode.VALUE_AND_NAME,
            ),
            stat_panel(
                2,
                "Model in production",
                Cell(6, 0, 6, 4),
                [Query("api_model_info", "{{model_name}} v{{model_version}} (as_of {{as_of}})")],
                description="api_model_info: the model version the API is serving (label values).",
                text_mode=common.BigValueTextMode.NAME,
            ),
            stat_panel(
                3,
                "In-flight requests",
                Cell(12, 0, 4, 4),
                [Query("sum(api_requests_in_flight)", "in flight")],
                graph_mode=common.BigValueGraphMode.AREA,
            ),
            stat_panel(
                4,
                "5xx ratio (5m)",
                Cell(16, 0, 4, 4),
                [Query("job:api_request_errors:ratio_rate5m", "{{job}}")],
                description="Share of served requests answered 5xx; alert above 5% for 5m.",
                unit="percentunit",
                steps=((None, "green"), (0.05, "red")),
                graph_mode=common.BigValueGraphMode.AREA,
            ),
            stat_panel(
                5,
                "Firing alerts",
                Cell(20, 0, 4, 4),
                [Query('count(ALERTS{alertstate="firing"}) or vector(0)', "firing")],
                steps=((None, "green"), (1, "red")),
            ),
        ),
    )

    traffic = Section(
        None,
        (
            timeseries_panel(
                6,
                "Requests per second by endpoint",
                Cell(0, 0, 12, 8),
                [
                    Query("sum by (endpoint) (job:api_requests:rate1m)", "{{endpoint}}"),
                    Query("sum(job:api_requests:rate1m)", "total"),
                ],
                description="sum by endpoint of rate(api_requests_total[1m]) (recording rule).",
                unit="reqps",
            ),
            timeseries_panel(
                7,
                "Average latency",
                Cell(12, 0, 12, 8),
                [
                    Query(
                        "rate(api_request_latency_seconds_sum[5m]) / rate(api_request_latency_seconds_count[5m])",
                        "{{endpoint}} {{method}} {{status}}",
                    )
                ],
                description="Mean request latency over 5m: rate(sum) / rate(count).",
                unit="s",
            ),
            timeseries_panel(
                8,
                "Latency percentiles (p50 / p95 / p99)",
                Cell(0, 8, 12, 8),
                [
                    Query("job:api_request_latency_seconds:p50_5m", "p50"),
                    Query("job:api_request_latency_seconds:p95_5m", "p95"),
                    Query("job:api_request_latency_seconds:p99_5m", "p99"),
                ],
                description=(
                    "histogram_quantile over 5m bucket rates, /metrics and /health excluded. SLO: p99 < 250 ms."
                ),
                unit="s",
                steps=((None, "green"), (0.25, "red")),
                threshold_line=True,
            ),
            timeseries_panel(
                9,
                "Responses by status",
                Cell(12, 8, 12, 8),
                [
                    Query("sum by (status) (job:api_requests:rate5m)", "{{status}}"),
                    Query(
                        'sum by (endpoint, status) (job:api_requests:rate5m{status=~"[45].."})',
                        "errors {{endpoint}} {{status}}",
                    ),
                ],
                description="Request rate per HTTP status; 4xx/5xx broken down by endpoint.",
                unit="reqps",
            ),
        ),
    )

    model_outputs = Section(
        None,
        (
            timeseries_panel(
                10,
                "Predictions by class",
                Cell(0, 0, 8, 8),
                [Query("sum by (prediction) (rate(api_predictions_total[5m]))", "class {{prediction}}")],
                unit="reqps",
                stacked=True,
            ),
            heatmap_panel(
                11,
                "Churn probability distribution",
                Cell(8, 0, 8, 8),
                Query("sum by (le) (increase(api_churn_probability_bucket[1m]))", "{{le}}", heatmap=True),
                description="Predicted churn probabilities per minute, by histogram bucket.",
            ),
            timeseries_panel(
                12,
                "Churn probability quantiles",
                Cell(16, 0, 8, 8),
                [
                    Query("histogram_quantile(0.5, sum by (le) (rate(api_churn_probability_bucket[5m])))", "median"),
                    Query("histogram_quantile(0.9, sum by (le) (rate(api_churn_probability_bucket[5m])))", "p90"),
                    Query(
                        "sum(rate(api_churn_probability_sum[5m])) / sum(rate(api_churn_probability_count[5m]))", "mean"
                    ),
                ],
                unit="percentunit",
            ),
        ),
    )

    serving_internals = Section(
        None,
        (
            timeseries_panel(
                13,
                "Feature lookup vs inference time",
                Cell(0, 0, 12, 8),
                [
                    Query(
                        "sum(rate(api_feature_lookup_seconds_sum[5m]))"
                        " / sum(rate(api_feature_lookup_seconds_count[5m]))",
                        "feature lookup (mean)",
                    ),
                    Query(
                        "sum(rate(api_model_inference_seconds_sum[5m]))"
                        " / sum(rate(api_model_inference_seconds_count[5m]))",
                        "inference (mean)",
                    ),
                    Query(
                        "histogram_quantile(0.95, sum by (le) (rate(api_feature_lookup_seconds_bucket[5m])))",
                        "feature lookup (p95)",
                    ),
                    Query(
                        "histogram_quantile(0.95, sum by (le) (rate(api_model_inference_seconds_bucket[5m])))",
                        "inference (p95)",
                    ),
                ],
                unit="s",
            ),
            timeseries_panel(
                14,
                "Feature misses and model (re)loads",
                Cell(12, 0, 12, 8),
                [
                    Query("sum(rate(api_feature_lookup_misses_total[5m]))", "feature lookup misses /s"),
                    Query("sum(increase(api_model_loads_total[10m]))", "model loads (10m)"),
                    Query("sum(increase(api_model_load_failures_total[10m]))", "model load failures (10m)"),
                ],
                description="A failed reload fires StreamflowModelReloadFailed.",
            ),
        ),
    )

    drift = Section(
        None,
        (
            timeseries_panel(
                15,
                "Drift share vs threshold",
                Cell(0, 0, 8, 8),
                [
                    Query(
                        "max by (as_of_ref, as_of_cur) (streamflow_drift_share)",
                        "drift share {{as_of_ref}} → {{as_of_cur}}",
                    ),
                    Query("max(streamflow_drift_threshold)", "threshold"),
                ],
                description="Pushed by the monitoring flow (Pushgateway, job streamflow_monitor).",
                unit="percentunit",
                min_value=0,
                max_value=1,
            ),
            stat_panel(
                16,
                "Drift decision",
                Cell(8, 0, 4, 4),
                [Query("max(streamflow_drift_decision)", "decision")],
                steps=((None, "green"), (1, "red")),
                value_texts={0: ("NO_ACTION", "green"), 1: ("RETRAINING_TRIGGERED", "red")},
                color_mode=common.BigValueColorMode.BACKGROUND,
            ),
            stat_panel(
                17,
                "Drifted features / target drift",
                Cell(8, 4, 4, 4),
                [
                    Query("max(streamflow_drifted_features)", "drifted features"),
                    Query("max(streamflow_target_drift)", "target drift"),
                    Query("max(streamflow_target_value_drift)", "target value drift"),
                ],
                text_mode=common.BigValueTextMode.VALUE_AND_NAME,
                decimals=3,
            ),
            bargauge_panel(
                18,
                "Per-feature drift score",
                Cell(12, 0, 8, 8),
                [Query("max by (feature) (streamflow_feature_drift_score)", "{{feature}}")],
                description="Drift score per feature for the latest monitoring run.",
                min_value=0,
                decimals=3,
            ),
            stat_panel(
                19,
                "Since last drift run",
                Cell(20, 0, 4, 8),
                [Query("time() - max(streamflow_drift_last_run_timestamp_seconds)", "age")],
                unit="s",
                steps=((None, "green"), (172800, "red")),
            ),
        ),
    )

    model_quality = Section(
        "Model quality",
        (
            timeseries_panel(
                21,
                "AUC: realized vs estimated vs validation",
                Cell(0, 0, 12, 8),
                [
                    Query(
                        'max by (source, as_of) (streamflow_model_performance{metric="auc"})',
                        "{{source}} AUC on {{as_of}}",
                    ),
                    Query("max(streamflow_model_validation_auc)", "validation AUC (training)"),
                    Query("max(streamflow_model_min_auc)", "min_auc (policy)"),
                ],
                description=(
                    "Pushed by the monitor: realized AUC once a month's labels exist, the label-free CBPE "
                    "estimate before; StreamflowModelPerformanceDrop fires on the policy's thresholds."
                ),
                min_value=0,
                max_value=1,
            ),
            timeseries_panel(
                22,
                "Predicted vs actual churn rate",
                Cell(12, 0, 12, 8),
                [
                    Query(
                        'max by (as_of) (streamflow_model_performance{source="realized",'
                        'metric="predicted_churn_rate"})',
                        "predicted (mean probability) {{as_of}}",
                    ),
                    Query(
                        'max by (as_of) (streamflow_model_performance{metric="actual_churn_rate",source="realized"})',
                        "actual {{as_of}}",
                    ),
                ],
                description="Calibration at a glance: the model's mean churn probability against the month's labels.",
                unit="percentunit",
                min_value=0,
            ),
            bargauge_panel(
                23,
                "AUC below validation",
                Cell(0, 8, 12, 6),
                [Query("max by (source, as_of) (streamflow_model_auc_drop)", "{{source}} {{as_of}}")],
                description="Validation AUC minus realized/estimated AUC; the policy retrains from max_auc_drop.",
                min_value=0,
                decimals=3,
            ),
            stat_panel(
                24,
                "Prediction drift (current vs reference)",
                Cell(12, 8, 12, 6),
                [
                    Query("max(streamflow_prediction_drift_score)", "drift score"),
                    Query("max(streamflow_prediction_drift_detected)", "drifted (1 = yes)"),
                ],
                description="Evidently ValueDrift of the predicted churn probability, current month vs reference.",
                text_mode=common.BigValueTextMode.VALUE_AND_NAME,
                decimals=3,
            ),
        ),
        row_id=20,
    )

    return (overview, traffic, model_outputs, serving_internals, drift, model_quality)


def build_dashboard(sections: Sequence[Section] | None = None) -> model.Dashboard:
    """The dashboard model: sections stacked top to bottom, each panel at its absolute grid cell."""
    board = (
        dashboard_builders.Dashboard(DASHBOARD_TITLE)
        .uid(DASHBOARD_UID)
        .description("StreamFlow churn API: traffic, latency, errors, model outputs and data drift.")
        .tags(["streamflow", "mlops"])
        .editable()
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .time("now-30m", "now")
        .timezone("browser")
        .refresh("10s")
        .timepicker(dashboard_builders.TimePicker().refresh_intervals(["5s", "10s", "30s", "1m", "5m"]))
        .fiscal_year_start_month(0)
        .week_start("")
        .version(1)
        .links([])
        .variables([])
        .annotation(
            dashboard_builders.AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
            .built_in(1)
        )
    )
    top = 0
    for section in streamflow_sections() if sections is None else sections:
        if section.title is not None:
            if section.row_id is None:
                raise ValueError(f"section {section.title!r}: a row needs a row_id")
            row = dashboard_builders.Row(section.title).id(section.row_id)
            board.with_row(row.grid_pos(model.GridPos(x=0, y=top, w=GRID_COLUMNS, h=1)))
            top += 1
        for panel in section.panels:
            cell = panel.at
            if cell.x < 0 or cell.y < 0 or cell.x + cell.w > GRID_COLUMNS:
                raise ValueError(f"panel at {cell} is outside the {GRID_COLUMNS}-column grid")
            # an explicit position: Dashboard.with_panel only auto-places a panel left at (0, 0)
            board.with_panel(panel.builder.grid_pos(model.GridPos(x=cell.x, y=top + cell.y, w=cell.w, h=cell.h)))
        top += section.height
    return board.build()


# --------------------------------------------------------------------------- the checked-in JSON
def dashboard_json(sections: Sequence[Section] | None = None) -> str:
    """The provisioning JSON: keys sorted, 2-space indent, UTF-8 text, trailing newline.

    ``"id": null`` is set explicitly: a provisioned dashboard's numeric id is Grafana's to assign.
    """
    payload: dict[str, Any] = json.loads(json.dumps(build_dashboard(sections), cls=JSONEncoder))
    payload["id"] = None
    return json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def is_up_to_date(path: Path) -> bool:
    """True when ``path`` holds exactly what :func:`dashboard_json` generates."""
    try:
        return path.read_text(encoding="utf-8") == dashboard_json()
    except FileNotFoundError:
        return False


def write_dashboard_json(path: Path) -> bool:
    """(Re)write ``path`` atomically; return False when it was already up to date."""
    text = dashboard_json()
    if is_up_to_date(path):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True
