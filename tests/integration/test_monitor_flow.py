"""The Prefect flow ``monitor_month`` end to end: real PostgreSQL snapshots, real Feast offline
retrieval, real Evidently, real MLflow, a real Pushgateway scraped by a real Prometheus.

* Course data (shared ``course_stack``; the production alias is never moved here): 1/14 drifted
  features (exactly rebuffer_events_7d), target drift 0.0239 — the drift rule says NO_ACTION at
  0.3, but the January model's realized AUC on February (≈ 0.48) triggers retraining (simulated);
  at 0.05 drift triggers too (the course's line, byte for byte); report files, the course's last
  line, the drift and model-quality gauges in Prometheus and the StreamflowModelPerformanceDrop
  alert firing there, clear errors for an empty month and a schema mismatch, a failed push = a
  warning.
* Generated months with planted drift (own stack): only the planted columns are flagged, a month
  against itself has drift_share 0, ``retrain=True`` really trains/compares/decides, and the
  scheduled pipeline ingests the newest month folder and monitors the last two snapshots.

Prefect runs against a temporary server (``prefect_test_harness``, started once per module).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

# Prefect reads PREFECT_HOME at import: keep its local files out of ~/.prefect and the repository.
os.environ.setdefault("PREFECT_HOME", str(Path(tempfile.gettempdir()) / f"streamflow-test-prefect-{os.getuid()}"))

import pytest
from click.testing import Result
from mlflow import MlflowClient
from typer.testing import CliRunner

from streamflow.app.cli import app
from streamflow.app.monthly import ingest_and_publish
from streamflow.core.data_model import FEATURES
from streamflow.core.dates import month_as_of
from streamflow.core.processes import Supervisor
from streamflow.core.settings import Settings
from streamflow.db.engine import release_embedded
from streamflow.features.dataset import EmptySnapshotError
from streamflow.flows.monitor import monitor_month
from streamflow.flows.schedule import ingest_newest_month, monthly_monitoring
from streamflow.monitoring import monitor as monitor_mod
from streamflow.monitoring.drift import DriftInputError
from streamflow.observability.prometheus_api import PrometheusClient
from streamflow.observability.prometheus_local import start_prometheus, start_pushgateway
from streamflow.seeds.drift import parse_drift_option
from streamflow.seeds.generator import generate_months
from streamflow.training.registry import production_version, promote
from streamflow.training.train import train_model
from tests.helpers.net import free_port
from tests.helpers.stack import Stack, environment_of, make_settings

pytestmark = pytest.mark.integration

REF, CUR = "2024-01-31", "2024-02-29"
LINE_PREFIX = "[Evidently] report_html="
PLANTED = "watch_hours_30d*0.6,net_service=Fiber optic:0.7@1"
PLANTED_COLUMNS = ["net_service", "watch_hours_30d"]
GEN_USERS = 5000
GEN_SEED = 7
PROMETHEUS_BIN = shutil.which("prometheus")
PUSHGATEWAY_BIN = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")


@pytest.fixture(scope="module")
def prefect_server() -> Iterator[None]:
    """A throwaway Prefect API (temporary SQLite DB) for the flows of this module."""
    from prefect.testing.utilities import prefect_test_harness

    t0 = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=60):
        print(f"\n[timing] prefect test server ready in {time.perf_counter() - t0:.1f}s")
        yield


def run_flow(settings: Settings, **params: Any) -> dict[str, Any]:
    """The Prefect flow, run as a deployment would: its settings come from the environment."""
    with environment_of(settings):
        result: dict[str, Any] = monitor_month(**params)
    return result


def run_cli(settings: Settings, *args: str) -> Result:
    """`streamflow ARGS` in-process, with ``settings`` as the environment (stdout and stderr apart)."""
    with environment_of(settings):
        return CliRunner().invoke(app, list(args))


def wait_for(what: str, fn: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last={last!r}")


# ============================================================================ course data
@dataclass
class Prom:
    url: str
    gateway_url: str


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prom]:
    """A real Pushgateway and a real Prometheus scraping it every second (honor_labels)."""
    if PROMETHEUS_BIN is None or PUSHGATEWAY_BIN is None:
        pytest.fail("the prometheus and prometheus-pushgateway binaries are required (Debian packages)")
    home = tmp_path_factory.mktemp("prom_home")
    launcher = make_settings(home)  # only used for the processes' PID files, logs and storage
    gw_port, prom_port = free_port(), free_port()
    config = home / "prometheus.yml"
    rules = Path(__file__).resolve().parents[2] / "services" / "prometheus" / "rules"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {rules / 'recording.yml'}\n  - {rules / 'alerts.yml'}\n"
        "scrape_configs:\n"
        "  - job_name: pushgateway\n    honor_labels: true\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{gw_port}']\n",
        encoding="utf-8",
    )
    started = []
    try:
        gateway = start_pushgateway(launcher, port=gw_port)
        assert gateway is not None
        started.append(gateway)
        prom = start_prometheus(launcher, port=prom_port, config_path=config)
        assert prom is not None
        started.append(prom)
        yield Prom(url=prom.url, gateway_url=gateway.url)
    finally:
        for proc in reversed(started):
            Supervisor.for_settings(launcher).stop_process(proc)


@pytest.fixture(scope="module")
def course_run(
    course_stack: Stack, prometheus: Prom, prefect_server: None, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One flow run on the course months at the default threshold, pushing to the real gateway."""
    report_dir = tmp_path_factory.mktemp("evidently_course")
    settings = course_stack.settings.model_copy(update={"pushgateway_url": prometheus.gateway_url})
    before = production_version(settings)
    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        result = run_flow(settings, as_of_ref=REF, as_of_cur=CUR, report_dir=str(report_dir))
    print(f"\n[timing] monitor_month on the course months: {time.perf_counter() - t0:.1f}s")
    after = production_version(settings)
    return {"result": result, "stdout": buf.getvalue(), "report_dir": report_dir, "before": before, "after": after}


