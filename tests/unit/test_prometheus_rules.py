"""promtool validates the shipped Prometheus config, the rules and their unit tests.

``promtool test rules services/prometheus/tests/*.yml`` proves every alert fires AND resolves on
synthetic series and that the recording rules compute the expected values. CI installs promtool
(Debian package ``prometheus``); without it these tests fail: they never pass or skip silently.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from streamflow.core.settings import Settings
from streamflow.monitoring.metrics_push import (
    LAST_RUN,
    MODEL_AUC_DROP,
    MODEL_MAX_AUC_DROP,
    MODEL_MIN_AUC,
    MODEL_PERFORMANCE,
)
from streamflow.observability.prometheus_config import build_local_config

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "services" / "prometheus"
RULE_FILES = sorted((PROM_DIR / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM_DIR / "tests").glob("*.yml"))

PROMTOOL = shutil.which("promtool")


@pytest.fixture(autouse=True)
def _promtool_installed() -> None:
    if PROMTOOL is None:
        pytest.fail("promtool not on PATH (apt-get install prometheus); .ci/run installs it")


EXPECTED_ALERTS = {
    "StreamflowApiDown",
    "StreamflowApiHighLatencyP99",
    "StreamflowApiHighErrorRatio",
    "StreamflowApiNoTraffic",
    "StreamflowModelReloadFailed",
    "StreamflowModelSourceUnreadable",
    "StreamflowDataDrift",
    "StreamflowPushgatewayDown",
    "StreamflowDriftMetricsStale",
    "StreamflowDriftMetricsMissing",
    "StreamflowModelPerformanceDrop",
}
EXPECTED_RECORDS = {
    "job:api_requests:rate1m",
    "job:api_requests:rate5m",
    "job:api_requests_served:rate5m",
    "job:api_request_errors:ratio_rate5m",
    "job:api_request_latency_seconds:mean5m",
    "job:api_request_latency_seconds:p50_5m",
    "job:api_request_latency_seconds:p95_5m",
    "job:api_request_latency_seconds:p99_5m",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False)


def all_rules() -> list[dict[str, object]]:
    rules: list[dict[str, object]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(group["rules"])
    return rules


def test_rule_inventory_and_conventions() -> None:
    rules = all_rules()
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    records = {r["record"] for r in rules if "record" in r}
    assert set(alerts) == EXPECTED_ALERTS
    assert records == EXPECTED_RECORDS
    for name, rule in alerts.items():
        labels = rule.get("labels", {})
        annotations = rule.get("annotations", {})
        assert isinstance(labels, dict) and labels.get("severity") in {"critical", "warning"}, name
        assert isinstance(annotations, dict) and {"summary", "description"} <= set(annotations), name
    assert alerts["StreamflowApiDown"]["for"] == "1m"
    assert alerts["StreamflowApiDown"]["expr"].strip() == 'up{job="api"} == 0'
    refused = str(alerts["StreamflowModelReloadFailed"]["expr"])
    assert 'api_model_load_failures_total{reason=~"integrity|invalid_model"}' in refused and "[10m]" in refused
    # a database outage is its own alert, with a delay, not a "bad model" page
    assert 'reason="source"' in str(alerts["StreamflowModelSourceUnreadable"]["expr"])
    assert alerts["StreamflowModelSourceUnreadable"]["for"] == "5m"
    # the performance alert reads the gauges the monitor pushes (streamflow.monitoring.metrics_push)
    drop = str(alerts["StreamflowModelPerformanceDrop"]["expr"])
    for name in (MODEL_PERFORMANCE, MODEL_AUC_DROP, MODEL_MIN_AUC, MODEL_MAX_AUC_DROP):
        assert name in drop, name
    # staleness of the monitor's pushes: the timestamp every push carries, ~35 days (a monthly job + slack)
    stale, missing = alerts["StreamflowDriftMetricsStale"], alerts["StreamflowDriftMetricsMissing"]
    assert str(stale["expr"]).strip() == f"time() - max by (job) ({LAST_RUN}) > 35 * 86400"
    assert f"absent({LAST_RUN})" in str(missing["expr"]) and missing["for"] == "35d"


def test_every_alert_has_a_promtool_unit_test() -> None:
    tested: set[str] = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            fired = {t["alertname"] for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
            resolved = {t["alertname"] for t in case.get("alert_rule_test", []) if not t.get("exp_alerts")}
            tested |= fired & resolved  # fires AND (pending / resolved) within the same scenario
    assert tested == EXPECTED_ALERTS


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_shipped_config(tmp_path: Path) -> None:
    """The compose config, with only rule_files redirected to the repository's rules."""
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    config["rule_files"] = [str(PROM_DIR / "rules" / "*.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_check_rendered_native_config(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    config = build_local_config(settings, scrape_interval="1s", api_target="127.0.0.1:18000")
    path = tmp_path / "native.yml"
    path.write_text(yaml.safe_dump(config))
    result = promtool("check", "config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests() -> None:
    assert TEST_FILES, "no promtool test files"
    result = promtool("test", "rules", *map(str, TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") + result.stderr.count("SUCCESS") == len(TEST_FILES)


def test_native_config_replaces_targets_and_rules(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", api_host="0.0.0.0", api_port=8123)
    config = build_local_config(settings)
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert jobs["api"]["static_configs"] == [{"targets": ["127.0.0.1:8123"]}]
    assert jobs["api"]["metrics_path"] == "/metrics"
    assert jobs["pushgateway"]["static_configs"] == [{"targets": ["127.0.0.1:9091"]}]
    assert jobs["pushgateway"]["honor_labels"] is True
    assert config["global"]["scrape_interval"] == "10s"
    (glob,) = config["rule_files"]
    assert Path(glob).is_absolute()
    assert sorted(Path(glob).parent.glob(Path(glob).name)) == RULE_FILES

    fast = build_local_config(settings, scrape_interval="1s", pushgateway_target="127.0.0.1:19091")
    assert fast["global"]["scrape_interval"] == fast["global"]["evaluation_interval"] == "1s"
    assert {j["job_name"]: j for j in fast["scrape_configs"]}["pushgateway"]["static_configs"] == [
        {"targets": ["127.0.0.1:19091"]}
    ]


def test_launchers_return_none_without_binaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from streamflow.observability import prometheus_local

    monkeypatch.setattr(prometheus_local.shutil, "which", lambda _name: None)
    settings = Settings(home=tmp_path / "home")
    with caplog.at_level("WARNING"):
        assert prometheus_local.start_prometheus(settings) is None
        assert prometheus_local.start_pushgateway(settings) is None
    assert "prometheus binary not found" in caplog.text
    assert "pushgateway binary not found" in caplog.text
    assert not settings.run_dir.exists() or not list(settings.run_dir.glob("*.pid"))


def test_stop_ignores_foreign_pid(tmp_path: Path) -> None:
    """A PID file pointing at a process that is not our prometheus is never signalled."""
    import os

    from streamflow.core.processes import Supervisor
    from streamflow.observability.prometheus_local import PROMETHEUS

    settings = Settings(home=tmp_path / "home")
    settings.run_dir.mkdir(parents=True)
    supervisor = Supervisor.for_settings(settings)
    supervisor.pid_file("prometheus").write_text(f"{os.getpid()}\n")
    assert supervisor.stop("prometheus", PROMETHEUS) is False
    assert not supervisor.pid_file("prometheus").exists()
