"""The prediction API: ``create_app(settings) -> FastAPI``.

Per ``POST /predict``: validate the body (pydantic, from the raw bytes), one dict lookup
in the feature mirror, one onnxruntime call on one thread, and a response assembled
from the pre-encoded ``features_used`` JSON of that user (``service.py``). Route handlers
live in ``routes/`` and read the components from ``app.state``; with ``fast_path=True``
(default) the two prediction routes are served by plain ASGI handlers with identical
behaviour (``asgi.py``). ``/docs`` (Swagger UI) serves its JavaScript and CSS from the
installed ``fastapi-offline`` package: it works without internet access. There is no
``/redoc``: ReDoc's bundle loads its logo from a CDN.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from streamflow.serving.asgi import MetricsMiddleware, accelerate
from streamflow.serving.features import OnlineFeatures, online_features
from streamflow.serving.metrics import ApiMetrics, mark_this_process_dead, reap_dead_workers
from streamflow.serving.model_holder import ModelHolder
from streamflow.serving.routes import admin, ops, predict
from streamflow.serving.service import PredictionService
from streamflow.settings import Settings

log = logging.getLogger(__name__)

DOCS_ASSETS_URL = "/static-offline-docs"  # Swagger UI JavaScript, CSS and favicon


async def unhandled_error(request: Request, exc: Exception) -> JSONResponse:
    """Any unexpected error: logged with its traceback, answered without it."""
    log.error("event=unhandled_error method=%s path=%s error=%r", request.method, request.url.path, exc, exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def _lifespan(settings: Settings, start_background: bool, release_database_on_shutdown: bool):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder: ModelHolder = app.state.holder
        mirror: OnlineFeatures = app.state.mirror
        metrics: ApiMetrics = app.state.metrics
        if metrics.multiprocess:
            reap_dead_workers()
        if start_background:
            holder.start()
            mirror.start()
        log.info(
            "event=api_started pid=%d model=%s alias=%s model_poll_seconds=%s feature_poll_seconds=%s "
            "online_store=%s online_lookup=%s multiprocess=%s",
            os.getpid(),
            settings.model_name,
            settings.model_alias,
            settings.model_poll_seconds,
            settings.feature_poll_seconds,
            settings.online_store,
            mirror.mode,
            metrics.multiprocess,
        )
        try:
            yield
        finally:
            if start_background:
                holder.stop()
                mirror.stop()
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
    """The API. Components may be passed in (tests); background polls start with the
    app's lifespan unless ``start_background`` is False. ``release_database_on_shutdown``
    (set by the server process) lets go of the embedded PostgreSQL at shutdown: uvicorn
    re-raises SIGTERM after a graceful shutdown, which skips atexit handlers."""
    metrics = metrics or (holder.metrics if holder is not None else ApiMetrics())
    holder = holder or ModelHolder(settings, metrics)
    mirror = mirror or online_features(settings, metrics)

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
    app.state.service = PredictionService(metrics, holder, mirror)
    app.state.holder = holder
    app.state.mirror = mirror
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_exception_handler(Exception, unhandled_error)
    for module in (predict, ops, admin):
        app.include_router(module.router)
    if fast_path:
        for endpoint, declared in reversed(predict.ACCELERATED):  # /predict ends up first
            accelerate(app, endpoint, declared)
    return app
