"""Security faults through the real CLI and the real deployment scripts (docs/security.md):

* the `change-me-…` placeholders of .env.example are refused by every entry point that reads them
  (the CLI's settings — as compose's `init` runs it —, the MLflow entrypoint, the postgres, grafana
  and prefect entrypoint guard of docker-compose.yml): exit 2, one line naming the variable, no
  traceback, nothing started, nothing changed;
* a Pushgateway that accepts connections and never answers: the monitor's push gives up within its
  bound, the run completes with its decision and prints the warning line.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers.faults import (
    FaultHome,
    assert_clean_failure,
    run_cli,
    status_json,
    table_checksums,
)
from tests.helpers.repo import COMPOSE, ENV_EXAMPLE, REPO

pytestmark = pytest.mark.integration

PLACEHOLDER_URL = "postgresql://streamflow_app:change-me-app@127.0.0.1:5432/streamflow"


# ---- placeholder secrets -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "variable", "value"),
    [
        (["status"], "STREAMFLOW_DATABASE_URL", PLACEHOLDER_URL),
        (["bootstrap"], "STREAMFLOW_DATABASE_URL", PLACEHOLDER_URL),  # compose's `init`
        (["serve"], "STREAMFLOW_DATABASE_URL", PLACEHOLDER_URL),
        (["ingest", "month_002", "--as-of", "2024-03-31"], "STREAMFLOW_FEAST_DATABASE_URL", PLACEHOLDER_URL),
        (["monitor", "--ref", "2024-01-31", "--cur", "2024-02-29"], "PREFECT_API_AUTH_STRING", "admin:change-me-x"),
        (["train", "--as-of", "2024-01-31"], "MLFLOW_TRACKING_URI", "http://admin:change-me@mlflow:5000"),
    ],
)
def test_placeholder_secrets_are_refused_and_nothing_changes(
    fault_home: FaultHome, args: list[str], variable: str, value: str
) -> None:
    fh = fault_home
    status_before = status_json(fh.home)
    before = table_checksums(fh.settings)
    if args[0] == "ingest":
        args = ["ingest", str(fh.month(2)), *args[2:]]
    env_settings = {variable.removeprefix("STREAMFLOW_").lower(): value} if variable.startswith("STREAMFLOW_") else {}
    proc = run_cli_with(args, fh.home, {} if env_settings else {variable: value}, **env_settings)
    assert_clean_failure(proc, 2, f"{variable} holds a `change-me-…` placeholder secret")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "change-me-app" not in proc.stderr  # the secret itself is not echoed
    assert table_checksums(fh.settings) == before
    assert status_json(fh.home) == status_before


def run_cli_with(
    args: list[str], home: Path, extra_env: dict[str, str], **settings: object
) -> subprocess.CompletedProcess[str]:
    if not extra_env:
        return run_cli(args, home, **settings)
    from tests.helpers.faults import cli_env

    env = {**cli_env(home, **settings), **extra_env}
    return subprocess.run(
        [sys.executable, "-m", "streamflow", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def compose_environment(service: str, dotenv: dict[str, str]) -> dict[str, str]:
    """A compose service's environment with ${VAR…} interpolated from ``dotenv`` (as compose does)."""
    import re

    env = yaml.safe_load(COMPOSE.read_text())["services"][service]["environment"]
    pattern = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?][^}]*)?\}")
    return {k: pattern.sub(lambda m: dotenv.get(m[1], ""), str(v)) for k, v in env.items()}


@pytest.mark.parametrize(("service", "variable"), [("postgres", "POSTGRES_PASSWORD"),
                                                   ("grafana", "GRAFANA_ADMIN_PASSWORD"),
                                                   ("prefect", "PREFECT_API_AUTH_STRING")])  # fmt: skip
