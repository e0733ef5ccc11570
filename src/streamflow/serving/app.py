"""The prediction API: ``create_app(settings) -> FastAPI``.

Per ``POST /predict``: validate the body (pydantic, from the raw bytes), one dict lookup
in the feature mirror, one onnxruntime call on one thread, a response assembled from
pre-encoded JSON, and one row appended to the prediction log's buffer (``service.py``,
``prediction_log.py``). Route handlers live in ``routes/`` and read the components from
``app.state``; with ``fast_path=True`` (default) the two prediction routes are served by plain
ASGI handlers with identical behaviour (``asgi.py``). ``/admin/reload`` exists only when an
admin token is set. ``/docs`` (Swagger UI) serves its JavaScript and CSS from the installed
``fastapi-offline`` package: it works without internet access. There is no ``/redoc``:
ReDoc's bundle loads its logo from a CDN.

Shutdown (SIGTERM) is bounded: uvicorn waits ``api_graceful_shutdown_seconds`` for requests in
progress, then the lifespan flushes the prediction log (at most
``prediction_log_shutdown_seconds``) while the background polls stop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from streamflow.core.settings import Settings
from streamflow.serving.asgi import MetricsMiddleware, accelerate
from streamflow.serving.features import OnlineFeatures, online_features
from streamflow.serving.limits import ShedMiddleware
from streamflow.serving.metrics import ApiMetrics, mark_this_process_dead, reap_dead_workers
from streamflow.serving.model_holder import ModelHolder
from streamflow.serving.prediction_log import PredictionLog
from streamflow.serving.routes import admin, ops, predict
from streamflow.serving.service import PredictionService

log = logging.getLogger(__name__)

DOCS_ASSETS_URL = "/static-offline-docs"  # Swagger UI JavaScript, CSS and favicon


async def unhandled_error(request: Request, exc: Exception) -> JSONResponse:
    """Any unexpected error: logged with its traceback, answered without it."""
    log.error("event=unhandled_error method=%s path=%s error=%r", request.method, request.url.path, exc, exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def _stop_within(stops: list[Callable[[], None]], seconds: float) -> None:
    """Run the ``stops`` in parallel, waiting at most ``seconds`` for them (the threads they
    may be joining are daemons: what does not finish in time does not hold the exit up)."""
    threads = [threading.Thread(target=stop, name="shutdown", daemon=True) for stop in stops]
    for t in threads:
        t.start()
    deadline = time.monotonic() + seconds
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


def _lifespan(settings: Settings, start_background: bool, release_database_on_shutdown: bool):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder: ModelHolder = app.state.holder
        mirror: OnlineFeatures = app.state.mirror
        metrics: ApiMetrics = app.state.metrics
        prediction_log: PredictionLog | None = app.state.service.log
        if metrics.multiprocess:
            reap_dead_workers()
        if start_background:
            holder.start()
            mirror.start()
            if prediction_log is not None:
                prediction_log.start()  # in the worker process: each worker has its own buffer and connection
        log.info(
            "event=api_started pid=%d model=%s alias=%s model_poll_seconds=%s feature_poll_seconds=%s "
            "online_store=%s online_lookup=%s multiprocess=%s prediction_log=%s admin=%s",
            os.getpid(),
            settings.model_name,
            settings.model_alias,
            settings.model_poll_seconds,
            settings.feature_poll_seconds,
            settings.online_store,
            mirror.mode,
            metrics.multiprocess,
            "on" if prediction_log is not None else "off",
            "on" if settings.admin_token is not None else "off",
        )
        try:
            yield
        finally:
            stops: list[Callable[[], None]] = []
            if start_background:
                stops += [holder.stop, mirror.stop]
                if prediction_log is not None:
                    stops.append(prediction_log.stop)
            _stop_within(stops, settings.prediction_log_shutdown_seconds + 0.5)
            mark_this_process_dead()
            if release_database_on_shutdown:
                from streamflow.db.engine import release_embedded

                release_embedded(settings)
            log.info("event=api_stopped pid=%d", os.getpid())

    return lifespan


def create_app(
    settings: Settings,
    *,
    holder: ModelHolder | None = None,
    mirror: OnlineFeatures | None = None,
    metrics: ApiMetrics | None = None,
    start_background: bool = True,
    fast_path: bool = True,
    release_database_on_shutdown: bool = False,
) -> FastAPI:
    """The API. Components may be passed in (tests); background polls and the prediction log's
    writer start with the app's lifespan unless ``start_background`` is False (the log then
    only buffers). ``release_database_on_shutdown`` (set by the server process) lets go of the
    embedded PostgreSQL at shutdown: uvicorn re-raises SIGTERM after a graceful shutdown,
    which skips atexit handlers."""
    metrics = metrics or (holder.metrics if holder is not None else ApiMetrics())
    holder = holder or ModelHolder(settings, metrics)
    mirror = mirror or online_features(settings, metrics)
    prediction_log = PredictionLog(settings, metrics) if settings.prediction_log_enabled else None

    app = FastAPIOffline(
        title="StreamFlow churn prediction API",
        version="1.0",
        description=(
            "Churn predictions for StreamFlow subscribers from the Feast online store (latest "
            f"materialized month) and the `{settings.model_alias}` alias of `{settings.model_name}`."
        ),
        lifespan=_lifespan(settings, start_background, release_database_on_shutdown),
        static_url=DOCS_ASSETS_URL,
        redoc_url=None,
        # Metrics go to Prometheus; FastAPI's native OpenTelemetry hooks would only add
        # per-request provider checks to the hot path.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.service = PredictionService(metrics, holder, mirror, prediction_log)
    app.state.holder = holder
    app.state.mirror = mirror
    app.state.metrics = metrics
    app.add_exception_handler(Exception, unhandled_error)
    routers = [predict.router, ops.router]
    gate: admin.AdminGate | None = None
    if settings.admin_token is not None:  # otherwise the endpoint does not exist (404)
        gate = admin.AdminGate(settings.admin_token.get_secret_value(), settings.admin_reload_cooldown_seconds)
        app.state.admin = gate
        routers.append(admin.router)
    for router in routers:
        app.include_router(router)
    if fast_path:
        for endpoint, declared in reversed(predict.ACCELERATED):  # /predict ends up first
            accelerate(app, endpoint, declared)
    # Plain paths → their route, for the metrics label of answers given before routing (shed,
    # refused). (FastAPI keeps included routers as such: their routes are read from the routers.)
    routes: dict[str, Any] = {}
    for r in [*app.router.routes, *(r for router in routers for r in router.routes)]:
        path = getattr(r, "path", None)  # a Route / Mount / WebSocketRoute has one, a BaseRoute need not
        if isinstance(path, str):
            routes.setdefault(path, r)
    # Added last = outermost: the metrics see every answer, the shed and refused ones included.
    if gate is not None:
        app.add_middleware(admin.AdminGuard, gate=gate, route=routes[admin.PATH])
    app.add_middleware(ShedMiddleware, metrics=metrics, routes=routes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
