"""``streamflow serve``: uvicorn (uvloop + httptools, no access log) over ``create_app``.

With ``workers > 1`` uvicorn spawns worker processes that build the app from
:func:`app_from_env`; the settings travel in an environment variable (secrets included: a
worker must know the admin token) and the Prometheus multiprocess directory is created fresh
under ``settings.home/run/prom_multiproc`` before any worker starts. Each worker has its own
prediction-log buffer, writer connection and request-id prefix.

Overload: uvicorn's ``limit_concurrency`` (``api_limit_concurrency``) and the per-client limit
(``api_max_requests_per_client``) are applied by the HTTP protocol of ``serving/limits.py``.
Shutdown: ``timeout_graceful_shutdown`` is ``api_graceful_shutdown_seconds``; with the
prediction log's final flush (``prediction_log_shutdown_seconds``) the process exits within
Docker's 10 s grace.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from streamflow.core.settings import Settings, settings_json
from streamflow.serving.metrics import MULTIPROC_ENV, prepare_multiprocess_dir

log = logging.getLogger(__name__)

SETTINGS_ENV = "STREAMFLOW_SERVE_SETTINGS_JSON"


def multiproc_dir(settings: Settings) -> Path:
    return settings.run_dir / "prom_multiproc"


def app_from_env() -> FastAPI:
    """Factory run inside each uvicorn worker process."""
    from streamflow.core.logging_setup import setup_logging
    from streamflow.serving.app import create_app
    from streamflow.serving.limits import configure

    raw = os.environ.get(SETTINGS_ENV)
    settings = Settings.model_validate_json(raw) if raw else Settings()
    setup_logging(settings.log_level)
    configure(settings)
    return create_app(settings, release_database_on_shutdown=True)


def uvicorn_options(settings: Settings, host: str, port: int) -> dict[str, Any]:
    """uvicorn's options for ``settings`` (also used by tests that run a server in a thread)."""
    from streamflow.serving.limits import GuardedHttpToolsProtocol

    return {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": GuardedHttpToolsProtocol,  # httptools + the overload limits
        "access_log": False,  # requests are counted and timed in Prometheus instead
        "proxy_headers": False,  # bound to loopback by default; nothing to trust
        "log_config": None,  # keep our key=value logging
        "limit_concurrency": settings.api_limit_concurrency,
        "timeout_graceful_shutdown": settings.api_graceful_shutdown_seconds,
    }


def run_server(settings: Settings, host: str | None = None, port: int | None = None, workers: int = 1) -> None:
    """Serve the API until interrupted (blocking)."""
    import uvicorn

    from streamflow.core.logging_setup import setup_logging
    from streamflow.serving.limits import configure

    setup_logging(settings.log_level)
    host = host or settings.api_host
    port = port or settings.api_port
    workers = max(1, int(workers))
    options = uvicorn_options(settings, host, port)
    log.info(
        "event=api_serve host=%s port=%d workers=%d home=%s limit_concurrency=%s max_requests_per_client=%s "
        "graceful_shutdown_seconds=%s",
        host,
        port,
        workers,
        settings.home,
        settings.api_limit_concurrency,
        settings.api_max_requests_per_client,
        settings.api_graceful_shutdown_seconds,
    )
    if workers == 1:
        os.environ.pop(MULTIPROC_ENV, None)
        from streamflow.serving.app import create_app

        configure(settings)
        uvicorn.run(create_app(settings, release_database_on_shutdown=True), **options)
        return
    path = prepare_multiprocess_dir(multiproc_dir(settings))
    log.info("event=metrics_multiprocess dir=%s", path)
    os.environ[SETTINGS_ENV] = settings_json(settings)
    uvicorn.run("streamflow.serving.server:app_from_env", factory=True, workers=workers, **options)
