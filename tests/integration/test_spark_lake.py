"""The lake path of the Spark engine on the real course months, through the CLI as an operator runs
it: ``streamflow lake export`` of month_000 and month_001, then ``streamflow monitor --engine spark
--json`` reading both months from the lake (no --ref-month / --cur-month) gives the answer the Spark
monitor gives from the CSVs — the same drifted set, drift share, per-feature scores, performance and
decision.

The lake's path has a space in it: a percent-encoded ``file:`` URI handed to Spark (``my%20lake``,
``as_of%3D2024-01-31``) is a literal directory name to Hadoop, where the readers never look — the
export "succeeded" and the monitor then found no month (LakeMonthMissingError, "months there: none").

Uses the shared ``course_stack`` (its production model scores both months) and the shared local[2]
``spark`` session (the in-process CLI finds it active and uses it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from streamflow.app.cli import app
from streamflow.core.settings import Settings
from streamflow.monitoring.monitor import MonitorRequest
from streamflow.spark import lake
from streamflow.spark.monitor import SparkInputs, run_spark_monitor
from tests.helpers.course import AS_OF
from tests.helpers.stack import Stack, environment_of

pytestmark = pytest.mark.integration

REF, CUR = AS_OF["month_000"], AS_OF["month_001"]


def _settings(stack: Stack, root: Path, name: str) -> Settings:
    return stack.settings.model_copy(
        update={
            "report_dir": root / name / "reports",
            "lake_path": str(root / name / "my lake"),
            "pushgateway_url": None,
        }
    )


def _cli(settings: Settings, *args: str) -> Result:
    """`streamflow ARGS` in-process, with ``settings`` as the environment (stdout and stderr apart)."""
    with environment_of(settings):
        return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def runs(course_stack: Stack, spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``streamflow lake export`` of both months, ``streamflow monitor --engine spark --json`` from the
    lake, and (to compare with) the Spark monitor reading the two months' CSVs."""
    root = tmp_path_factory.mktemp("spark_lake")
    seeds = course_stack.seeds
    from_lake = _settings(course_stack, root, "lake")
    exports = [
        _cli(from_lake, "lake", "export", str(seeds / m), "--as-of", AS_OF[m]) for m in ("month_000", "month_001")
    ]
    months = lake.lake_months(spark, from_lake.resolved_lake_path)
    monitor = _cli(
        from_lake, "monitor", "--engine", "spark", "--orchestrator", "none", "--json", "--no-progress",
        "--ref", REF, "--cur", CUR,
    )  # fmt: skip
    csv_settings = _settings(course_stack, root, "csv")
    request = MonitorRequest.build(csv_settings, as_of_ref=REF, as_of_cur=CUR, report_dir=csv_settings.report_dir)
    inputs = SparkInputs(str(seeds / "month_000"), str(seeds / "month_001"))
    csv = run_spark_monitor(request, inputs, csv_settings, emit=lambda _: None)
    return {"settings": from_lake, "exports": exports, "months": months, "monitor": monitor, "csv": csv}


def test_exported_months_are_in_the_lake(runs: dict[str, Any]) -> None:
    for exported in runs["exports"]:
        assert exported.exit_code == 0, exported.output
    assert runs["months"] == [REF, CUR]
    root = Path(runs["settings"].resolved_lake_path)
    assert sorted(p.name for p in (root / lake.MONTHS_DIR).iterdir()) == [f"as_of={REF}", f"as_of={CUR}"]
    for table in ("users", lake.LABELS):
        assert sorted(p.name for p in (root / table).iterdir() if p.is_dir()) == [f"as_of={REF}", f"as_of={CUR}"]
    assert not any("%" in p.name for p in root.parent.rglob("*")), "a percent-encoded name was written"


def test_monitor_from_the_lake_gives_the_csv_answer(runs: dict[str, Any]) -> None:
    result: Result = runs["monitor"]
    assert result.exit_code == 0, result.stderr
    mine, theirs = json.loads(result.stdout), runs["csv"]  # stdout is only the JSON summary
    lake_root = runs["settings"].resolved_lake_path
    assert f"[Month] as_of={REF} from the lake {lake_root}" in result.stderr
    assert f"[Month] as_of={CUR} from the lake {lake_root}" in result.stderr
    assert mine["engine"]["master"] == "local[2]"
    for key in ("n_ref", "n_cur", "n_features", "drifted_count", "drift_decision", "decision", "reasons", "triggers"):
        assert mine[key] == theirs[key], key
    assert [f["feature"] for f in mine["drifted_features"]] == ["rebuffer_events_7d"]  # the course's answer
    assert mine["drift_share"] == pytest.approx(theirs["drift_share"], abs=1e-12)
    assert len(mine["feature_scores"]) == len(theirs["feature_scores"]) == 14
    for a, b in zip(mine["feature_scores"], theirs["feature_scores"], strict=True):
        assert (a["feature"], a["method"], a["threshold"], a["drifted"]) == (
            b["feature"], b["method"], b["threshold"], b["drifted"]
        )  # fmt: skip
        assert a["score"] == pytest.approx(b["score"], abs=1e-12), a["feature"]
    for key in ("target_drift", "target_ref_rate", "target_cur_rate"):
        assert mine[key] == pytest.approx(theirs[key], abs=1e-12), key
    assert mine["prediction_drift"]["score"] == pytest.approx(theirs["prediction_drift"]["score"], abs=1e-12)
    assert mine["performance"]["realized"]["n"] == 7043
    assert mine["performance"]["realized"]["auc"] == pytest.approx(theirs["performance"]["realized"]["auc"], abs=1e-12)
    assert mine["decision"] == "RETRAINING_TRIGGERED"
