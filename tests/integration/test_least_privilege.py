"""Least-privilege database roles, proven on a real, separate PostgreSQL (Debian's 15) prepared as
the compose ``postgres`` service prepares its volume: the superuser creates the database and runs
``services/postgres/10-streamflow-roles.sh``, and is never used again. Then, through the real CLI
and the real MLflow entrypoint:

* MLflow (``services/docker/mlflow-entrypoint.sh``) runs as its own role on its own database, with
  the backend URL in its environment, never on a command line;
* ingest (twice: the second one re-swaps Feast's online tables), train, monitor and status run as
  the application's role, Feast as its role;
* what each role may not do is refused: ``COPY … TO PROGRAM`` (a shell on the database host), reading
  the application's other tables as Feast, connecting to the application's database as MLflow or as
  any other login role.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from tests.helpers.course import AS_OF
from tests.helpers.external_pg import ExternalPostgres, available, external_postgres
from tests.helpers.net import free_port
from tests.helpers.repo import REPO

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not available(), reason="PostgreSQL 15 server binaries not installed (postgresql-15)"),
]

MLFLOW_ENTRYPOINT = REPO / "services" / "docker" / "mlflow-entrypoint.sh"
CLI_TIMEOUT = 600


@dataclass
class Deployment:
    pg: ExternalPostgres
    home: Path
    mlflow_url: str
    mlflow_pid: int

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            STREAMFLOW_HOME=str(self.home),
            STREAMFLOW_DATABASE_URL=self.pg.app_url,
            STREAMFLOW_FEAST_DATABASE_URL=self.pg.feast_url,
            MLFLOW_TRACKING_URI=self.mlflow_url,
            STREAMFLOW_ORCHESTRATOR="none",
            STREAMFLOW_LOG_LEVEL="WARNING",
        )
        return env

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streamflow", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )


def _start_mlflow(pg: ExternalPostgres, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp),
        "MLFLOW_DB_USER": "streamflow_mlflow",
        "MLFLOW_DB_PASSWORD": pg.passwords["mlflow"],
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(pg.port),
        "MLFLOW_DB": "mlflow",
        "MLFLOW_PORT": str(port),
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp / "mlartifacts"),
    }
    log = (tmp / "mlflow.log").open("wb")
    proc = subprocess.Popen(
        ["sh", str(MLFLOW_ENTRYPOINT)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow exited {proc.returncode}:\n{(tmp / 'mlflow.log').read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"mlflow not healthy in 180 s:\n{(tmp / 'mlflow.log').read_text()[-3000:]}")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("least_privilege")
    with external_postgres(tmp) as pg:
        roles = pg.run_roles_script()
        assert roles.returncode == 0, roles.stderr
        proc, url = _start_mlflow(pg, tmp)
        try:
            yield Deployment(pg=pg, home=tmp / "home", mlflow_url=url, mlflow_pid=proc.pid)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def refused(url: str, statement: str) -> str:
    """The error class of ``statement`` run on a new connection to ``url`` (it must fail)."""
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            return type(exc).__name__
    raise AssertionError(f"{statement!r} was allowed")


def test_roles_script_is_idempotent_and_refuses_placeholders(deployment: Deployment) -> None:
    again = deployment.pg.run_roles_script()
    assert again.returncode == 0, again.stderr
    bad = deployment.pg.run_roles_script(FEAST_DB_PASSWORD="change-me-feast")
    assert bad.returncode == 2
    assert "FEAST_DB_PASSWORD" in bad.stderr and "Traceback" not in bad.stderr
    superuser = deployment.pg.run_roles_script(APP_DB_USER="postgres")
    assert superuser.returncode == 2 and "APP_DB_USER must not be the superuser" in superuser.stderr
    with psycopg.connect(deployment.pg.superuser_url) as conn:
        rows = conn.execute(
            "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls FROM pg_roles"
            " WHERE rolname LIKE 'streamflow_%' ORDER BY 1"
        ).fetchall()
        assert [r[0] for r in rows] == ["streamflow_app", "streamflow_feast", "streamflow_mlflow"]
        assert all(not any(r[1:]) for r in rows), rows
        server_program = conn.execute(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
            " JOIN pg_roles u ON u.oid = m.member"
            " WHERE r.rolname IN ('pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files')"
            " AND u.rolname LIKE 'streamflow_%'"
        ).fetchone()
        assert server_program == (0,)


def test_mlflow_runs_as_its_role_with_the_password_off_the_command_line(deployment: Deployment) -> None:
    password = deployment.pg.passwords["mlflow"]
    tree = [psutil.Process(deployment.mlflow_pid), *psutil.Process(deployment.mlflow_pid).children(recursive=True)]
    assert len(tree) >= 2, "the entrypoint execs mlflow server, which starts its workers"
    for proc in tree:
        assert password not in " ".join(proc.cmdline()), proc.cmdline()
    with psycopg.connect(deployment.pg.superuser_url, dbname="mlflow") as conn:
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'mlflow'").fetchone()
        tables = conn.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'").fetchall()
    assert owner == ("streamflow_mlflow",)
    assert tables == [("streamflow_mlflow",)]  # MLflow's migrations ran as its role
    assert refused(deployment.pg.url("streamflow_mlflow", password, "mlflow"), "COPY (SELECT 1) TO PROGRAM 'true'")
    with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
        psycopg.connect(deployment.pg.url("streamflow_mlflow", password)).close()


def test_the_whole_loop_runs_as_the_application_and_feast_roles(course_seeds: Path, deployment: Deployment) -> None:
    for month, as_of in AS_OF.items():
        ingest = deployment.cli("ingest", str(course_seeds / month), "--as-of", as_of, "--no-progress")
        assert ingest.returncode == 0, ingest.stderr[-3000:]
    train = deployment.cli("train", "--as-of", "2024-01-31")
    assert train.returncode == 0, train.stderr[-3000:]
    monitor = deployment.cli("monitor", "--ref", "2024-01-31", "--cur", "2024-02-29", "--json")
    assert monitor.returncode == 0, monitor.stderr[-3000:]
    assert json.loads(monitor.stdout)["decision"] == "RETRAINING_TRIGGERED"  # the course's answer
    status = deployment.cli("status", "--json")
    assert status.returncode == 0, status.stderr[-3000:]
    state = json.loads(status.stdout)
    assert state["online_store"]["as_of"] == "2024-02-29" and state["online_store"]["stale"] is False
    assert [m["aliases"] for m in state["models"]] == [["production"]]

    pg = deployment.pg
    with psycopg.connect(pg.superuser_url) as conn:
        owners = dict(
            conn.execute("SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'").fetchall()
        )
    online = {t for t in owners if t.startswith("streamflow_") and t.endswith("_fv")}
    assert len(online) == 4
    # Feast owns its registry and its online tables, also after the second swap; the app owns the rest
    assert {owners[t] for t in online} == {"streamflow_feast"}
    assert owners["feast_metadata"] == owners["feature_views"] == "streamflow_feast"
    for table in ("ingestions", "users", "subscriptions_profile_snapshots", "model_performance", "labels_snapshots"):
        assert owners[table] == "streamflow_app", table

    # the application: no program execution, no server files, but it reads Feast's online tables
    assert refused(pg.app_url, "COPY (SELECT 1) TO PROGRAM 'true'") == "InsufficientPrivilege"
    assert refused(pg.app_url, "COPY users FROM '/etc/passwd'") == "InsufficientPrivilege"
    assert refused(pg.app_url, "CREATE DATABASE stolen") == "InsufficientPrivilege"
    assert refused(pg.app_url, "ALTER ROLE streamflow_app SUPERUSER") == "InsufficientPrivilege"
    with psycopg.connect(pg.app_url) as conn:
        assert conn.execute("SELECT count(*) FROM streamflow_subs_profile_fv").fetchone()[0] > 0  # type: ignore[index]
    # Feast: reads the snapshot tables it serves from, nothing else of the application's
    with psycopg.connect(pg.feast_url) as conn:
        assert conn.execute("SELECT count(*) FROM usage_agg_30d_snapshots").fetchone()[0] > 0  # type: ignore[index]
    for table in ("ingestions", "labels_snapshots", "model_performance", "users"):
        assert refused(pg.feast_url, f"SELECT * FROM {table} LIMIT 1") == "InsufficientPrivilege", table
    assert refused(pg.feast_url, "DELETE FROM usage_agg_30d_snapshots") == "InsufficientPrivilege"
    assert refused(pg.feast_url, "COPY (SELECT 1) TO PROGRAM 'true'") == "InsufficientPrivilege"


def test_other_login_roles_cannot_connect(deployment: Deployment) -> None:
    pg = deployment.pg
    with psycopg.connect(pg.superuser_url, autocommit=True) as conn:
        conn.execute("CREATE ROLE stranger LOGIN PASSWORD 'stranger-pw'")
    try:
        for database in ("streamflow", "mlflow"):
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                psycopg.connect(pg.url("stranger", "stranger-pw", database)).close()
    finally:
        with psycopg.connect(pg.superuser_url, autocommit=True) as conn:
            conn.execute("DROP ROLE stranger")
