"""Native (no Docker) Prometheus + Pushgateway, and a small Prometheus HTTP API client.

* :func:`render_local_config` turns the shipped ``services/prometheus/prometheus.yml`` (written for
  the compose network: ``api:8000``, ``pushgateway:9091``, rules under ``/etc/prometheus/rules``)
  into a native copy: local target addresses and the repository's own rule files (absolute glob).
* :func:`start_prometheus` / :func:`start_pushgateway` launch the Debian/upstream binaries found on
  ``PATH`` in their own session, bound to 127.0.0.1, wait for ``/-/ready`` and write a PID file
  under ``settings.run_dir``; :func:`stop_local_stack` (used by ``streamflow down``) stops exactly
  those processes: a PID is only signalled if its command line is the expected binary *and*
  mentions this ``settings.home`` (guards against PID reuse and foreign processes).
* :class:`PrometheusClient` wraps the HTTP API (query, query_range, targets, alerts, rules).

Repository root: the shipped config, rules and dashboard are repository files, not package data.
:func:`find_repo_root` looks, in order, at ``settings.repo_root`` (if such a setting exists), at the
parents of this file (editable install: ``<repo>/src/streamflow/observability``) and at the current
directory and its parents, for the marker ``services/prometheus/prometheus.yml``. The Docker image
copies ``services/`` into its working directory, so the cwd lookup works there too.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from streamflow.procs import pid_alive
from streamflow.settings import Settings

logger = logging.getLogger(__name__)

SHIPPED_CONFIG = Path("services/prometheus/prometheus.yml")
RULES_DIR = Path("services/prometheus/rules")
DASHBOARD_JSON = Path("services/grafana/provisioning/dashboards/json/streamflow.json")

PROMETHEUS_RETENTION = "15d"
PUSHGATEWAY_PERSISTENCE_INTERVAL = "30s"
READY_TIMEOUT_S = 30.0

PROMETHEUS_BINARIES = ("prometheus",)
PUSHGATEWAY_BINARIES = ("prometheus-pushgateway", "pushgateway")

_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}

# Popen objects of the processes started by *this* Python process, so stopping them reaps them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


# --------------------------------------------------------------------------- repository files
def find_repo_root(settings: Settings | None = None) -> Path:
    """Directory holding ``services/prometheus/prometheus.yml`` (see module docstring)."""
    candidates: list[Path] = []
    configured = settings.repo_root if settings is not None else None
    if configured:
        candidates.append(Path(configured).expanduser().resolve())
    here = Path(__file__).resolve()
    candidates.extend(here.parents)
    cwd = Path.cwd().resolve()
    candidates.extend([cwd, *cwd.parents])
    for candidate in candidates:
        if (candidate / SHIPPED_CONFIG).is_file():
            return candidate
    raise FileNotFoundError(
        f"cannot locate the StreamFlow repository ({SHIPPED_CONFIG} not found above {here} nor {cwd}); "
        "run from the repository or install it in editable mode"
    )


def shipped_config_path(settings: Settings | None = None) -> Path:
    return find_repo_root(settings) / SHIPPED_CONFIG


def rules_dir(settings: Settings | None = None) -> Path:
    return find_repo_root(settings) / RULES_DIR


def dashboard_path(settings: Settings | None = None) -> Path:
    return find_repo_root(settings) / DASHBOARD_JSON


def local_address(host: str) -> str:
    """An address to *connect* to for a server bound to ``host`` (wildcards -> loopback)."""
    return "127.0.0.1" if host.strip() in _WILDCARD_HOSTS else host


# --------------------------------------------------------------------------- native config
def build_local_config(
    settings: Settings,
    *,
    scrape_interval: str | None = None,
    api_target: str | None = None,
    pushgateway_target: str | None = None,
    rules: Path | None = None,
) -> dict[str, Any]:
    """The shipped config with native targets and absolute rule files (as a dict).

    ``scrape_interval`` (e.g. ``"1s"`` in tests) overrides both the scrape and the evaluation
    interval. ``api_target`` defaults to ``settings.api_host:api_port``, ``pushgateway_target`` to
    ``127.0.0.1:9091`` and ``rules`` to the repository's ``services/prometheus/rules``.
    """
    with shipped_config_path(settings).open(encoding="utf-8") as fh:
        shipped = yaml.safe_load(fh)
    config: dict[str, Any] = copy.deepcopy(shipped)
    if scrape_interval:
        glob = config.setdefault("global", {})
        glob["scrape_interval"] = scrape_interval
        glob["evaluation_interval"] = scrape_interval
        glob.pop("scrape_timeout", None)  # defaults to min(10s, scrape_interval)
    targets = {
        "api": api_target or f"{local_address(settings.api_host)}:{settings.api_port}",
        "pushgateway": pushgateway_target or f"127.0.0.1:{settings.pushgateway_port}",
    }
    seen: set[str] = set()
    for job in config.get("scrape_configs", []):
        name = job.get("job_name")
        if name in targets:
            job["static_configs"] = [{"targets": [targets[name]]}]
            seen.add(name)
    missing = set(targets) - seen
    if missing:
        raise ValueError(f"shipped prometheus.yml has no scrape job(s) {sorted(missing)}")
    config["rule_files"] = [str((rules or rules_dir(settings)).resolve() / "*.yml")]
    return config


def render_local_config(
    settings: Settings,
    *,
    scrape_interval: str | None = None,
    api_target: str | None = None,
    pushgateway_target: str | None = None,
    rules: Path | None = None,
    out_path: Path | None = None,
) -> Path:
    """Write :func:`build_local_config` to ``out_path`` (default ``run_dir/prometheus.yml``)."""
    config = build_local_config(
        settings,
        scrape_interval=scrape_interval,
        api_target=api_target,
        pushgateway_target=pushgateway_target,
        rules=rules,
    )
    path = out_path or settings.run_dir / "prometheus.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Generated by streamflow.observability.prometheus_local from services/prometheus/prometheus.yml\n"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- processes
@dataclass(frozen=True)
class ManagedProcess:
    """A background process started by this module (or found running from a PID file)."""

    name: str
    pid: int
    url: str
    pid_file: Path
    log_file: Path


def pid_file(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.pid"


def log_file(settings: Settings, name: str) -> Path:
    return settings.run_dir / f"{name}.log"


def _which(names: Sequence[str]) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    return pid_alive(pid)


def _is_ours(pid: int, binaries: Sequence[str], settings: Settings) -> bool:
    """The PID runs one of ``binaries`` with a flag pointing under ``settings.home``."""
    if not _alive(pid):
        return False
    argv = _cmdline(pid)
    if argv is None:  # no /proc (not Linux): trust the PID file
        return True
    if not argv or Path(argv[0]).name not in binaries:
        return False
    home = str(settings.home)
    return any(home in arg for arg in argv[1:])


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _is_ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _existing(settings: Settings, name: str, binaries: Sequence[str], url: str) -> ManagedProcess | None:
    path = pid_file(settings, name)
    pid = _read_pid(path)
    if pid is not None and _is_ours(pid, binaries, settings) and _is_ready(url):
        return ManagedProcess(name, pid, url, path, log_file(settings, name))
    return None


def _launch(
    settings: Settings,
    name: str,
    argv: list[str],
    url: str,
    port: int,
    ready_timeout: float,
) -> ManagedProcess:
    if not _port_free(port):
        raise RuntimeError(f"cannot start {name}: 127.0.0.1:{port} is already in use by another process")
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_file(settings, name)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the CLI that started it; not killed by its Ctrl-C
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    path = pid_file(settings, name)
    path.write_text(f"{proc.pid}\n")
    managed = ManagedProcess(name, proc.pid, url, path, log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _forget(managed)
            raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{_tail(log_path)}")
        if _is_ready(url):
            logger.info("%s ready at %s (pid %d, log %s)", name, url, proc.pid, log_path)
            return managed
        time.sleep(0.1)
    stop_process(managed)
    raise TimeoutError(f"{name} not ready at {url}/-/ready after {ready_timeout:.0f}s:\n{_tail(log_path)}")


def _forget(managed: ManagedProcess) -> None:
    child = _CHILDREN.pop(managed.pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=0)
    if _read_pid(managed.pid_file) == managed.pid:
        managed.pid_file.unlink(missing_ok=True)


def start_prometheus(
    settings: Settings,
    *,
    port: int | None = None,
    config_path: Path | None = None,
    scrape_interval: str | None = None,
    api_target: str | None = None,
    pushgateway_target: str | None = None,
    rules: Path | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
) -> ManagedProcess | None:
    """Start ``prometheus`` on 127.0.0.1 (``port`` or settings.prometheus_port); None if absent.

    Storage lives in ``settings.home/prometheus``; ``--web.enable-lifecycle`` allows
    ``POST /-/reload``. Without ``config_path`` a native config is rendered first (see
    :func:`render_local_config`). Idempotent: returns the running instance of this home if ready.
    """
    binary = _which(PROMETHEUS_BINARIES)
    if binary is None:
        logger.warning(
            "prometheus binary not found on PATH: native Prometheus not started "
            "(Debian/Ubuntu: `apt-get install prometheus`, or use docker compose)"
        )
        return None
    port = port or settings.prometheus_port
    url = f"http://127.0.0.1:{port}"
    running = _existing(settings, "prometheus", PROMETHEUS_BINARIES, url)
    if running is not None:
        return running
    config = config_path or render_local_config(
        settings,
        scrape_interval=scrape_interval,
        api_target=api_target,
        pushgateway_target=pushgateway_target,
        rules=rules,
    )
    storage = settings.home / "prometheus"
    storage.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={storage}",
        f"--storage.tsdb.retention.time={PROMETHEUS_RETENTION}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
    ]
    return _launch(settings, "prometheus", argv, url, port, ready_timeout)


def start_pushgateway(
    settings: Settings,
    *,
    port: int | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
) -> ManagedProcess | None:
    """Start ``prometheus-pushgateway`` (or ``pushgateway``) on 127.0.0.1:``port``; None if absent.

    Pushed metrics are persisted to ``settings.home/pushgateway/metrics.store`` so drift metrics
    survive a restart.
    """
    port = port or settings.pushgateway_port
    binary = _which(PUSHGATEWAY_BINARIES)
    if binary is None:
        logger.warning(
            "pushgateway binary not found on PATH (tried %s): not started "
            "(Debian/Ubuntu: `apt-get install prometheus-pushgateway`)",
            ", ".join(PUSHGATEWAY_BINARIES),
        )
        return None
    url = f"http://127.0.0.1:{port}"
    running = _existing(settings, "pushgateway", PUSHGATEWAY_BINARIES, url)
    if running is not None:
        return running
    store = settings.home / "pushgateway"
    store.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        f"--web.listen-address=127.0.0.1:{port}",
        f"--persistence.file={store / 'metrics.store'}",
        f"--persistence.interval={PUSHGATEWAY_PERSISTENCE_INTERVAL}",
    ]
    return _launch(settings, "pushgateway", argv, url, port, ready_timeout)


def stop_process(managed: ManagedProcess, timeout: float = 10.0) -> bool:
    """SIGTERM (then SIGKILL after ``timeout``) one process; True if it was running."""
    pid = managed.pid
    if not _alive(pid):
        _forget(managed)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        logger.warning("%s (pid %d) ignored SIGTERM, killing it", managed.name, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)
    _forget(managed)
    return True


def stop_managed(settings: Settings, name: str, timeout: float = 10.0) -> bool:
    """Stop the process recorded in ``run_dir/<name>.pid`` if it is ours; remove the PID file."""
    binaries = {"prometheus": PROMETHEUS_BINARIES, "pushgateway": PUSHGATEWAY_BINARIES}.get(name)
    if binaries is None:
        raise ValueError(f"unknown managed process {name!r}")
    path = pid_file(settings, name)
    pid = _read_pid(path)
    if pid is None:
        path.unlink(missing_ok=True)
        return False
    if not _is_ours(pid, binaries, settings):
        logger.info("stale PID file %s (pid %d is not our %s): removed", path, pid, name)
        path.unlink(missing_ok=True)
        return False
    managed = ManagedProcess(name, pid, "", path, log_file(settings, name))
    return stop_process(managed, timeout=timeout)


def stop_local_stack(settings: Settings) -> list[str]:
    """Stop the native Prometheus and Pushgateway of this home; names of those stopped."""
    return [name for name in ("prometheus", "pushgateway") if stop_managed(settings, name)]


# --------------------------------------------------------------------------- HTTP API client
class PrometheusError(RuntimeError):
    """The Prometheus HTTP API answered with an error (bad query, unreachable, ...)."""


Timestamp = float | datetime


def _ts(value: Timestamp) -> str:
    return f"{value.timestamp() if isinstance(value, datetime) else float(value):.3f}"


class PrometheusClient:
    """Minimal synchronous client of the Prometheus HTTP API v1."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings, timeout: float = 10.0) -> PrometheusClient:
        return cls(settings.resolved_prometheus_url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- plumbing
    def _call(self, method: str, path: str, params: Mapping[str, str] | None = None) -> Any:
        try:
            if method == "POST":
                response = self._http.post(path, data=dict(params or {}))
            else:
                response = self._http.get(path, params=dict(params or {}))
        except httpx.HTTPError as exc:
            raise PrometheusError(f"{method} {self.base_url}{path}: {exc}") from exc
        try:
            body = response.json()
        except ValueError as exc:
            raise PrometheusError(f"{method} {path}: HTTP {response.status_code}: {response.text[:200]}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{path}: {body.get('errorType', 'error')}: {body.get('error', body)}")
        return body.get("data")

    # -- endpoints
    def ready(self) -> bool:
        try:
            return self._http.get("/-/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, expr: str, at: Timestamp | None = None) -> list[dict[str, Any]]:
        """Instant query; result entries are ``{"metric": {...}, "value": [ts, "v"]}``."""
        params = {"query": expr}
        if at is not None:
            params["time"] = _ts(at)
        data = self._call("POST", "/api/v1/query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_range(self, expr: str, start: Timestamp, end: Timestamp, step: float) -> list[dict[str, Any]]:
        """Range query; result entries are ``{"metric": {...}, "values": [[ts, "v"], ...]}``."""
        params = {"query": expr, "start": _ts(start), "end": _ts(end), "step": f"{max(step, 0.001):g}"}
        return list(self._call("POST", "/api/v1/query_range", params)["result"])

    def targets(self, state: str = "active") -> list[dict[str, Any]]:
        """Scrape targets (``state``: active, dropped or any); active ones carry ``health``."""
        data = self._call("GET", "/api/v1/targets", {"state": state})
        return [*data.get("activeTargets", []), *data.get("droppedTargets", [])]

    def alerts(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/v1/alerts")["alerts"])

    def rules(self, rule_type: str | None = None) -> list[dict[str, Any]]:
        """Rule groups (``rule_type`` ``"alert"`` or ``"record"`` filters)."""
        params = {"type": rule_type} if rule_type else None
        return list(self._call("GET", "/api/v1/rules", params)["groups"])

    def alert_rules(self) -> Iterator[dict[str, Any]]:
        for group in self.rules("alert"):
            yield from group.get("rules", [])

    def reload(self) -> None:
        """``POST /-/reload`` (needs ``--web.enable-lifecycle``)."""
        try:
            response = self._http.post("/-/reload")
        except httpx.HTTPError as exc:
            raise PrometheusError(f"reload: {exc}") from exc
        if response.status_code != 200:
            raise PrometheusError(f"reload: HTTP {response.status_code}: {response.text[:200]}")
