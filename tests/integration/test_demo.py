"""`streamflow demo` end to end (what `make demo` runs), then `streamflow down`: the whole
loop on a fresh STREAMFLOW_HOME with the embedded default, real Prometheus when present — and its
story: concept drift planted in month_001 is invisible to data drift, the model's realized AUC
shows it, the monitor retrains and promotes, the API switches model under traffic, zero errors.
The run leaves a private home (docs/security.md): nothing below it open to other users."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from streamflow.core.processes import pid_alive
from tests.helpers.net import free_port
from tests.helpers.private_home import assert_private_home

pytestmark = pytest.mark.integration


def run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamflow", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_demo_runs_the_whole_loop_and_down_stops_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    api_port, prom_port, gw_port = free_port(), free_port(), free_port()
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(
        STREAMFLOW_HOME=str(home),
        STREAMFLOW_API_PORT=str(api_port),
        STREAMFLOW_PROMETHEUS_PORT=str(prom_port),
        STREAMFLOW_PUSHGATEWAY_PORT=str(gw_port),
        COLUMNS="200",
    )
    try:
        demo = run(["demo", "--users", "2000", "--requests", "300"], env, timeout=600)
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
        out = demo.stdout
        assert "[Evidently] report_html=" in out
        assert " -> RETRAINING_TRIGGERED drift_share=0.00 < 0.30" in out  # not for data drift: for the model
        assert f"http://127.0.0.1:{api_port}/docs" in out and "make down" in out
        assert "  reason: realized AUC " in out
        assert "→ PROMOTED" in out
        assert "serving: v1 → v2 (switched under traffic)" in out and ", 0 errors, answered by v1: " in out
        for noise in ("Warning:", "Traceback", "level=INFO"):  # library noise and logs stay out of the story
            assert noise not in out + demo.stderr, noise

        # What it left running works: the API answers for a real user with the promoted model.
        user = (home / "seeds" / "month_000" / "users.csv").read_text().splitlines()[1].split(",")[0]
        r = httpx.post(f"http://127.0.0.1:{api_port}/predict", json={"user_id": user}, timeout=10)
        assert r.status_code == 200 and r.json()["model_version"] == "2"
        metrics = httpx.get(f"http://127.0.0.1:{api_port}/metrics", timeout=10).text
        assert 'api_requests_total{endpoint="/predict",method="POST",status="200"}' in metrics

        status = json.loads(run(["status", "--json"], env, timeout=120).stdout)
        assert [s["as_of"] for s in status["snapshots"]] == ["2024-01-31", "2024-02-29"]
        assert [(m["version"], m["aliases"]) for m in status["models"]] == [("1", []), ("2", ["production"])]

        evidently = home / "reports" / "evidently"
        summary = json.loads((evidently / "drift_2024-01-31_vs_2024-02-29.summary.json").read_text())
        assert summary["decision"] == "RETRAINING_TRIGGERED" and len(summary["feature_scores"]) == 14
        assert summary["drift_share"] == 0.0  # concept drift: no feature moved
        assert summary["performance"]["realized"]["auc"] < 0.70
        if shutil.which("prometheus"):
            assert (home / "reports" / "monitoring_report.md").is_file()
            assert f"http://127.0.0.1:{prom_port}" in out
        assert (home / "run" / "api.pid").is_file()
    finally:
        pids = {p.stem: int(p.read_text()) for p in (home / "run").glob("*.pid")}
        down = run(["down"], env, timeout=120)
    assert down.returncode == 0, down.stderr
    assert "api" in down.stdout
    for name, pid in pids.items():
        assert not pid_alive(pid), f"{name} (pid {pid}) still running after `streamflow down`"
    assert not (home / "pgdata" / "postmaster.pid").exists(), "embedded PostgreSQL still running"
    assert_private_home(home)
