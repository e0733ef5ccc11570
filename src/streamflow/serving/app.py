"""The prediction API: ``create_app(settings) -> FastAPI``.

Per ``POST /predict``: validate the body (pydantic, from the raw bytes), one dict lookup
in the feature mirror, one onnxruntime call on one thread, and a response assembled
from the pre-encoded ``features_used`` JSON of that user. The declared FastAPI endpoint
gives the OpenAPI schema; with ``fast_path=True`` (default) its route is served by a
plain ASGI handler with identical behaviour that skips FastAPI's dependency and
response-model machinery (the difference is measured in benchmarks/README.md).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamflow.serving.features import FeatureMirror
from streamflow.serving.metrics import OTHER, ApiMetrics, mark_this_process_dead, reap_dead_workers
from streamflow.serving.model_holder import LoadedModel, ModelHolder
from streamflow.serving.schemas import (
    BatchPredictRequest,
    BatchPredictResponse,
    ErrorResponse,
    HealthResponse,
    ModelResponse,
    PredictRequest,
    PredictResponse,
    ReadyResponse,
)
from streamflow.settings import Settings

log = logging.getLogger(__name__)

JSON = b"application/json"
MAX_BODY_PREDICT = 16 * 1024
MAX_BODY_BATCH = 256 * 1024
RETRY_AFTER_SECONDS = "2"
MAX_ECHO = 200  # characters of an invalid input echoed back in a 422


class ServiceUnavailable(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _error(detail: str, user_id: str | None = None) -> bytes:
    body: dict[str, str] = {"detail": detail}
    if user_id is not None:
        body["user_id"] = user_id
    return json.dumps(body).encode()


def _validation_error(exc: ValidationError) -> RequestValidationError:
    errors: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False):
        e: dict[str, Any] = dict(err)
        e["loc"] = ("body", *e.get("loc", ()))
        if "ctx" in e:  # may hold exception objects: keep it JSON-safe
            e["ctx"] = {k: str(v) for k, v in e["ctx"].items()}
        raw = e.get("input")
        if isinstance(raw, bytes | bytearray):  # invalid JSON / UTF-8: echo it safely
            raw = bytes(raw).decode("utf-8", "replace")
        if isinstance(raw, str) and len(raw) > MAX_ECHO:
            raw = raw[:MAX_ECHO] + "…"
        e["input"] = raw
        errors.append(e)
    return RequestValidationError(errors)


class PredictionService:
    """The work behind /predict and /predict/batch, shared by both code paths."""

    def __init__(self, metrics: ApiMetrics, holder: ModelHolder, mirror: FeatureMirror) -> None:
        self.metrics = metrics
        self.holder = holder
        self.mirror = mirror

    def _ready_model(self) -> LoadedModel:
        model = self.holder.current
        if model is None:
            raise ServiceUnavailable(f"model unavailable: {self.holder.last_error or 'loading'}")
        if not self.mirror.available:
            raise ServiceUnavailable(self.mirror.unavailable_reason())
        return model

    def predict_one(self, user_id: str) -> tuple[int, bytes]:
        """(status, JSON body) for one user id (already validated)."""
        try:
            model = self._ready_model()
        except ServiceUnavailable as exc:
            return 503, _error(exc.detail)
        m = self.metrics
        t0 = time.perf_counter()
        snap = self.mirror.snapshot
        assert snap is not None
        i = snap.index.get(user_id)
        if i is None:
            m.lookup_seconds.observe(time.perf_counter() - t0)
            m.lookup_misses.inc()
            return 404, _error(f"unknown user_id {user_id!r}: not in the online feature store", user_id)
        strings = snap.strings[i : i + 1]
        numeric = snap.numeric[i : i + 1]
        t1 = time.perf_counter()
        p = round(float(model.predict(strings, numeric)[0]), 6)
        t2 = time.perf_counter()
        pred = 1 if p >= 0.5 else 0
        m.lookup_seconds.observe(t1 - t0)
        m.inference_seconds.observe(t2 - t1)
        m.observe_prediction(pred, p)
        body = b'{"user_id":%s,"prediction":%d,"churn_probability":%s,"model_version":%s,"features_used":%s}' % (
            json.dumps(user_id).encode(),
            pred,
            repr(p).encode(),
            model.version_json,
            snap.features_json[i],
        )
        return 200, body

    def predict_batch(self, user_ids: list[str]) -> tuple[int, bytes]:
        try:
            model = self._ready_model()
        except ServiceUnavailable as exc:
            return 503, _error(exc.detail)
        m = self.metrics
        t0 = time.perf_counter()
        snap = self.mirror.snapshot
        assert snap is not None
        index = snap.index
        rows: list[int] = []
        found: list[str] = []
        unknown: list[str] = []
        for u in user_ids:
            i = index.get(u)
            if i is None:
                unknown.append(u)
            else:
                rows.append(i)
                found.append(u)
        idx = np.asarray(rows, dtype=np.intp)
        strings = snap.strings[idx]
        numeric = snap.numeric[idx]
        t1 = time.perf_counter()
        proba = model.predict(strings, numeric) if rows else np.empty(0, dtype=np.float32)
        t2 = time.perf_counter()
        m.lookup_seconds.observe(t1 - t0)
        if rows:
            m.inference_seconds.observe(t2 - t1)
        if unknown:
            m.lookup_misses.inc(len(unknown))
        parts = []
        for u, i, raw in zip(found, rows, proba.tolist(), strict=True):
            p = round(raw, 6)
            pred = 1 if p >= 0.5 else 0
            m.observe_prediction(pred, p)
            parts.append(
                b'{"user_id":%s,"prediction":%d,"churn_probability":%s,"features_used":%s}'
                % (json.dumps(u).encode(), pred, repr(p).encode(), snap.features_json[i])
            )
        body = b'{"model_version":%s,"count":%d,"predictions":[%s],"unknown_user_ids":%s}' % (
            model.version_json,
            len(parts),
            b",".join(parts),
            json.dumps(unknown).encode(),
        )
        return 200, body


# ---- plain ASGI pieces ------------------------------------------------------------------
class MetricsMiddleware:
    """Counts and times every HTTP request by route template (unmatched → "other")."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        metrics = self.metrics

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        start = time.perf_counter()
        metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            metrics.in_flight.dec()
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or OTHER
            metrics.observe_request(endpoint, scope["method"], status, time.perf_counter() - start)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None when it exceeds ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send_json(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", JSON), (b"content-length", str(len(body)).encode())]
    if status == 503:
        headers.append((b"retry-after", RETRY_AFTER_SECONDS.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _fast_predict(service: PredictionService) -> ASGIApp:
    validate = PredictRequest.model_validate_json

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive, MAX_BODY_PREDICT)
        if body is None:
            await _send_json(send, 413, _error(f"request body larger than {MAX_BODY_PREDICT} bytes"))
            return
        try:
            req = validate(body)
        except ValidationError as exc:
            raise _validation_error(exc) from None
        status, payload = service.predict_one(req.user_id)
        await _send_json(send, status, payload)

    return app


def _fast_batch(service: PredictionService) -> ASGIApp:
    validate = BatchPredictRequest.model_validate_json

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive, MAX_BODY_BATCH)
        if body is None:
            await _send_json(send, 413, _error(f"request body larger than {MAX_BODY_BATCH} bytes"))
            return
        try:
            req = validate(body)
        except ValidationError as exc:
            raise _validation_error(exc) from None
        # onnxruntime releases the GIL: a 1,000-row batch must not stall the event loop.
        status, payload = await run_in_threadpool(service.predict_batch, req.user_ids)
        await _send_json(send, status, payload)

    return app


def _accelerate(app: FastAPI, path: str, handler: ASGIApp) -> None:
    """Serve the declared route with ``handler``, and match it before the docs routes."""
    routes = app.router.routes
    for i, route in enumerate(routes):
        if isinstance(route, APIRoute) and route.path == path:
            route.app = handler
            routes.insert(0, routes.pop(i))
            return
    raise LookupError(path)


# ---- the application ------------------------------------------------------------------
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown user_id (not in the online store)."},
    422: {"description": "Malformed body; user_id missing, empty, > 64 characters or not visible ASCII."},
    503: {"model": ErrorResponse, "description": "Model or feature store unavailable; retry later."},
}


