"""Background processes the demo leaves running (API, Prometheus, Pushgateway) and
`streamflow down`, which stops exactly those (PID files under settings.run_dir, see
:mod:`streamflow.core.processes`)."""

from __future__ import annotations

import logging
import sys

from streamflow.core.processes import ManagedProcess, Program, Supervisor, http_ready, local_address
from streamflow.core.settings import Settings

log = logging.getLogger(__name__)

API_NAME = "api"
# `python -m streamflow serve --home <home> ...`: the home on the command line lets `down`
# recognise the API of this home (and only it).
API_PROGRAM = Program(executables=("python*",), args=("-m", "streamflow", "serve"))
API_READY_TIMEOUT_S = 180.0
API_STOP_TIMEOUT_S = 20.0


def api_argv(settings: Settings, host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamflow",
        "serve",
        "--home",
        str(settings.home),
        "--host",
        host,
        "--port",
        str(port),
    ]


def start_api_background(
    settings: Settings, host: str, port: int, timeout: float = API_READY_TIMEOUT_S
) -> ManagedProcess:
    """Start `streamflow serve` detached (survives the demo) and wait until /ready answers 200;
    the running API of this home if there is one."""
    url = f"http://{local_address(host)}:{port}"
    return Supervisor.for_settings(settings).start(
        API_NAME,
        api_argv(settings, host, port),
        program=API_PROGRAM,
        ready=http_ready(f"{url}/ready"),
        timeout=timeout,
        url=url,
        address=(host, port),
    )


def stop_api(settings: Settings) -> bool:
    return Supervisor.for_settings(settings).stop(API_NAME, API_PROGRAM, timeout=API_STOP_TIMEOUT_S)


def stop_embedded_postgres_if_idle(settings: Settings) -> bool:
    """Stop the embedded server if no process still holds it (after the API stopped)."""
    if settings.database_url or not (settings.pgdata_dir / "postmaster.pid").exists():
        return False
    from streamflow.db.engine import attach_embedded, release_embedded

    attach_embedded(settings)  # attach, then release: the server stops if we were the last user
    release_embedded(settings)
    return not (settings.pgdata_dir / "postmaster.pid").exists()


def stop_everything(settings: Settings) -> list[str]:
    from streamflow.observability.prometheus_local import stop_local_stack

    stopped = []
    if stop_api(settings):
        stopped.append(API_NAME)
    stopped.extend(stop_local_stack(settings))
    if stop_embedded_postgres_if_idle(settings):
        stopped.append("embedded-postgresql")
    return stopped
