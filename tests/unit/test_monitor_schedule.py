"""The monthly Prefect deployments as objects (no server is started, no API is called)."""

from __future__ import annotations

import os
import tempfile
from datetime import date
from pathlib import Path

os.environ.setdefault("PREFECT_HOME", str(Path(tempfile.gettempdir()) / f"streamflow-test-prefect-{os.getuid()}"))

import pytest
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment

from streamflow.core.settings import Settings
from streamflow.flows.schedule import (
    DEFAULT_CRON,
    MONITOR_DEPLOYMENT,
    PIPELINE_DEPLOYMENT,
    NoMonthError,
    build_deployments,
    newest_month,
)


def cron_of(deployment: RunnerDeployment) -> tuple[CronSchedule, bool]:
    schedules = deployment.schedules or []
    assert len(schedules) == 1
    schedule = schedules[0].schedule
    assert isinstance(schedule, CronSchedule)
    return schedule, bool(schedules[0].active)


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    for name in ("month_000", "month_001", "month_010", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "month_011").write_text("a file, not a month folder")
    return tmp_path


def test_newest_month(seeds: Path) -> None:
    path, as_of = newest_month(seeds)
    assert path == seeds / "month_010"
    assert as_of == date(2024, 11, 30)  # month_000 = 2024-01-31, month ends stay month ends
    assert newest_month(seeds, "2023-12-31")[1] == date(2024, 10, 31)


def test_no_month_folder(tmp_path: Path) -> None:
    with pytest.raises(NoMonthError, match="no month_NNN folder"):
        newest_month(tmp_path)
    with pytest.raises(NoMonthError):
        newest_month(tmp_path / "missing")


def test_deployments(seeds: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", drift_threshold=0.25)  # type: ignore[call-arg]
    pipeline, on_demand = build_deployments(settings, seeds)

    assert (pipeline.name, pipeline.flow_name) == (PIPELINE_DEPLOYMENT, "monthly_monitoring")
    assert pipeline.entrypoint == "streamflow.flows.schedule.monthly_monitoring"
    cron, active = cron_of(pipeline)
    assert active
    assert (cron.cron, cron.timezone) == (DEFAULT_CRON, "UTC")
    assert DEFAULT_CRON == "0 6 1 * *"  # 06:00 on the 1st of every month
    assert pipeline.parameters == {
        "seeds_dir": str(seeds.resolve()),
        "start_as_of": "2024-01-31",
        "threshold": 0.25,
        "retrain": False,
    }
    assert "streamflow" in pipeline.tags

    assert (on_demand.name, on_demand.flow_name) == (MONITOR_DEPLOYMENT, "monitor_month")
    assert on_demand.entrypoint == "streamflow.flows.monitor.monitor_month"
    assert on_demand.schedules in (None, [])
    assert on_demand.parameters == {"threshold": 0.25, "retrain": False}


def test_deployments_custom_cron_and_retrain(seeds: Path, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")  # type: ignore[call-arg]
    pipeline, on_demand = build_deployments(settings, seeds, cron="30 2 2 * *", timezone="Europe/Paris", retrain=True)
    cron, _ = cron_of(pipeline)
    assert (cron.cron, cron.timezone) == ("30 2 2 * *", "Europe/Paris")
    assert pipeline.parameters["retrain"] is True and on_demand.parameters["retrain"] is True
    with pytest.raises(ValueError):
        build_deployments(settings, seeds, cron="every month")