def test_compose_entrypoint_guards_refuse_the_env_example(tmp_path: Path, service: str, variable: str) -> None:
    """docker-compose.yml's own entrypoint of each third-party (or server) container, run here with the
    values of .env.example: refused, naming the variable of .env; with real secrets: the command runs."""
    guard = REPO / "services" / "docker" / "refuse-placeholders.sh"
    svc = yaml.safe_load(COMPOSE.read_text())["services"][service]
    entrypoint = [str(guard) if p.endswith("refuse-placeholders.sh") else p for p in svc["entrypoint"]]
    if entrypoint[0] != "/bin/sh":
        entrypoint = ["sh", *entrypoint]
    marker = tmp_path / "started"
    argv = [*entrypoint[: entrypoint.index("--") + 1], "sh", "-c", f"touch {marker}"]
    dotenv = env_example()
    refused = subprocess.run(argv, env=compose_environment(service, dotenv), capture_output=True, text=True)
    assert_clean_failure(refused, 2, f"error: {variable} holds a `change-me-…` placeholder secret")
    assert not marker.exists(), "the service started"
    real = {k: (v.replace("change-me", "s3cr3t") if "change-me" in v else v) for k, v in dotenv.items()}
    started = subprocess.run(argv, env=compose_environment(service, real), capture_output=True, text=True)
    assert started.returncode == 0, started.stderr
    assert marker.exists()


def test_mlflow_entrypoint_refuses_the_placeholder_before_starting(tmp_path: Path) -> None:
    """services/docker/mlflow-entrypoint.sh with .env.example's password: exit 2 naming it; `mlflow` is
    not even looked up (PATH holds none: a guard that let it through would fail with 127 instead)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "MLFLOW_DB_USER": "streamflow_mlflow",
        "MLFLOW_DB_PASSWORD": env_example()["MLFLOW_DB_PASSWORD"],
        "POSTGRES_HOST": "127.0.0.1",
    }
    proc = subprocess.run(
        ["sh", str(REPO / "services" / "docker" / "mlflow-entrypoint.sh")], env=env, capture_output=True, text=True
    )
    assert_clean_failure(proc, 2, "MLFLOW_DB_PASSWORD holds a `change-me-…` placeholder secret")
    env["MLFLOW_DB_PASSWORD"] = "s3cr3t"
    passed = subprocess.run(
        ["sh", str(REPO / "services" / "docker" / "mlflow-entrypoint.sh")], env=env, capture_output=True, text=True
    )
    assert passed.returncode == 127 and "mlflow" in passed.stderr  # the guard let it through to `exec mlflow`


# ---- a Pushgateway that never answers --------------------------------------------------------
class Blackhole:
    """Accepts TCP connections and never sends a byte (nor closes them)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    try:
        yield hole
    finally:
        hole.close()


def test_a_pushgateway_that_never_answers_does_not_hold_the_monitor(
    fresh_home: FaultHome, blackhole: Blackhole
) -> None:
    fh = fresh_home
    train = run_cli(["train", "--as-of", "2024-01-31"], fh.home, n_estimators=40)
    assert train.returncode == 0, train.stderr[-2000:]
    url = f"http://127.0.0.1:{blackhole.port}"
    proc = run_cli(
        ["monitor", "--ref", "2024-01-31", "--cur", "2024-02-29"],
        fh.home,
        pushgateway_url=url,
        orchestrator="none",
        log_level="WARNING",
    )
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out
    assert f"[Metrics] WARNING: pushing drift metrics to {url} failed" in out
    assert "timed out" in out  # the push's own timeout ended it (monitor.PUSH_TIMEOUT_S)
    assert "the report and the decision below are unaffected" in out
    assert "event=drift_metrics_push_failed" in out
    assert " -> NO_ACTION " in out or " -> RETRAINING_TRIGGERED " in out  # the run completed with its decision
    assert blackhole.accepted, "the monitor never reached the Pushgateway"
    summary = json.loads(next((fh.home / "reports" / "evidently").glob("*.summary.json")).read_text())
    assert summary["decision"] in {"NO_ACTION", "RETRAINING_TRIGGERED"}


def test_guard_script_is_strict_about_its_arguments(tmp_path: Path) -> None:
    guard = REPO / "services" / "docker" / "refuse-placeholders.sh"
    bad = subprocess.run(["sh", str(guard), "X;rm -rf /", "--", "true"], capture_output=True, text=True)
    assert_clean_failure(bad, 2, "not a variable name")
    usage = subprocess.run(["sh", str(guard), "X"], capture_output=True, text=True, env={"X": "fine"})
    assert_clean_failure(usage, 2, "usage: refuse-placeholders.sh")
    assert shutil.which("sh")
