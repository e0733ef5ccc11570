"""Background processes the demo leaves running (API, Prometheus, Pushgateway) and
`streamflow down`, which stops exactly those (PID files under settings.run_dir)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from streamflow.procs import pid_alive
from streamflow.settings import Settings

log = logging.getLogger(__name__)


def _pid_path(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.pid"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def running_api_pid(settings: Settings) -> int | None:
    path = _pid_path(settings, "api")
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    if pid_alive(pid) and "streamflow" in _cmdline(pid) and "serve" in _cmdline(pid):
        return pid
    path.unlink(missing_ok=True)
    return None


def wait_ready(url: str, timeout: float, pid: int | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid is not None and not pid_alive(pid):
            return False
        try:
            if httpx.get(f"{url}/ready", timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def start_api_background(settings: Settings, host: str, port: int, timeout: float = 180.0) -> int:
    """Start `streamflow serve` detached (survives the demo), wait until /ready."""
    existing = running_api_pid(settings)
    url = f"http://{host}:{port}"
    if existing is not None:
        log.info("event=api_already_running pid=%d url=%s", existing, url)
        return existing
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.run_dir / "api.log"
    env = dict(os.environ, STREAMFLOW_HOME=str(settings.home))
    with log_path.open("ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamflow", "serve", "--host", host, "--port", str(port)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    _pid_path(settings, "api").write_text(str(proc.pid))
    if not wait_ready(url, timeout, proc.pid):
        stop_pid(proc.pid)
        _pid_path(settings, "api").unlink(missing_ok=True)
        tail = log_path.read_text(errors="replace").splitlines()[-20:]
        raise RuntimeError(f"API did not become ready at {url}; last log lines:\n" + "\n".join(tail))
    log.info("event=api_started pid=%d url=%s log=%s", proc.pid, url, log_path)
    return proc.pid


def stop_pid(pid: int, timeout: float = 20.0) -> bool:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return False


def stop_api(settings: Settings) -> bool:
    pid = running_api_pid(settings)
    if pid is None:
        return False
    stop_pid(pid)
    _pid_path(settings, "api").unlink(missing_ok=True)
    log.info("event=api_stopped pid=%d", pid)
    return True


def stop_embedded_postgres_if_idle(settings: Settings) -> bool:
    """Stop the embedded server if no process still holds it (after the API stopped)."""
    if settings.database_url or not (settings.pgdata_dir / "postmaster.pid").exists():
        return False
    from streamflow.db.engine import _start_embedded, stop_embedded

    _start_embedded(settings)  # attach, then release: the server stops if we were the last user
    stop_embedded(settings)
    return not (settings.pgdata_dir / "postmaster.pid").exists()


def stop_everything(settings: Settings) -> list[str]:
    stopped = []
    if stop_api(settings):
        stopped.append("api")
    from streamflow.observability.prometheus_local import stop_local_stack

    stopped.extend(stop_local_stack(settings))
    if stop_embedded_postgres_if_idle(settings):
        stopped.append("embedded-postgresql")
    return stopped
