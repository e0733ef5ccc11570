"""The load generator: target restrictions, bounds, and a real run against the API
(served by uvicorn in a thread) whose summary matches the server's own metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamflow.app.loadgen import LoadTargetError, check_target, run_load
from streamflow.core.settings import Settings
from tests.helpers.net import free_port
from tests.helpers.serving import Served, make_app, uvicorn_in_thread


@pytest.fixture(scope="module")
def api_url(served: Served) -> Iterator[str]:
    with uvicorn_in_thread(make_app(served)) as url:
        yield url


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000", "http://localhost:8000/predict", "http://[::1]:8000", "http://127.0.0.2:9/"],
)
def test_loopback_targets_are_allowed(url: str) -> None:
    assert check_target(url, None).endswith("/predict")


@pytest.mark.parametrize(
    "url", ["http://example.com:8000", "http://10.0.0.1:8000", "http://8.8.8.8", "ftp://127.0.0.1/", "nonsense"]
)
def test_other_targets_are_refused(url: str) -> None:
    with pytest.raises(LoadTargetError):
        check_target(url, Settings(api_url="http://api.internal:8000"))


def test_configured_api_url_is_allowed() -> None:
    s = Settings(api_url="http://api.internal:8000")
    assert check_target("http://api.internal:8000", s) == "http://api.internal:8000/predict"
    with pytest.raises(LoadTargetError):
        check_target("http://api.internal:9000", s)


@pytest.mark.parametrize(
    "kwargs",
    [{"requests": 0}, {"requests": 2_000_000}, {"concurrency": 0}, {"concurrency": 1000}, {"rps": -1.0}],
)
def test_bounds(kwargs: dict[str, float]) -> None:
    args = {"requests": 10, "concurrency": 2, **kwargs}
    with pytest.raises(ValueError):
        run_load("http://127.0.0.1:9", user_ids=["a"], show_progress=False, **args)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        run_load("http://127.0.0.1:9", 10, 2, duration=0, user_ids=["a"], show_progress=False)


def test_run_load_summary_matches_server_metrics(api_url: str, served: Served) -> None:
    ids = [*served.user_ids[:50], "0000-UNKNOWN"]
    summary = run_load(api_url, 300, 4, user_ids=ids, show_progress=True, seed=3)
    assert summary.requests == 300
    assert summary.stopped_by == "count"
    assert sum(summary.status_counts.values()) == 300
    assert set(summary.status_counts) <= {"200", "404"}
    assert summary.errors.get("404", 0) == summary.status_counts.get("404", 0) > 0
    assert summary.ok == summary.status_counts["200"]
    assert 0 < summary.p50_ms <= summary.p95_ms <= summary.p99_ms <= summary.max_ms
    import httpx

    text = httpx.get(f"{api_url}/metrics").text
    served_counts = {
        s.labels["status"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "api_requests"
        for s in f.samples
        if s.name == "api_requests_total" and s.labels["endpoint"] == "/predict"
    }
    assert served_counts == {k: float(v) for k, v in summary.status_counts.items()}


def test_run_load_rate_and_duration_bound(api_url: str, served: Served) -> None:
    t0 = time.perf_counter()
    summary = run_load(api_url, 10_000, 2, rps=50, duration=1.0, user_ids=served.user_ids[:5], show_progress=False)
    elapsed = time.perf_counter() - t0
    assert summary.stopped_by == "duration"
    assert elapsed < 30  # stops by itself (a hang detector, not a speed test)
    assert 1 <= summary.requests <= 50 + 2  # paced: never more than rps x duration (+ the 2 in flight)
    assert summary.errors == {}


def test_run_load_stops_on_event_and_counts_serving_versions(api_url: str, served: Served) -> None:
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    try:
        summary = run_load(api_url, 100_000, 2, rps=40, user_ids=served.user_ids[:5], show_progress=False, stop=stop)
    finally:
        timer.cancel()
    assert summary.stopped_by == "stop"
    assert summary.ok >= 1 and summary.errors == {}
    version = httpx.get(f"{api_url}/model").json()["version"]
    assert summary.model_versions == {str(version): summary.ok}


def test_unreachable_server_counts_connection_errors() -> None:
    port = free_port()
    summary = run_load(f"http://127.0.0.1:{port}", 5, 1, user_ids=["a"], show_progress=False)
    assert summary.ok == 0 and summary.errors == {"ConnectError": 5}
