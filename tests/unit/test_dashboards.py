"""Dashboards as code: the checked-in Grafana JSON is exactly the output of the Python definition,
the panels the report and the tests evaluate are the ones in that JSON, and the layout helpers
(sections, rows) place panels on the grid as Grafana expects."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamflow.app.cli import app
from streamflow.observability.dashboards import (
    DASHBOARD_UID,
    Cell,
    Query,
    Section,
    build_dashboard,
    dashboard_json,
    stat_panel,
    streamflow_sections,
    timeseries_panel,
)
from streamflow.observability.panels import dashboard_panels, panel_queries
from tests.helpers.repo import DASHBOARD, REPO, iter_panels

DASHBOARD_REL = DASHBOARD.relative_to(REPO)
runner = CliRunner()


def test_regenerating_gives_the_checked_in_file() -> None:
    assert DASHBOARD.read_text(encoding="utf-8") == dashboard_json(), (
        "streamflow.json differs from streamflow.observability.dashboards: run `streamflow dashboards build`"
    )


def test_generation_is_deterministic() -> None:
    text = dashboard_json()
    assert text == dashboard_json()
    assert text.endswith("}\n") and not text.endswith("\n\n")
    data = json.loads(text)
    assert list(data) == sorted(data)  # keys sorted at every level
    assert list(data["panels"][0]) == sorted(data["panels"][0])


def test_json_file_queries_equal_the_python_definitions() -> None:
    """Parsed independently of the SDK: what Grafana loads is what the report and tests evaluate."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    from_json = [
        (p["id"], p["title"], p["type"], t["refId"], t["expr"], t.get("legendFormat", ""))
        for p in iter_panels(board)
        for t in p["targets"]
    ]
    from_python = [
        (q.panel_id, q.panel_title, q.panel_type, q.ref_id, q.expr, q.legend_format) for q in panel_queries()
    ]
    assert from_json == from_python
    assert all(t["range"] is True and t["instant"] is False for p in iter_panels(board) for t in p["targets"])
    units = {p["id"]: p["fieldConfig"]["defaults"].get("unit", "short") for p in iter_panels(board)}
    assert units == {p.id: p.unit for p in dashboard_panels()}


def test_panel_views_carry_units_mappings_and_text_modes() -> None:
    panels = {p.title: p for p in dashboard_panels()}
    assert len(panels) == 23 and [p.id for p in dashboard_panels()] == [*range(1, 20), *range(21, 25)]
    assert panels["Targets up"].value_texts == {"0": "DOWN", "1": "UP"}
    assert panels["Drift decision"].value_texts == {"0": "NO_ACTION", "1": "RETRAINING_TRIGGERED"}
    assert panels["Model in production"].text_mode == "name"
    assert panels["Average latency"].unit == "s"
    assert panels["5xx ratio (5m)"].unit == "percentunit"
    assert [q.ref_id for q in panels["Feature lookup vs inference time"].queries] == ["A", "B", "C", "D"]
    assert [p.id for p in panels.values() if p.row is None] == list(range(1, 20))
    quality = [p for p in panels.values() if p.row == "Model quality"]
    assert [p.id for p in quality] == [21, 22, 23, 24]
    assert panels["Predicted vs actual churn rate"].unit == "percentunit"
    exprs = " ".join(q.expr for p in quality for q in p.queries)
    for gauge in ("streamflow_model_performance", "streamflow_model_validation_auc", "streamflow_model_min_auc",
                  "streamflow_model_auc_drop", "streamflow_prediction_drift_score"):  # fmt: skip
        assert gauge in exprs, gauge


def test_panels_tile_the_grid_without_overlap() -> None:
    board = json.loads(dashboard_json())
    taken: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & taken, panel["title"]
        taken |= cells
    # sections stack: the drift section starts below the serving-internals one
    drift = next(p for p in board["panels"] if p["id"] == 15)
    assert drift["gridPos"] == {"x": 0, "y": 36, "w": 8, "h": 8}
    assert next(p for p in board["panels"] if p["id"] == 17)["gridPos"] == {"x": 8, "y": 40, "w": 4, "h": 4}


def test_a_titled_section_adds_a_row_above_its_panels() -> None:
    """What issue-9-style additions look like: a few lines, placed below everything else."""
    extra = Section(
        "Example",
        (
            timeseries_panel(101, "Realized vs estimated AUC", Cell(0, 0, 12, 8), [Query("max(x_auc)", "auc")]),
            stat_panel(102, "Churn rate", Cell(12, 0, 12, 8), [Query("max(x_rate)", "rate")], unit="percentunit"),
        ),
        row_id=100,
    )
    board = json.loads(dashboard_json())
    quality = next(p for p in board["panels"] if p["type"] == "row")
    assert quality["title"] == "Model quality" and quality["id"] == 20
    assert quality["gridPos"] == {"x": 0, "y": 44, "w": 24, "h": 1}
    sections = (*streamflow_sections(), extra)
    board = json.loads(dashboard_json(sections))
    row = next(p for p in board["panels"] if p["type"] == "row" and p["id"] == 100)
    assert row["title"] == "Example" and row["collapsed"] is False
    assert row["gridPos"] == {"x": 0, "y": 59, "w": 24, "h": 1}  # below Model quality (1 + 8 + 6 rows)
    placed = {p["id"]: p["gridPos"] for p in board["panels"]}
    assert placed[101] == {"x": 0, "y": 60, "w": 12, "h": 8}
    assert placed[102] == {"x": 12, "y": 60, "w": 12, "h": 8}
    views = dashboard_panels(build_dashboard(sections))
    assert [(p.id, p.row) for p in views[-2:]] == [(101, "Example"), (102, "Example")]
    assert views[-1].unit == "percentunit"
    with pytest.raises(ValueError, match="row_id"):
        build_dashboard((Section("No id", ()),))
    with pytest.raises(ValueError, match="grid"):
        build_dashboard((Section(None, (stat_panel(1, "wide", Cell(20, 0, 6, 4), [Query("up", "")]),)),))


@pytest.fixture
def repo_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A repository root holding only what the CLI needs to find it; STREAMFLOW_REPO_ROOT points at it."""
    config = tmp_path / "services" / "prometheus" / "prometheus.yml"
    config.parent.mkdir(parents=True)
    shutil.copy(REPO / "services" / "prometheus" / "prometheus.yml", config)
    monkeypatch.setenv("STREAMFLOW_REPO_ROOT", str(tmp_path))
    monkeypatch.setenv("STREAMFLOW_HOME", str(tmp_path / "home"))
    yield tmp_path


def test_cli_build_writes_and_check_compares(repo_copy: Path) -> None:
    target = repo_copy / DASHBOARD_REL
    result = runner.invoke(app, ["dashboards", "build", "--check"])
    assert result.exit_code == 1 and "differs" in result.output
    assert not target.exists()  # --check never writes

    result = runner.invoke(app, ["dashboards", "build"])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    assert target.read_bytes() == DASHBOARD.read_bytes()

    result = runner.invoke(app, ["dashboards", "build", "--check"])
    assert result.exit_code == 0 and "up to date" in result.output

    target.write_text(target.read_text().replace(DASHBOARD_UID, "edited-by-hand"))
    result = runner.invoke(app, ["dashboards", "build", "--check"])
    assert result.exit_code == 1
    assert "streamflow dashboards build" in result.output
    assert [p.name for p in target.parent.iterdir()] == ["streamflow.json"]  # no temp file left
