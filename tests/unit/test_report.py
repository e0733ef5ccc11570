"""The monitoring report's pure parts: numbers rounded for people, alert templates never shown raw,
and one document structure rendered to Markdown and HTML with the same content. (The report
against a real Prometheus is tests/integration/test_prometheus_stack.py.)"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from streamflow.observability.document import Table, to_html, to_markdown
from streamflow.observability.panels import dashboard_panels
from streamflow.observability.report import (
    ASSETS_DIR,
    AlertRow,
    PanelResult,
    ReportData,
    Series,
    _render_panel_png,
    build_document,
    drift_value,
    format_value,
    render_rule_template,
    round_sig,
)


def too_precise(text: str) -> list[str]:
    """Decimal numbers with more than 4 significant digits."""
    return [n for n in re.findall(r"\d+\.\d+", text) if len(n.replace(".", "").lstrip("0")) > 4]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.006531307681385767, "0.006531"),
        (0.5, "0.5"),
        (2.0, "2"),
        (0, "0"),
        (1234.5678, "1235"),
        (-0.012345, "-0.01235"),
        (123456789.0, "1.235e+08"),
        (0.0000123, "1.230e-05"),
        (math.nan, "NaN"),
        (math.inf, "+Inf"),
    ],
)
def test_round_sig(value: float, text: str) -> None:
    assert round_sig(value) == text


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.006531307681385767, "s", "6.531 ms"),
        (0.25, "s", "250 ms"),
        (1.5, "s", "1.5 s"),
        (90, "s", "1.5 min"),
        (172800, "s", "2 d"),
        (0.0714285714, "percentunit", "7.143%"),
        (0.05, "percentunit", "5%"),
        (12.3456, "reqps", "12.35 req/s"),
        (3.14159, "short", "3.142"),
    ],
)
def test_format_value_units(value: float, unit: str, text: str) -> None:
    assert format_value(value, unit) == text


def test_format_value_mappings_first() -> None:
    texts = {"0": "DOWN", "1": "UP"}
    assert format_value(1.0, "short", texts) == "UP"
    assert format_value(0.0, "short", texts) == "DOWN"
    assert format_value(0.5, "short", texts) == "0.5"


def test_inactive_rule_templates_are_rendered_with_the_rule_labels() -> None:
    labels = {"severity": "warning"}
    assert render_rule_template("Pushgateway {{ $labels.instance }} is down", labels) == (
        "Pushgateway ‹instance› is down",
        True,
    )
    assert render_rule_template("{{ $value | humanizePercentage }} of requests", labels) == (
        "‹value› of requests",
        True,
    )
    assert render_rule_template('{{ $value | printf "%.0f" }} failures', labels) == ("‹value› failures", True)
    assert render_rule_template("a {{$labels.severity}} alert", labels) == ("a warning alert", False)
    assert render_rule_template("no template at all", labels) == ("no template at all", False)
    assert render_rule_template("{{ $externalURL }}", labels) == ("‹…›", True)


def test_drift_values_for_people() -> None:
    summary = {
        "drift_share": 0.07142857142857142,
        "drifted_count": 1,
        "n_features": 14,
        "threshold": 0.3,
        "target_drift": 0.006531307681385767,
        "target_ref_rate": 0.2654,
        "target_cur_rate": 0.271931307681385767,
        "drifted_features": [{"feature": "monthly_fee", "method": "psi", "score": 0.4213456}],
        "decision": "NO_ACTION",
    }
    assert drift_value("drift_share", summary) == "7.143% (1 of 14 features)"
    assert drift_value("threshold", summary) == "30%"
    assert drift_value("target_drift", summary) == "0.6531 percentage points (churn rate 26.54% → 27.19%)"
    assert drift_value("drifted_features", summary) == "monthly_fee (0.4213)"
    assert drift_value("decision", summary) == "NO_ACTION"
    assert drift_value("drifted_features", {"drifted_features": []}) == "(none)"


def _report_data(tmp_path: Path) -> ReportData:
    panels = {p.title: p for p in dashboard_panels()}
    latency = PanelResult(
        panel=panels["Average latency"],
        series=[Series("/predict POST 200", "A", [0.0, 10.0, 20.0], [0.0061234567, math.nan, 0.006531307681385767])],
    )
    up = PanelResult(panel=panels["Targets up"], series=[Series("api 127.0.0.1:1", "A", [0.0, 10.0], [1.0, 1.0])])
    empty = PanelResult(panel=panels["Drift decision"])
    for i, panel in enumerate((latency, up, empty), start=1):
        panel.image = tmp_path / f"panel_{i:02d}_{panel.panel.id}.png"
        _render_panel_png(panel, panel.image)
    summary, left = render_rule_template("Pushgateway {{ $labels.instance }} is down", {"severity": "warning"})
    alerts = [
        AlertRow("StreamflowDataDrift", "firing", "warning", "as_of_cur=2024-02-29", "2024-03-01 10:00:00",
                 "Data drift between 2024-01-31 and 2024-02-29", "Share of drifted features is 50%"),
        AlertRow("StreamflowApiHighErrorRatio", "inactive", "critical", "", "", "5xx ratio above 5%",
                 "‹value› of served requests returned 5xx", description_placeholders=True),
        AlertRow("StreamflowPushgatewayDown", "inactive", "warning", "", "", summary, "", summary_placeholders=left),
    ]  # fmt: skip
    return ReportData(
        generated="2024-03-01 10:00:00 UTC",
        window="last 5 min",
        prometheus_url="http://127.0.0.1:1",
        notes=[],
        targets=[{"labels": {"job": "api", "instance": "127.0.0.1:1"}, "health": "up", "lastScrape": "2024-03-01"}],
        targets_error=None,
        alerts=alerts,
        alerts_error=None,
        drift=(
            tmp_path / "drift.summary.json",
            {
                "as_of_ref": "2024-01-31",
                "as_of_cur": "2024-02-29",
                "drift_share": 0.5,
                "threshold": 0.3,
                "decision": "RETRAINING_TRIGGERED",
            },
        ),
        panels=[latency, up, empty],
    )


def test_one_structure_rendered_twice(tmp_path: Path) -> None:
    document = build_document(_report_data(tmp_path))
    md = to_markdown(document, images_href=ASSETS_DIR)
    page = to_html(document)
    for section in document.sections:  # every section, in both renderings, in the same order
        assert f"{'#' * section.level} {section.title}\n" in md
        assert f">{section.title}</h{section.level}>" in page
    titles_md = re.findall(r"^#+ (.+)$", md, re.M)
    titles_html = re.findall(r"<h[1-6]>(.+?)</h[1-6]>", page)
    assert titles_md == titles_html
    tables = [b for s in document.sections for b in s.blocks if isinstance(b, Table)]
    assert tables
    for table in tables:
        for row in table.rows:
            cells = [c if isinstance(c, str) else c.text for c in row]
            assert "| " + " | ".join(cells) + " |" in md
            for cell in cells:
                assert f">{cell}<" in page or cell == "", cell
    assert md.count(f"]({ASSETS_DIR}/panel_") == 3
    assert page.count('src="data:image/png;base64,') == 3


def test_report_text_is_for_people(tmp_path: Path) -> None:
    document = build_document(_report_data(tmp_path))
    md = to_markdown(document, images_href=ASSETS_DIR)
    page = to_html(document)
    for text in (md, page):
        assert "{{" not in text and "}}" not in text  # no raw alert template
        assert not too_precise(text), too_precise(text)
        assert "Pushgateway ‹instance› is down" in text
        assert "‹name› stands for a value" in text
    assert "| /predict POST 200 | 6.531 ms | 6.123 ms | 6.531 ms |" in md
    assert "| api 127.0.0.1:1 | UP | UP | UP |" in md
    assert "| StreamflowDataDrift | firing | warning |" in md
    assert "| drift_share | 50% |" in md and "| threshold | 30% |" in md
    assert "- Latest drift run: 2024-01-31 vs 2024-02-29: drift share 50%, threshold 30% → RETRAINING_TRIGGERED" in md
    assert "- no data in the window" in md
    assert '<span class="firing">firing</span>' in page
    assert '<span class="template">Pushgateway ‹instance› is down</span>' in page
    # only a cell with placeholders is marked as a template
    assert "<td>5xx ratio above 5%</td>" in page
    assert '<span class="template">‹value› of served requests returned 5xx</span>' in page
    assert "`A`: `rate(api_request_latency_seconds_sum[5m])" in md
    assert "<code>A</code>: <code>rate(api_request_latency_seconds_sum[5m])" in page
