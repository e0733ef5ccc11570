"""``streamflow serve``: uvicorn (uvloop + httptools, no access log) over ``create_app``.

With ``workers > 1`` uvicorn spawns worker processes that build the app from
:func:`app_from_env`; the settings travel in an environment variable and the Prometheus
multiprocess directory is created fresh under ``settings.home/run/prom_multiproc``
before any worker starts.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fastapi import FastAPI

from streamflow.serving.metrics import MULTIPROC_ENV, prepare_multiprocess_dir
from streamflow.settings import Settings

log = logging.getLogger(__name__)

SETTINGS_ENV = "STREAMFLOW_SERVE_SETTINGS_JSON"


def multiproc_dir(settings: Settings) -> Path:
    return settings.run_dir / "prom_multiproc"


def app_from_env() -> FastAPI:
    """Factory run inside each uvicorn worker process."""
    from streamflow.logging_setup import setup_logging
    from streamflow.serving.app import create_app

    raw = os.environ.get(SETTINGS_ENV)
    settings = Settings.model_validate_json(raw) if raw else Settings()
    setup_logging(settings.log_level)
    return create_app(settings, release_database_on_shutdown=True)


def run_server(settings: Settings, host: str | None = None, port: int | None = None, workers: int = 1) -> None:
    """Serve the API until interrupted (blocking)."""
    import uvicorn

    from streamflow.logging_setup import setup_logging

    setup_logging(settings.log_level)
    host = host or settings.api_host
    port = port or settings.api_port
    workers = max(1, int(workers))
    common = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "access_log": False,  # requests are counted and timed in Prometheus instead
        "proxy_headers": False,  # bound to loopback by default; nothing to trust
        "log_config": None,  # keep our key=value logging
        "timeout_graceful_shutdown": 10,
    }
    log.info("event=api_serve host=%s port=%d workers=%d home=%s", host, port, workers, settings.home)
    if workers == 1:
        os.environ.pop(MULTIPROC_ENV, None)
        from streamflow.serving.app import create_app

        uvicorn.run(create_app(settings, release_database_on_shutdown=True), **common)  # type: ignore[arg-type]
        return
    path = prepare_multiprocess_dir(multiproc_dir(settings))
    log.info("event=metrics_multiprocess dir=%s", path)
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    uvicorn.run(
        "streamflow.serving.server:app_from_env",
        factory=True,
        workers=workers,
        **common,  # type: ignore[arg-type]
    )
