"""The API's feature mirror when its connection is killed in the middle of a reload: a real API
process (``python -m streamflow.serving``) over a real embedded PostgreSQL pauses at the fault point
``during_feature_reload`` (its bulk-read connection open), the test terminates that backend with
``pg_terminate_backend`` — the previous snapshot keeps serving, the failure is counted and reported
as staleness on /ready with a one-line reason (no traceback in the log), no table changes, and
the next reload (after a jittered backoff) serves the new month."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamflow.app.monthly import ingest_and_publish
from streamflow.db.engine import libpq_url
from streamflow.serving.features import RELOAD_APP_NAME
from streamflow.training.train import train_model
from tests.helpers.faults import FaultHome, as_of, cli_env, data_checksums, rows
from tests.helpers.net import free_port

pytestmark = pytest.mark.integration

PAUSE_SECONDS = 4
TIMEOUT = 180.0
MARKER = "FAULT_PAUSE during_feature_reload"


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if predicate():
                return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def api_process(fh: FaultHome, log_path: Path) -> Iterator[tuple[str, Callable[[], str]]]:
    port = free_port()
    env = cli_env(
        fh.home,
        log_level="INFO",
        feature_poll_seconds=0.5,
        model_poll_seconds=1,
        fault_pause_at="during_feature_reload",
        fault_pause_seconds=PAUSE_SECONDS,
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = log_path.open("wb")
    cmd = [sys.executable, "-m", "streamflow.serving", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}", lambda: log_path.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log.close()


def metric(url: str, name: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return 0.0


def features(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/ready", timeout=5).json()["features"])


def watch_hours(url: str, user_id: str) -> float:
    r = httpx.post(f"{url}/predict?features=true", json={"user_id": user_id}, timeout=5)
    assert r.status_code == 200, r.text
    return float(r.json()["features_used"]["watch_hours_30d"])


def month_value(fh: FaultHome, user_id: str, month: int) -> float:
    usage = pd.read_csv(fh.month(month) / "usage_agg_30d.csv", dtype={"user_id": str}).set_index("user_id")
    return float(usage.loc[user_id, "watch_hours_30d"])


def test_mirror_connection_killed_mid_reload_keeps_serving_and_recovers(fresh_home: FaultHome, tmp_path: Path) -> None:
    fh = fresh_home
    train_model(as_of(0), fh.settings.model_copy(update={"n_estimators": 10}), promote_if_first=True)
    user = str(rows(fh.settings, "SELECT user_id FROM users ORDER BY user_id LIMIT 1")[0][0])
    old, new = month_value(fh, user, 1), month_value(fh, user, 2)
    assert old != new
    with api_process(fh, tmp_path / "api.log") as (url, logs):
        wait_for(lambda: httpx.get(f"{url}/ready", timeout=5).status_code == 200, "the API to become ready")
        assert features(url)["as_of"] == as_of(1) and watch_hours(url, user) == old
        assert metric(url, "api_feature_reload_failures_total") == 0

        ingest_and_publish(fh.month(2), as_of(2), fh.settings)  # a new materialization → a reload
        wait_for(lambda: logs().count(MARKER) >= 2, "the reload to reach its fault point")
        before = data_checksums(fh.settings)
        with psycopg.connect(libpq_url(fh.settings), autocommit=True) as conn:
            killed = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                (RELOAD_APP_NAME,),
            ).fetchall()
        assert killed and all(ok for (ok,) in killed)

        wait_for(lambda: metric(url, "api_feature_reload_failures_total") >= 1, "the failure to be counted")
        state = features(url)
        assert state["as_of"] == as_of(1) and state["reachable"] is True and state["reload_failures"] >= 1
        assert state["stale"] is True and "failed" in state["stale_reason"] and as_of(1) in state["stale_reason"]
        assert httpx.get(f"{url}/ready", timeout=5).status_code == 200  # stale, still serving
        assert metric(url, "api_features_stale") == 1
        assert watch_hours(url, user) == old  # the previous snapshot keeps serving
        assert data_checksums(fh.settings) == before

        wait_for(lambda: features(url)["as_of"] == as_of(2), "the next reload to succeed")
        state = features(url)
        assert state["stale"] is False and state["reload_failures"] == 0 and state["error"] is None
        assert watch_hours(url, user) == new
        assert metric(url, "api_feature_reloads_total") == 2
        assert metric(url, "api_feature_reload_failures_total") == 1
        assert metric(url, "api_features_stale") == 0
        assert metric(url, "api_feature_users") == state["users"] > 0
        assert metric(url, "api_feature_last_reload_timestamp_seconds") > time.time() - TIMEOUT
    text = logs()
    failed = [ln for ln in text.splitlines() if "event=features_load_failed" in ln]
    assert len(failed) == 1 and "retry_in_seconds=" in failed[0] and "serving_as_of=" + as_of(1) in failed[0]
    assert "Traceback" not in text