def test_course_numbers(course_run: dict[str, Any]) -> None:
    r = course_run["result"]
    assert r["drift_share"] == 1 / 14  # over the 14 features, the predictions are not counted
    assert r["drifted_count"] == 1
    assert [d["feature"] for d in r["drifted_features"]] == ["rebuffer_events_7d"]
    assert [f["feature"] for f in r["feature_scores"]] == FEATURES
    assert r["target_drift"] == pytest.approx(0.0239, abs=1e-4)
    assert r["drift_decision"] == "NO_ACTION"  # the drift rule alone would not act...
    assert r["decision"] == "RETRAINING_TRIGGERED"  # ...but the model is at chance on February
    assert r["triggers"] == ["realized_auc_below_min", "realized_auc_drop"]
    assert r["reasons"][0].startswith("realized AUC 0.4") and r["reasons"][0].endswith("< min_auc 0.70")
    perf = r["performance"]
    assert perf["model_version"] == course_run["before"].version
    assert 0.45 <= perf["realized"]["auc"] <= 0.52 and perf["realized"]["n"] == 7043
    assert perf["validation_auc"] == pytest.approx(course_run["before"].metrics["val_auc"])
    assert perf["estimated"]["auc"] > 0.7 and perf["estimated_population"] == "unseen"  # concept drift: CBPE is blind
    assert set(perf["realized"]) >= {"auc", "f1", "precision", "recall", "accuracy", "brier", "predicted_churn_rate",
                                     "predicted_positive_rate", "actual_churn_rate", "n"}  # fmt: skip
    assert len(perf["calibration_bins"]) == 10
    pred = r["prediction_drift"]
    assert pred["column"] == "churn_probability" and pred["model_version"] == course_run["before"].version
    assert {"score", "method", "threshold", "drifted", "ref_mean", "cur_mean"} <= pred.keys()
    assert 0.0 < pred["ref_mean"] < 1.0 and 0.0 < pred["cur_mean"] < 1.0
    # compared on the users the model was not trained on (January's validation split, the same users in February)
    assert (pred["population"], pred["n_ref"], pred["n_cur"]) == ("unseen", 1761, 1761)
    assert r["retrain"] is None
    assert (r["n_ref"], r["n_cur"]) == (7043, 7043)
    assert course_run["before"].version == course_run["after"].version  # nothing moved