def create_app(
    settings: Settings,
    *,
    holder: ModelHolder | None = None,
    mirror: FeatureMirror | None = None,
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
    mirror = mirror or FeatureMirror(settings)
    service = PredictionService(metrics, holder, mirror)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if metrics.multiprocess:
            reap_dead_workers()
        if start_background:
            holder.start()
            mirror.start()
        log.info(
            "event=api_started pid=%d model=%s alias=%s model_poll_seconds=%s feature_poll_seconds=%s multiprocess=%s",
            os.getpid(),
            settings.model_name,
            settings.model_alias,
            settings.model_poll_seconds,
            settings.feature_poll_seconds,
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

    app = FastAPI(
        title="StreamFlow churn prediction API",
        version="1.0",
        description=(
            "Churn predictions for StreamFlow subscribers from the Feast online store (latest "
            f"materialized month) and the `{settings.model_alias}` alias of `{settings.model_name}`."
        ),
        lifespan=lifespan,
        # Metrics go to Prometheus; FastAPI's native OpenTelemetry hooks would only add
        # per-request provider checks to the hot path.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.service = service
    app.state.holder = holder
    app.state.mirror = mirror
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "event=unhandled_error method=%s path=%s error=%r",
            request.method,
            request.url.path,
            exc,
            exc_info=exc,
        )
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    def _respond(status: int, body: bytes) -> Response:
        headers = {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else None
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    @app.post("/predict", response_model=PredictResponse, responses=ERROR_RESPONSES, tags=["predict"])
    async def predict(body: PredictRequest) -> Response:
        """Churn prediction for one subscriber."""
        return _respond(*service.predict_one(body.user_id))

    @app.post(
        "/predict/batch",
        response_model=BatchPredictResponse,
        responses={k: v for k, v in ERROR_RESPONSES.items() if k != 404},
        tags=["predict"],
    )
    async def predict_batch(body: BatchPredictRequest) -> Response:
        """Predictions for up to 1,000 subscribers; unknown ids are listed, not fatal."""
        return _respond(*await run_in_threadpool(service.predict_batch, body.user_ids))

    @app.get("/health", response_model=HealthResponse, tags=["ops"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers (no dependency is checked)."""
        return {"status": "ok"}

    @app.get(
        "/ready",
        response_model=ReadyResponse,
        responses={503: {"model": ReadyResponse, "description": "Not ready."}},
        tags=["ops"],
    )
    async def ready() -> JSONResponse:
        """Readiness: a model is loaded and the feature store is reachable and loaded."""
        model = holder.current
        snap = mirror.snapshot
        ok = model is not None and mirror.available
        body = {
            "ready": ok,
            "model": {
                "loaded": model is not None,
                "version": model.version if model else None,
                "error": holder.last_error,
            },
            "features": {
                "reachable": mirror.db_ok,
                "users": len(snap) if snap else 0,
                "as_of": str(snap.as_of) if snap and snap.as_of else None,
                "materialized_at": snap.materialized_at.isoformat() if snap and snap.materialized_at else None,
                "error": mirror.last_error,
            },
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get(
        "/model",
        response_model=ModelResponse,
        responses={503: {"model": ErrorResponse, "description": "No model loaded."}},
        tags=["ops"],
    )
    async def model_info() -> Any:
        """The model being served: name, alias, version, run id, training as_of, val metrics."""
        model = holder.current
        if model is None:
            return JSONResponse(
                {"detail": f"model unavailable: {holder.last_error or 'loading'}"},
                status_code=503,
                headers={"Retry-After": RETRY_AFTER_SECONDS},
            )
        return model.describe()

    @app.post(
        "/admin/reload",
        response_model=ModelResponse,
        responses={503: {"model": ErrorResponse, "description": "Reload failed; the previous model still serves."}},
        tags=["ops"],
    )
    def admin_reload(force: bool = False, features: bool = False) -> Any:
        """Check the alias now and load its version if it changed (``force``: reload even
        if unchanged; ``features``: also reload the feature mirror)."""
        result = holder.check(force=force)
        if features:
            mirror.check(force=True)
        model = holder.current
        if model is None or result in ("failed", "missing"):
            serving = model.version if model else None
            return JSONResponse(
                {"detail": f"reload failed: {holder.last_error}; serving version {serving}"}, status_code=503
            )
        return model.describe()

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def prometheus_metrics() -> Response:
        """Prometheus text format."""
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)

    if fast_path:
        _accelerate(app, "/predict/batch", _fast_batch(service))
        _accelerate(app, "/predict", _fast_predict(service))
    return app
