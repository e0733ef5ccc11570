"""A REAL Prometheus (and Pushgateway), started by streamflow's native launcher with a 1 s scrape
and evaluation interval, scraping a real HTTP target on 127.0.0.1 and loading the shipped rules.

The scrape target is the real API: ``streamflow serve`` on a free port over the course stack
(embedded PostgreSQL, Feast online store, MLflow production model), with a bounded loop of
/predict traffic for real user ids (and some unknown ids: real 404s).

What is proven: the ``api`` and ``pushgateway`` targets are up; the course's four queries return
data; EVERY expr of the Grafana dashboard evaluates without error and returns series (traffic
panels with non-zero values); every shipped rule evaluates without error on real data; the drift
alert fires on metrics pushed by the real ``streamflow.monitoring.metrics_push``; the monitoring
report renders every panel; and, on a separate stack, stopping the target turns ``up`` to 0 and
puts the *unmodified* StreamflowApiDown rule (``for: 1m``) in the pending state — the alert
expression matches the real series; its firing after ``for`` is covered by promtool's tests.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa

from streamflow.app.runtime import API_PROGRAM, api_argv
from streamflow.core.processes import ManagedProcess, StartError, Supervisor, http_ready
from streamflow.core.settings import Settings
from streamflow.db.engine import get_engine
from streamflow.observability.panels import dashboard_panels, panel_queries
from streamflow.observability.prometheus_api import PrometheusClient
from streamflow.observability.prometheus_local import start_prometheus, start_pushgateway, stop_local_stack
from streamflow.observability.report import generate_monitoring_report
from tests.helpers.net import free_port
from tests.helpers.stack import Stack as CourseStack

pytestmark = pytest.mark.integration

PROMETHEUS_BIN = shutil.which("prometheus")
PUSHGATEWAY_BIN = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
WAIT_S = 30.0
T = TypeVar("T")

COURSE_QUERIES = (
    "up",
    "api_requests_total",
    "rate(api_requests_total[5m])",
    "rate(api_request_latency_seconds_sum[5m]) / rate(api_request_latency_seconds_count[5m])",
)
TRAFFIC_PANELS = {
    "Requests per second by endpoint",
    "Average latency",
    "Latency percentiles (p50 / p95 / p99)",
    "Responses by status",
    "Predictions by class",
    "Feature lookup vs inference time",
}


def wait_for(check: Callable[[], T | None], what: str, timeout: float = WAIT_S, interval: float = 0.25) -> T:
    """Poll ``check`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # a transient HTTP error while Prometheus warms up
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


# ----------------------------------------------------------------------------- scrape target
@dataclass
class ApiTarget:
    url: str
    stop: Callable[[], None]

    @property
    def address(self) -> str:
        return urlsplit(self.url).netloc


class RealApi:
    """`streamflow serve` on a free 127.0.0.1 port over the course stack (real Feast online
    store, real MLflow production model), fed by a bounded traffic loop of real user ids
    (every 7th request asks for an unknown id → a real 404 and a feature-lookup miss)."""

    def __init__(self, stack: CourseStack, *, tick_s: float = 0.02, max_runtime_s: float = 300.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = stack.env()
        env["STREAMFLOW_MODEL_POLL_SECONDS"] = "2"
        self.supervisor = Supervisor.for_settings(stack.settings)
        try:
            self.proc = self.supervisor.start(
                f"api-{self.port}",
                api_argv(stack.settings, "127.0.0.1", self.port),
                program=API_PROGRAM,
                ready=http_ready(f"{self.url}/ready"),
                timeout=180,
                url=self.url,
                env=env,
            )
        except StartError as exc:
            raise AssertionError(f"API not ready: {exc}") from None
        with get_engine(stack.settings).connect() as conn:
            self.user_ids = list(
                conn.execute(sa.text("SELECT user_id FROM users ORDER BY user_id LIMIT 500")).scalars()
            )
        self.tick_s = tick_s
        self.max_runtime_s = max_runtime_s  # the loop always ends on its own
        self._stop = threading.Event()
        self._loop = threading.Thread(target=self._run, name="api-traffic", daemon=True)
        self._loop.start()

    def _run(self) -> None:
        rng = random.Random(42)
        deadline = time.monotonic() + self.max_runtime_s
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            i = 0
            while not self._stop.is_set() and time.monotonic() < deadline:
                i += 1
                uid = "0000-UNKNOWN" if i % 7 == 0 else rng.choice(self.user_ids)
                with contextlib.suppress(httpx.HTTPError):
                    client.post("/predict", json={"user_id": uid})
                    if i % 10 == 0:
                        client.get("/health")
                self._stop.wait(self.tick_s)

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._loop.join(timeout=10)
        self.supervisor.stop_process(self.proc, timeout=20)


@pytest.fixture(scope="session")
def api_target_factory(course_stack: CourseStack) -> Iterator[Callable[[], ApiTarget]]:
    """Starts the REAL API (`streamflow serve`) as the scrape target; every instance started is
    stopped at the end (also on failure)."""
    servers: list[RealApi] = []

    def start() -> ApiTarget:
        server = RealApi(course_stack)
        servers.append(server)
        return ApiTarget(url=server.url, stop=server.stop)

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def api_target(api_target_factory: Callable[[], ApiTarget]) -> Iterator[ApiTarget]:
    target = api_target_factory()
    try:
        yield target
    finally:
        target.stop()


@pytest.fixture(scope="module")
def api_target_url(api_target: ApiTarget) -> str:
    return api_target.url


# ----------------------------------------------------------------------------- the stack
@dataclass
class Stack:
    settings: Settings
    prometheus: ManagedProcess
    pushgateway: ManagedProcess
    client: PrometheusClient


def require_binaries() -> None:
    if PROMETHEUS_BIN is None or PUSHGATEWAY_BIN is None:
        pytest.fail(
            "prometheus / prometheus-pushgateway not on PATH (apt-get install prometheus prometheus-pushgateway)"
        )


def push_drift(gateway: str) -> None:
    """Push a drifted comparison, with the model-quality and prediction-drift gauges, with the
    project's real pusher (docs/CONTRACTS.md)."""
    from streamflow.core.data_model import FEATURES
    from streamflow.monitoring.decision import Decision
    from streamflow.monitoring.drift import DriftResult, FeatureDrift, PredictionDrift, TargetDrift
    from streamflow.monitoring.metrics_push import ModelQuality, push_drift_metrics

    drifts = tuple(
        FeatureDrift(feature=f, method="psi", score=0.05 + 0.02 * i, threshold=0.1, drifted=i % 2 == 0)
        for i, f in enumerate(FEATURES)
    )
    drifted = sum(d.drifted for d in drifts)
    result = DriftResult(
        as_of_ref="2024-01-31",
        as_of_cur="2024-02-29",
        drift_share=drifted / len(drifts),
        drifted_count=drifted,
        feature_drifts=drifts,
        target=TargetDrift(ref_rate=0.2654, cur_rate=0.2415, abs_diff=0.0239),
        target_value_drift=0.04,
        target_value_drift_method="Z-test p_value",
        threshold=0.3,
        decision=Decision.RETRAINING_TRIGGERED,
        report_html=Path("drift.html"),
        report_json=Path("drift.json"),
        summary_json=Path("drift.summary.json"),
        n_ref=7043,
        n_cur=7043,
        generated_at=datetime.now(tz=UTC),
        prediction=PredictionDrift(
            method="Wasserstein distance (normed)",
            score=0.08,
            threshold=0.1,
            drifted=False,
            ref_mean=0.31,
            cur_mean=0.29,
        ),
    )
    quality = ModelQuality(
        model_version="1",
        as_of="2024-02-29",
        validation_auc=0.8125,
        realized={"auc": 0.484, "predicted_churn_rate": 0.31, "actual_churn_rate": 0.2415, "n": 7043},
        estimated={"auc": 0.817, "f1": 0.55, "accuracy": 0.76},
        min_auc=0.70,
        max_auc_drop=0.05,
    )
    push_drift_metrics(result, gateway, quality=quality)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, api_target_url: str) -> Iterator[Stack]:
    require_binaries()
    prom_port = free_port()
    settings = Settings(
        home=tmp_path_factory.mktemp("prom_home"),
        prometheus_port=prom_port,
        prometheus_url=f"http://127.0.0.1:{prom_port}",
    )
    client: PrometheusClient | None = None
    try:
        gateway = start_pushgateway(settings, port=free_port())
        assert gateway is not None
        push_drift(gateway.url)
        prometheus = start_prometheus(
            settings,
            scrape_interval="1s",
            api_target=urlsplit(api_target_url).netloc,
            pushgateway_target=urlsplit(gateway.url).netloc,
        )
        assert prometheus is not None
        client = PrometheusClient(prometheus.url)
        yield Stack(settings, prometheus, gateway, client)
    finally:
        if client is not None:
            client.close()
        stop_local_stack(settings)


def range_query(client: PrometheusClient, expr: str, seconds: float = 60) -> list[dict[str, Any]]:
    end = time.time()
    return client.query_range(expr, end - seconds, end, 1)


def has_positive(result: list[dict[str, Any]]) -> bool:
    return any(float(v) > 0 for item in result for _, v in item.get("values", [item.get("value", [0, "0"])]))


# ----------------------------------------------------------------------------- tests
def test_targets_up(stack: Stack, api_target_url: str) -> None:
    def healthy() -> dict[str, dict[str, Any]] | None:
        targets = {t["labels"]["job"]: t for t in stack.client.targets()}
        ok = {"api", "pushgateway"} <= set(targets) and all(
            targets[j]["health"] == "up" for j in ("api", "pushgateway")
        )
        return targets if ok else None

    targets = wait_for(healthy, "targets api and pushgateway up")
    assert targets["api"]["scrapeUrl"] == f"{api_target_url}/metrics"
    assert stack.client.query('up{job="api"}')[0]["value"][1] == "1"
    # the PID files name exactly the processes started
    pid_file = Supervisor.for_settings(stack.settings).pid_file
    assert pid_file("prometheus").read_text().strip() == str(stack.prometheus.pid)
    assert pid_file("pushgateway").read_text().strip() == str(stack.pushgateway.pid)
    # starting again is idempotent: the running instance is returned
    again = start_prometheus(stack.settings, scrape_interval="1s")
    assert again is not None and again.pid == stack.prometheus.pid


def test_course_queries_return_data(stack: Stack) -> None:
    for expr in COURSE_QUERIES:
        result = wait_for(lambda e=expr: stack.client.query(e), f"data for {expr}")
        assert result, expr
    for expr in COURSE_QUERIES[2:]:
        wait_for(lambda e=expr: has_positive(stack.client.query(e)), f"a positive value of {expr}")


def test_every_dashboard_expr_evaluates(stack: Stack) -> None:
    # the dashboard's Python definition; the provisioned JSON is exactly its output (tests/unit/test_dashboards.py)
    queries = panel_queries()
    assert len({q.panel_id for q in queries}) == len(dashboard_panels())

    def all_non_empty() -> dict[tuple[str, str], list[dict[str, Any]]] | None:
        results = {(q.panel_title, q.ref_id): range_query(stack.client, q.expr) for q in queries}
        return results if all(results.values()) else None

    try:
        results = wait_for(all_non_empty, "every dashboard query to return series")
    except pytest.fail.Exception:
        empty = [q for q in queries if not range_query(stack.client, q.expr)]
        raise AssertionError(f"dashboard queries without data: {empty}") from None
    for q in queries:  # the instant form (stat panels' last value) also evaluates
        stack.client.query(q.expr)
    for title in TRAFFIC_PANELS:
        panel_results = [r for (t, _), r in results.items() if t == title]
        assert panel_results, title
        assert any(has_positive(r) for r in panel_results), f"{title}: only zeros"


def test_rules_evaluate_without_errors(stack: Stack) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        rules = [r for g in stack.client.rules() for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else None

    rules = wait_for(evaluated, "every rule evaluated once")
    assert {r["health"] for r in rules} == {"ok"}, [(r["name"], r.get("lastError")) for r in rules]
    wait_for(lambda: stack.client.query("job:api_request_latency_seconds:p99_5m"), "recording rule p99")

    def error_ratio() -> str | None:  # the sample as text: "0" is a value, not a miss
        result = stack.client.query('job:api_request_errors:ratio_rate5m{job="api"}')
        return str(result[0]["value"][1]) if result else None

    # Real traffic: one request in 7 asks for an unknown user (404) — client errors are not
    # server errors, so the 5xx ratio is exactly 0 while 4xx responses exist.
    ratio = wait_for(error_ratio, "the 5xx ratio recording rule")
    assert float(ratio) == 0.0
    wait_for(
        lambda: has_positive(stack.client.query('sum(rate(api_requests_total{job="api", status="404"}[5m]))')),
        "404s of the unknown ids",
    )
    assert not stack.client.query('ALERTS{alertname="StreamflowApiHighErrorRatio"}')


def test_drift_alert_fires_on_pushed_metrics(stack: Stack) -> None:
    def firing() -> list[dict[str, Any]]:
        return [
            a
            for a in stack.client.alerts()
            if a["labels"]["alertname"] == "StreamflowDataDrift" and a["state"] == "firing"
        ]

    (alert,) = wait_for(firing, "StreamflowDataDrift firing")
    assert alert["labels"]["job"] == "streamflow_monitor"
    assert alert["labels"]["as_of_ref"] == "2024-01-31"
    assert alert["labels"]["as_of_cur"] == "2024-02-29"
    assert alert["labels"]["severity"] == "warning"
    assert "retraining is triggered" in alert["annotations"]["description"]
    assert stack.client.query('ALERTS{alertname="StreamflowDataDrift", alertstate="firing"}')
    # healthy API: none of the API alerts is active
    active = {a["labels"]["alertname"] for a in stack.client.alerts()}
    assert not active & {"StreamflowApiDown", "StreamflowApiHighErrorRatio", "StreamflowModelReloadFailed"}


def test_monitoring_report(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPORT_DIR", raising=False)
    evidently = stack.settings.evidently_dir
    evidently.mkdir(parents=True, exist_ok=True)
    summary = {
        "as_of_ref": "2024-01-31",
        "as_of_cur": "2024-02-29",
        "drift_share": 0.5,
        "drifted_features": [{"feature": "monthly_fee", "method": "psi", "score": 0.42, "threshold": 0.1}],
        "target_drift": 0.0239,
        "decision": "RETRAINING_TRIGGERED",
        "threshold": 0.3,
    }
    (evidently / "drift_2024-01-31_vs_2024-02-29.summary.json").write_text(json.dumps(summary))
    wait_for(lambda: has_positive(range_query(stack.client, "sum(job:api_requests:rate1m)")), "traffic recorded")

    md = generate_monitoring_report(stack.settings, minutes=2, out_dir=tmp_path / "reports")

    html = (tmp_path / "reports" / "monitoring_report.html").read_text()
    text = md.read_text()
    n_panels = len(dashboard_panels())
    pngs = sorted((tmp_path / "reports" / "monitoring_report_assets").glob("panel_*.png"))
    assert len(pngs) == n_panels
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000 for p in pngs)
    assert html.count('src="data:image/png;base64,') == n_panels
    assert text.count("](monitoring_report_assets/panel_") == n_panels
    assert "- error:" not in text and "no data in the window" not in text
    assert "| StreamflowDataDrift | firing | warning |" in text
    assert "| api | 127.0.0.1:" in text and "| up |" in text
    assert "RETRAINING_TRIGGERED" in text and "monthly_fee (0.42)" in text
    assert "Targets up: 2/2" in text
    # for people: alert templates rendered (inactive rules: placeholders marked), floats rounded
    for rendered in (text, html):
        assert "{{" not in rendered and "$labels" not in rendered
        assert "StreamFlow API target ‹instance› is down" in rendered
        too_precise = [n for n in re.findall(r"\d+\.\d+", rendered) if len(n.replace(".", "").lstrip("0")) > 4]
        assert not too_precise, too_precise  # at most 4 significant digits
    assert "| drift_share | 50% |" in text


def test_report_without_prometheus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPORT_DIR", raising=False)
    settings = Settings(home=tmp_path / "home", prometheus_url=f"http://127.0.0.1:{free_port()}")
    md = generate_monitoring_report(settings, minutes=5, out_dir=tmp_path / "out")
    text = md.read_text()
    assert "unreachable" in text
    assert "No `*.summary.json` found" in text
    assert (tmp_path / "out" / "monitoring_report.html").is_file()


def test_api_down_sets_up_zero_and_alert_pending(tmp_path: Path, api_target_factory: Callable[[], ApiTarget]) -> None:
    """Separate stack: stopping the target must be seen by the shipped StreamflowApiDown rule."""
    require_binaries()
    prom_port = free_port()
    settings = Settings(home=tmp_path / "home", prometheus_port=prom_port)
    target = api_target_factory()
    try:
        prometheus = start_prometheus(
            settings,
            scrape_interval="1s",
            api_target=target.address,
            pushgateway_target=f"127.0.0.1:{free_port()}",  # nothing there: irrelevant to this test
        )
        assert prometheus is not None
        with PrometheusClient(prometheus.url) as client:
            wait_for(lambda: client.query('up{job="api"} == 1'), "api target up")
            target.stop()
            down = wait_for(lambda: client.query('up{job="api"} == 0'), "up{job=api} == 0 after the target stopped")
            assert down[0]["metric"]["instance"] == target.address

            def pending() -> list[dict[str, Any]]:
                return [a for a in client.alerts() if a["labels"]["alertname"] == "StreamflowApiDown"]

            (alert,) = wait_for(pending, "StreamflowApiDown active")
            assert alert["state"] == "pending"  # `for: 1m` not elapsed: pending, not yet firing
            assert alert["labels"]["severity"] == "critical"
            assert alert["labels"]["instance"] == target.address
            assert client.query('ALERTS{alertname="StreamflowApiDown", alertstate="pending"}')
        pid = prometheus.pid
        assert stop_local_stack(settings) == ["prometheus"]
        assert not Supervisor.for_settings(settings).pid_file("prometheus").exists()
        assert not Path(f"/proc/{pid}").exists()
    finally:
        target.stop()
        stop_local_stack(settings)