def test_course_report_files(course_run: dict[str, Any]) -> None:
    report_dir: Path = course_run["report_dir"]
    stem = f"drift_{REF}_vs_{CUR}"
    html, js, summary = (report_dir / f"{stem}{ext}" for ext in (".html", ".json", ".summary.json"))
    assert "<html" in html.read_text(encoding="utf-8").lower()
    evidently = json.loads(js.read_text(encoding="utf-8"))
    names = [m.get("metric_name") or m.get("metric_id") or "" for m in evidently["metrics"]]
    assert any("DriftedColumnsCount" in n for n in names)
    s = json.loads(summary.read_text(encoding="utf-8"))
    required = {"as_of_ref", "as_of_cur", "drift_share", "drifted_features", "feature_scores", "target_drift",
                "target_value_drift", "decision", "threshold", "report_html", "report_json", "reasons",
                "performance", "prediction_drift"}  # fmt: skip
    assert required <= s.keys()
    assert (s["as_of_ref"], s["as_of_cur"], s["decision"]) == (REF, CUR, "RETRAINING_TRIGGERED")
    assert s["reasons"] == course_run["result"]["reasons"]
    assert s["performance"]["realized"]["auc"] == course_run["result"]["performance"]["realized"]["auc"]
    assert s["report_html"] == str(html) and s["report_json"] == str(js)
    assert course_run["result"]["report_html"] == str(html)


def test_course_last_line(course_run: dict[str, Any]) -> None:
    lines = [ln for ln in course_run["stdout"].splitlines() if ln.strip()]
    stem = course_run["report_dir"] / f"drift_{REF}_vs_{CUR}"
    r = course_run["result"]
    assert lines[-1] == (
        f"[Evidently] report_html={stem}.html report_json={stem}.json drift_share=0.07 -> "
        f"RETRAINING_TRIGGERED drift_share=0.07 < 0.30 (target_drift=0.0239); {'; '.join(r['reasons'])}"
    )
    assert lines[-1] == r["decision_line"]
    perf_lines = [ln for ln in lines if ln.startswith("[Performance] ")]
    assert len(perf_lines) == 1 and lines.index(perf_lines[0]) < len(lines) - 1
    assert perf_lines[0].startswith(f"[Performance] model v{course_run['before'].version} on {CUR}: realized AUC 0.4")
    assert "(n=7043)" in perf_lines[0] and "estimated AUC" in perf_lines[0] and "reference val AUC 0.8" in perf_lines[0]
    out = course_run["stdout"]
    assert "[Target drift] ref_rate=0.2654 cur_rate=0.2415 abs_diff=0.0239" in out
    assert f"[Metrics] pushed 8 drift metric families to {r['metrics_push']['url']}" in out
    assert "[Retrain] SIMULATED (as in the course): realized AUC 0.4" in out


