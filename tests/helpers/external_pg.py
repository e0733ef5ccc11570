"""A real, separate PostgreSQL server for tests of the "external database" deployment: Debian's
PostgreSQL 15 (``/usr/lib/postgresql/15/bin``; CI installs ``postgresql-15``), a temporary cluster
with SCRAM authentication listening on 127.0.0.1:<free port>, prepared exactly as the compose
``postgres`` service prepares its volume: the database ``POSTGRES_DB`` created by the superuser,
then ``services/postgres/10-streamflow-roles.sh`` run as the superuser. Always stopped.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from streamflow.db.embedded import Account, _allow_traverse, server_account
from tests.helpers.course import REPO_ROOT
from tests.helpers.net import free_port

PG_BIN = Path(os.environ.get("STREAMFLOW_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
ROLES_SCRIPT = REPO_ROOT / "services" / "postgres" / "10-streamflow-roles.sh"
SUPERUSER = "postgres"
DATABASE = "streamflow"


def available() -> bool:
    return (PG_BIN / "initdb").is_file() and (PG_BIN / "psql").is_file()


@dataclass
class ExternalPostgres:
    datadir: Path
    port: int
    superuser_password: str
    account: Account
    passwords: dict[str, str] = field(default_factory=dict)

    def url(self, user: str, password: str, database: str = DATABASE) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    @property
    def superuser_url(self) -> str:
        return self.url(SUPERUSER, self.superuser_password)

    def run(self, program: str, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(PG_BIN / program), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
            **self.account.run_kwargs(),
            **kwargs,  # type: ignore[arg-type]
        )

    def roles_env(self, **overrides: str) -> dict[str, str]:
        """The compose ``postgres`` service's environment, for the roles script."""
        env = {
            "PATH": f"{PG_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGPASSWORD": self.superuser_password,
            "POSTGRES_USER": SUPERUSER,
            "POSTGRES_DB": DATABASE,
            "APP_DB_USER": "streamflow_app",
            "APP_DB_PASSWORD": self.passwords["app"],
            "FEAST_DB_USER": "streamflow_feast",
            "FEAST_DB_PASSWORD": self.passwords["feast"],
            "MLFLOW_DB_USER": "streamflow_mlflow",
            "MLFLOW_DB_PASSWORD": self.passwords["mlflow"],
            "MLFLOW_DB": "mlflow",
        }
        env.update(overrides)
        return env

    def run_roles_script(self, **overrides: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(ROLES_SCRIPT)], env=self.roles_env(**overrides), capture_output=True, text=True, timeout=120
        )

    @property
    def app_url(self) -> str:
        return self.url("streamflow_app", self.passwords["app"])

    @property
    def feast_url(self) -> str:
        return self.url("streamflow_feast", self.passwords["feast"])


@contextmanager
def external_postgres(tmp: Path) -> Iterator[ExternalPostgres]:
    """Start the server (initdb, createdb, nothing else: the caller runs the roles script)."""
    account = server_account()
    datadir = tmp / "pg15"
    datadir.mkdir(mode=0o700)
    account.chown(datadir)
    if account.is_other:
        _allow_traverse(datadir, account)
    server = ExternalPostgres(
        datadir=datadir,
        port=free_port(),
        superuser_password=secrets.token_hex(16),
        account=account,
        passwords={k: secrets.token_hex(16) for k in ("app", "feast", "mlflow")},
    )
    pwfile = tmp / "pg15-pw"
    pwfile.write_text(server.superuser_password + "\n")
    os.chmod(pwfile, 0o600)
    account.chown(pwfile)
    server.run("initdb", "-U", SUPERUSER, "--auth=scram-sha-256", f"--pwfile={pwfile}", "-D", str(datadir))
    pwfile.unlink()
    options = f"-p {server.port} -k {datadir} -c listen_addresses=127.0.0.1"
    server.run("pg_ctl", "-w", "-D", str(datadir), "-l", str(datadir / "server.log"), "-o", options, "start")
    try:
        env = {**os.environ, "PGPASSWORD": server.superuser_password}
        subprocess.run(
            [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(server.port), "-U", SUPERUSER, DATABASE],
            env=env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield server
    finally:
        try:
            server.run("pg_ctl", "-w", "-D", str(datadir), "-m", "fast", "stop")
        except subprocess.CalledProcessError:
            time.sleep(1)
        shutil.rmtree(datadir, ignore_errors=True)
