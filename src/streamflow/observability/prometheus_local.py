"""Native (no Docker) Prometheus and Pushgateway, run by the process supervisor.

:func:`start_prometheus` / :func:`start_pushgateway` launch the Debian/upstream binaries found on
``PATH``, bound to 127.0.0.1, with their state under ``settings.home``; they wait for
``/-/ready`` and return the running instance when already started (see
:class:`streamflow.core.processes.Supervisor`). Prometheus runs *without* ``--web.enable-lifecycle``:
nothing on the machine can stop or reload it over HTTP. :func:`stop_local_stack` (used by
``streamflow down``) stops exactly those processes of this home.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

from streamflow.core.processes import ManagedProcess, Program, Supervisor, http_ready
from streamflow.core.settings import Settings
from streamflow.observability.prometheus_config import default_config_path, render_local_config

logger = logging.getLogger(__name__)

PROMETHEUS_RETENTION = "15d"
PUSHGATEWAY_PERSISTENCE_INTERVAL = "30s"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

PROMETHEUS = Program(executables=("prometheus",))
PUSHGATEWAY = Program(executables=("prometheus-pushgateway", "pushgateway"))


def _which(names: Sequence[str]) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


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

    Storage lives in ``settings.home/prometheus``. Without ``config_path`` a native config is
    rendered to ``run_dir/prometheus.yml`` when a process is really launched (see
    :func:`render_local_config`). Idempotent: returns the running instance of this home.
    """
    binary = _which(PROMETHEUS.executables)
    if binary is None:
        logger.warning(
            "prometheus binary not found on PATH: native Prometheus not started "
            "(Debian/Ubuntu: `apt-get install prometheus`, or use docker compose)"
        )
        return None
    port = port or settings.prometheus_port
    url = f"http://127.0.0.1:{port}"
    config = config_path or default_config_path(settings)
    storage = settings.home / "prometheus"

    def prepare() -> None:
        storage.mkdir(parents=True, exist_ok=True)
        if config_path is None:
            render_local_config(
                settings,
                scrape_interval=scrape_interval,
                api_target=api_target,
                pushgateway_target=pushgateway_target,
                rules=rules,
                out_path=config,
            )

    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={storage}",
        f"--storage.tsdb.retention.time={PROMETHEUS_RETENTION}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    return Supervisor.for_settings(settings).start(
        "prometheus",
        argv,
        program=PROMETHEUS,
        ready=http_ready(f"{url}/-/ready", timeout=1.0),
        timeout=ready_timeout,
        url=url,
        address=("127.0.0.1", port),
        prepare=prepare,
    )


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
    binary = _which(PUSHGATEWAY.executables)
    if binary is None:
        logger.warning(
            "pushgateway binary not found on PATH (tried %s): not started "
            "(Debian/Ubuntu: `apt-get install prometheus-pushgateway`)",
            ", ".join(PUSHGATEWAY.executables),
        )
        return None
    port = port or settings.pushgateway_port
    url = f"http://127.0.0.1:{port}"
    store = settings.home / "pushgateway"
    argv = [
        binary,
        f"--web.listen-address=127.0.0.1:{port}",
        f"--persistence.file={store / 'metrics.store'}",
        f"--persistence.interval={PUSHGATEWAY_PERSISTENCE_INTERVAL}",
    ]
    return Supervisor.for_settings(settings).start(
        "pushgateway",
        argv,
        program=PUSHGATEWAY,
        ready=http_ready(f"{url}/-/ready", timeout=1.0),
        timeout=ready_timeout,
        url=url,
        address=("127.0.0.1", port),
        prepare=lambda: store.mkdir(parents=True, exist_ok=True),
    )


def stop_local_stack(settings: Settings) -> list[str]:
    """Stop the native Prometheus and Pushgateway of this home; names of those stopped."""
    supervisor = Supervisor.for_settings(settings)
    return [
        name
        for name, program in (("prometheus", PROMETHEUS), ("pushgateway", PUSHGATEWAY))
        if supervisor.stop(name, program, timeout=STOP_TIMEOUT_S)
    ]