def test_drift_gauges_in_prometheus(course_run: dict[str, Any], prometheus: Prom) -> None:
    assert course_run["result"]["metrics_push"]["status"] == "pushed"
    pair = f'as_of_ref="{REF}",as_of_cur="{CUR}"'
    with PrometheusClient(prometheus.url) as prom:
        share = wait_for("streamflow_drift_share", lambda: prom.query(f"streamflow_drift_share{{{pair}}}"))
        assert len(share) == 1
        assert float(share[0]["value"][1]) == pytest.approx(1 / 14)
        assert share[0]["metric"]["job"] == "streamflow_monitor"  # honor_labels kept the pushed job
        scores = wait_for(
            "14 feature scores",
            lambda: (r := prom.query(f"streamflow_feature_drift_score{{{pair}}}")) and len(r) == 14 and r,
        )
        assert sorted(s["metric"]["feature"] for s in scores) == sorted(FEATURES)
        by_feature = {s["metric"]["feature"]: float(s["value"][1]) for s in scores}
        expected = {f["feature"]: f["score"] for f in course_run["result"]["feature_scores"]}
        assert by_feature == pytest.approx(expected)
        for name, value in (
            ("streamflow_drifted_features", 1.0),
            ("streamflow_drift_decision", 1.0),  # the monitor's decision (performance triggered)
            ("streamflow_drift_threshold", 0.3),
            ("streamflow_target_drift", course_run["result"]["target_drift"]),
        ):
            got = wait_for(name, lambda n=name: prom.query(f"{n}{{{pair}}}"))
            assert float(got[0]["value"][1]) == pytest.approx(value), name
        last = wait_for("last run ts", lambda: prom.query(f"streamflow_drift_last_run_timestamp_seconds{{{pair}}}"))
        assert abs(float(last[0]["value"][1]) - time.time()) < 600

        # model-quality gauges and the alert on them, evaluated by the real Prometheus
        perf = course_run["result"]["performance"]
        version = perf["model_version"]
        realized = wait_for(
            "realized AUC",
            lambda: prom.query(f'streamflow_model_performance{{metric="auc",source="realized",as_of="{CUR}"}}'),
        )
        assert realized[0]["metric"]["model_version"] == version
        assert float(realized[0]["value"][1]) == pytest.approx(perf["realized"]["auc"])
        estimated = wait_for(
            "estimated AUC", lambda: prom.query('streamflow_model_performance{metric="auc",source="estimated"}')
        )
        assert float(estimated[0]["value"][1]) == pytest.approx(perf["estimated"]["auc"])
        drop = wait_for("AUC drop", lambda: prom.query('streamflow_model_auc_drop{source="realized"}'))
        assert float(drop[0]["value"][1]) == pytest.approx(perf["validation_auc"] - perf["realized"]["auc"])
        pred = wait_for("prediction drift", lambda: prom.query("streamflow_prediction_drift_score"))
        assert float(pred[0]["value"][1]) == pytest.approx(course_run["result"]["prediction_drift"]["score"])
        alert = wait_for(
            "StreamflowModelPerformanceDrop firing",
            lambda: prom.query('ALERTS{alertname="StreamflowModelPerformanceDrop",alertstate="firing"}'),
        )
        assert {(a["metric"]["source"], a["metric"]["model_version"], a["metric"]["as_of"]) for a in alert} == {
            ("realized", version, CUR)
        }


def test_triggered_is_simulated_and_push_failure_is_a_warning(
    course_stack: Stack, prefect_server: None, tmp_path: Path
) -> None:
    """`streamflow monitor --threshold 0.05 --json` (through Prefect) with an unreachable Pushgateway:
    exit 0, JSON on stdout, SIMULATED + the push warning + the course line on stderr."""
    dead = f"http://127.0.0.1:{free_port()}"
    settings = course_stack.settings.model_copy(update={"pushgateway_url": dead, "report_dir": tmp_path})
    before = production_version(settings)
    result = run_cli(settings, "monitor", "--ref", REF, "--cur", CUR, "--threshold", "0.05", "--json")
    out, err = result.stdout, result.stderr
    assert result.exit_code == 0, err
    summary = json.loads(out)  # stdout is only the JSON summary
    assert summary["decision"] == "RETRAINING_TRIGGERED"
    assert summary["drift_share"] == pytest.approx(1 / 14)
    assert summary["threshold"] == 0.05
    assert summary["metrics_push"]["status"] == "failed"
    assert summary["report_html"] == str(tmp_path / f"drift_{REF}_vs_{CUR}.html")  # REPORT_DIR honoured
    assert summary["retrain"] is None
    assert "[Retrain] SIMULATED" in err and "--retrain" in err
    assert f"[Metrics] WARNING: pushing drift metrics to {dead} failed" in err
    assert "Traceback" not in err
    err_lines = [ln for ln in err.splitlines() if ln.startswith(LINE_PREFIX)]
    assert err_lines[-1].endswith("-> RETRAINING_TRIGGERED drift_share=0.07 >= 0.05 (target_drift=0.0239)")
    after = production_version(settings)
    assert before is not None and after is not None
    assert after.version == before.version  # simulated: alias untouched


def assert_logged_without_traceback(caplog: pytest.LogCaptureFixture, error: str) -> None:
    failures = [r for r in caplog.records if r.name.startswith("prefect") and error in r.getMessage()]
    assert {r.name for r in failures} == {"prefect.task_runs", "prefect.flow_runs"}
    assert all(r.exc_info is None and not r.exc_text for r in failures)


def test_empty_month_is_a_clear_error(
    course_stack: Stack, prefect_server: None, caplog: pytest.LogCaptureFixture
) -> None:
    # the command checks the snapshots before starting anything
    result = run_cli(course_stack.settings, "monitor", "--ref", "2023-12-31", "--cur", CUR)
    out, err = result.stdout, result.stderr
    assert result.exit_code == 2
    assert "2023-12-31" in err and "2024-01-31, 2024-02-29" in err
    assert "Traceback" not in out + err
    # the flow itself (deployments, compose) fails on the same input with the library's error,
    # and Prefect logs it as one line: the traceback is stripped for input errors
    caplog.clear()
    with pytest.raises(EmptySnapshotError, match=r"as_of=2023-12-31 .*2024-01-31, 2024-02-29"):
        run_flow(course_stack.settings, as_of_ref="2023-12-31", as_of_cur=CUR)
    assert_logged_without_traceback(caplog, "EmptySnapshotError")
    bad_date = run_cli(course_stack.settings, "monitor", "--ref", "2024-02-30", "--cur", CUR)
    bad_threshold = run_cli(course_stack.settings, "monitor", "--ref", REF, "--cur", CUR, "--threshold", "1.5")
    assert bad_date.exit_code == bad_threshold.exit_code == 2
    assert "2024-02-30" in bad_date.stderr and "1.5" in bad_threshold.stderr
    both = run_cli(course_stack.settings, "monitor", "--latest", "--ref", REF)
    assert both.exit_code == 2 and "--latest chooses both months" in both.stderr


def test_latest_needs_two_snapshots(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    try:
        result = run_cli(settings, "monitor", "--latest")
    finally:
        release_embedded(settings)
    assert result.exit_code == 2, result.output
    assert "--latest needs two snapshots in the database, found 0 (none)" in result.stderr
    assert "Traceback" not in result.output


def test_schema_mismatch_is_a_clear_error(
    course_stack: Stack, prefect_server: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    real = monitor_mod.build_point_in_time_dataset

    def drifted_schema(as_of: str, settings: Settings, **kwargs: Any) -> Any:
        df = real(as_of, settings, **kwargs)
        if str(as_of) == CUR:
            df = df.drop(columns=["watch_hours_30d"]).assign(skips_7d=df["skips_7d"].astype(str))
        return df

    monkeypatch.setattr(monitor_mod, "build_point_in_time_dataset", drifted_schema)
    settings = course_stack.settings.model_copy(update={"report_dir": tmp_path})
    result = run_cli(settings, "monitor", "--ref", REF, "--cur", CUR)
    out, err = result.stdout, result.stderr
    assert result.exit_code == 2
    error = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(error) == 1
    assert "missing columns ['watch_hours_30d']" in error[0] and CUR in error[0]
    assert "'skips_7d'" in error[0]
    assert "Traceback" not in out + err
    assert_logged_without_traceback(caplog, "DriftInputError")
    assert not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(DriftInputError):
        run_flow(course_stack.settings, as_of_ref=REF, as_of_cur=CUR, report_dir=str(tmp_path))


def test_cli_monitor(course_stack: Stack, prefect_server: None, tmp_path: Path) -> None:
    """`python -m streamflow monitor` in a subprocess, talking to this module's Prefect test server
    (no second server start)."""
    from prefect.settings import PREFECT_API_URL

    env = course_stack.env()
    env.update(REPORT_DIR=str(tmp_path), PREFECT_API_URL=str(PREFECT_API_URL.value()), STREAMFLOW_PUSHGATEWAY_URL="")
    t0 = time.perf_counter()
    bad = subprocess.run(
        [sys.executable, "-m", "streamflow", "monitor", "--ref", "2023-12-31", "--cur", CUR],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2, bad.stderr[-3000:]
    assert "2023-12-31" in bad.stderr and "Traceback" not in bad.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "streamflow", "monitor", "--ref", REF, "--cur", CUR, "--threshold", "0.05", "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    print(f"\n[timing] two `python -m streamflow monitor` subprocesses: {time.perf_counter() - t0:.1f}s")
    assert ok.returncode == 0, ok.stderr[-3000:]
    summary = json.loads(ok.stdout)
    assert summary["decision"] == "RETRAINING_TRIGGERED" and summary["drift_share"] == pytest.approx(1 / 14)
    assert [d["feature"] for d in summary["drifted_features"]] == ["rebuffer_events_7d"]
    assert Path(summary["report_html"]).parent == tmp_path
    last = [ln for ln in ok.stderr.splitlines() if ln.startswith(LINE_PREFIX)][-1]
    assert last.endswith("-> RETRAINING_TRIGGERED drift_share=0.07 >= 0.05 (target_drift=0.0239)")
    assert "[Retrain] SIMULATED" in ok.stderr and "Traceback" not in ok.stderr


# ============================================================================ planted drift
@dataclass
class GenStack:
    settings: Settings
    seeds: Path
    months: list[Path]
    prod_version: str


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GenStack]:
    """3 generated months (drift planted from month 1 on); months 0 and 1 ingested; a model
    trained on month 0 holds the production alias. Month 2 is left for the scheduled pipeline."""
    root = tmp_path_factory.mktemp("planted")
    seeds = root / "seeds"
    settings = make_settings(root / "home", n_estimators=40)
    t0 = time.perf_counter()
    months = generate_months(seeds, 3, GEN_USERS, GEN_SEED, drift=parse_drift_option(PLANTED))
    try:
        for i in (0, 1):
            ingest_and_publish(months[i], month_as_of(date(2024, 1, 31), i), settings)
        trained = train_model(REF, settings, promote_if_first=True)
        assert trained.promoted and trained.version is not None
        print(f"\n[timing] planted-drift stack (2 x {GEN_USERS} users + model): {time.perf_counter() - t0:.1f}s")
        yield GenStack(settings, seeds, months, trained.version)
    finally:
        release_embedded(settings)


def test_planted_drift_flags_exactly_the_planted_columns_and_retrains(
    planted: GenStack, prefect_server: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_flow(
        planted.settings, as_of_ref=REF, as_of_cur=CUR, threshold=0.1, retrain=True, report_dir=str(tmp_path)
    )
    assert sorted(d["feature"] for d in result["drifted_features"]) == PLANTED_COLUMNS
    assert result["drift_share"] == pytest.approx(2 / 14)
    assert result["decision"] == "RETRAINING_TRIGGERED"
    assert result["metrics_push"]["status"] == "skipped"
    out = capsys.readouterr().out
    assert "[Metrics] drift metrics NOT pushed: STREAMFLOW_PUSHGATEWAY_URL is not set" in out

    # retrain=True: a real candidate, compared with production on the same held-out rows
    rt = result["retrain"]
    assert rt is not None and rt["as_of"] == CUR
    assert rt["production_version"] == planted.prod_version
    assert rt["n_heldout"] == GEN_USERS // 4 and rt["n_train"] == GEN_USERS - GEN_USERS // 4
    assert rt["delta"] == pytest.approx(rt["candidate_auc"] - rt["production_auc"])
    assert rt["promoted"] == (rt["candidate_auc"] > rt["production_auc"] + planted.settings.promote_min_delta)
    alias = production_version(planted.settings)
    assert alias is not None
    assert alias.version == (rt["candidate_version"] if rt["promoted"] else planted.prod_version)
    run = MlflowClient(tracking_uri=planted.settings.tracking_uri).get_run(rt["candidate_run_id"])
    assert run.data.tags["trigger"] == "drift" and run.data.tags["as_of"] == CUR
    assert float(run.data.tags["drift_share"]) == pytest.approx(2 / 14)
    assert run.data.metrics["heldout_auc_candidate"] == pytest.approx(rt["candidate_auc"])
    assert run.data.metrics["heldout_auc_production"] == pytest.approx(rt["production_auc"])
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert any(ln.startswith(f"[Retrain] {rt['decision']}: ") for ln in lines)
    assert lines[-1].startswith(LINE_PREFIX)
    assert "-> RETRAINING_TRIGGERED drift_share=0.14 >= 0.10 (target_drift=" in lines[-1]
    # restore the alias for the next tests of this module
    promote(planted.settings, planted.prod_version, "test: restore", allow_older=True)


def test_month_against_itself_has_no_drift(planted: GenStack, prefect_server: None, tmp_path: Path) -> None:
    result = run_flow(planted.settings, as_of_ref=CUR, as_of_cur=CUR, report_dir=str(tmp_path))
    assert result["drift_share"] == 0.0
    assert result["drifted_features"] == []
    assert result["target_drift"] == 0.0
    assert result["decision"] == "NO_ACTION"
    assert Path(result["report_html"]).name == f"drift_{CUR}_vs_{CUR}.html"


def test_scheduled_pipeline_ingests_newest_month_then_monitors(
    planted: GenStack, prefect_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deployment's flow: month_002 (as of 2024-03-31) is ingested, then 02-29 vs 03-31 is
    monitored (both months carry the same planted drift: no drift between them). Runs last:
    it adds a snapshot to the planted stack."""
    with environment_of(planted.settings.model_copy(update={"report_dir": tmp_path})):
        out = monthly_monitoring(seeds_dir=str(planted.seeds))
        assert out["ingest"] == {
            "month_dir": str(planted.months[2]), "as_of": "2024-03-31", "ingested": True, "rows": out["ingest"]["rows"],
        }  # fmt: skip
        mon = out["monitor"]
        assert (mon["as_of_ref"], mon["as_of_cur"]) == (CUR, "2024-03-31")
        assert mon["drifted_features"] == [] and mon["decision"] == "NO_ACTION"
        assert Path(mon["report_json"]).parent == tmp_path
        # idempotent: a second run (e.g. a retried schedule) does not ingest the month again
        again = ingest_newest_month.fn(str(planted.seeds), "2024-01-31")
        assert again == {"month_dir": str(planted.months[2]), "as_of": "2024-03-31", "ingested": False}


def test_newest_month_course_layout(course_seeds: Path) -> None:
    """The schedule's month discovery on the course's own folder layout."""
    from streamflow.flows.schedule import newest_month

    assert newest_month(course_seeds) == (course_seeds / "month_001", date(2024, 2, 29))


def _dead_prefect_env(course_stack: Stack, tmp_path: Path) -> dict[str, str]:
    """Environment whose Prefect API refuses connections (a closed loopback port)."""
    env = course_stack.env()
    env.update(
        REPORT_DIR=str(tmp_path),
        PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api",
        STREAMFLOW_PUSHGATEWAY_URL="",
    )
    return env


def test_orchestrator_down_runs_the_same_steps_without_prefect(course_stack: Stack, tmp_path: Path) -> None:
    """An orchestrator hiccup must not cost the month its monitoring: with the Prefect API down,
    `streamflow monitor` (orchestrator auto) says so in one line and runs the same steps directly."""
    env = _dead_prefect_env(course_stack, tmp_path)
    t0 = time.perf_counter()
    done = subprocess.run(  # --latest: the monthly job's form (the Kubernetes CronJob's command)
        [sys.executable, "-m", "streamflow", "monitor", "--latest", "--json"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    print(f"\n[timing] monitor with the Prefect API down: {time.perf_counter() - t0:.1f}s")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    notes = [ln for ln in done.stderr.splitlines() if ln.startswith("[Orchestrator] Prefect unavailable")]
    assert len(notes) == 1, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert (summary["as_of_ref"], summary["as_of_cur"]) == (REF, CUR)  # the two newest snapshots
    assert summary["drift_share"] == pytest.approx(1 / 14) and summary["decision"] == "RETRAINING_TRIGGERED"
    assert Path(summary["report_html"]).is_file()


def test_orchestrator_prefect_required_fails_in_one_line(course_stack: Stack, tmp_path: Path) -> None:
    env = _dead_prefect_env(course_stack, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "streamflow", "monitor", "--ref", REF, "--cur", CUR, "--orchestrator", "prefect"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Prefect could not run the monitor flow" in errors[0]
    assert "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())  # nothing ran, nothing written
