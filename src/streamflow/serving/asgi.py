"""Plain ASGI pieces of the API: the metrics middleware, and the fast path of the JSON
POST endpoints.

A :class:`JsonEndpoint` declares one such endpoint once — request model, body limit, the
service call, and whether that call runs off the event loop. The same declaration backs
its FastAPI endpoint (``routes/predict.py``: OpenAPI schema, reference behaviour) and
:func:`fast_handler`, a plain ASGI handler with identical behaviour that validates the raw
bytes with pydantic (and the one query parameter, ``features``, like FastAPI does) and skips
FastAPI's dependency and response-model machinery (``create_app(fast_path=True)``, the
default; the difference is measured in docs/serving.md). Every answer of the service carries
its request id in ``X-Request-ID``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamflow.serving.metrics import OTHER, ApiMetrics
from streamflow.serving.service import REQUEST_ID_HEADER, PredictionService, error_body, response_headers

JSON = "application/json"
MAX_ECHO = 200  # characters of an invalid input echoed back in a 422

FEATURES_PARAM = "features"  # ?features=true: include features_used in the answer
_REQUEST_ID = REQUEST_ID_HEADER.lower().encode()
_BOOL: TypeAdapter[bool] = TypeAdapter(bool)

Answer = tuple[int, bytes]  # (HTTP status, JSON body)
# (service, validated request, request id, features) -> answer
ServiceCall = Callable[[PredictionService, Any, str, bool], Answer]


@dataclass(frozen=True)
class JsonEndpoint:
    path: str
    request_model: type[BaseModel]
    max_body: int
    call: ServiceCall
    threadpool: bool  # run ``call`` in the threadpool (onnxruntime releases the GIL)

    async def answer(self, service: PredictionService, request: BaseModel, request_id: str, features: bool) -> Answer:
        if self.threadpool or service.mirror.blocking:  # direct lookups do I/O
            return await run_in_threadpool(self.call, service, request, request_id, features)
        return self.call(service, request, request_id, features)


def json_response(status: int, body: bytes, request_id: str | None = None) -> Response:
    """A pre-encoded JSON answer as a Starlette response (the FastAPI path)."""
    headers = response_headers(status)
    if request_id is not None:
        headers[REQUEST_ID_HEADER] = request_id
    return Response(body, status_code=status, media_type=JSON, headers=headers or None)


@cache
def _raw_headers(status: int) -> tuple[tuple[bytes, bytes], ...]:
    return (
        (b"content-type", JSON.encode()),
        *((k.lower().encode(), v.encode()) for k, v in response_headers(status).items()),
    )


async def send_json(send: Send, status: int, body: bytes, request_id: str | None = None) -> None:
    """The same answer sent as raw ASGI messages (the fast path)."""
    headers = [*_raw_headers(status), (b"content-length", str(len(body)).encode())]
    if request_id is not None:
        headers.append((_REQUEST_ID, request_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def validation_errors(exc: ValidationError, *where: str) -> list[dict[str, Any]]:
    """pydantic's errors in FastAPI's 422 shape (``loc`` under ``where``, echo bounded)."""
    errors: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False):
        e: dict[str, Any] = dict(err)
        e["loc"] = (*where, *e.get("loc", ()))
        if "ctx" in e:  # may hold exception objects: keep it JSON-safe
            e["ctx"] = {k: str(v) for k, v in e["ctx"].items()}
        raw = e.get("input")
        if isinstance(raw, bytes | bytearray):  # invalid JSON / UTF-8: echo it safely
            raw = bytes(raw).decode("utf-8", "replace")
        if isinstance(raw, str) and len(raw) > MAX_ECHO:
            raw = raw[:MAX_ECHO] + "…"
        e["input"] = raw
        errors.append(e)
    return errors


def features_option(query_string: bytes) -> tuple[bool, list[dict[str, Any]]]:
    """``?features=…`` parsed as FastAPI parses a ``bool`` query parameter (the last value
    wins; true/false, 1/0, yes/no, on/off, …; anything else is a 422): (value, errors)."""
    if not query_string:
        return False, []
    values = [v for k, v in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True) if k == FEATURES_PARAM]
    if not values:
        return False, []
    try:
        return _BOOL.validate_python(values[-1]), []
    except ValidationError as exc:
        return False, validation_errors(exc, "query", FEATURES_PARAM)


async def read_body(receive: Receive, limit: int) -> bytes | None:
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


def fast_handler(endpoint: JsonEndpoint) -> ASGIApp:
    """The endpoint as a plain ASGI handler; the service is ``app.state.service``."""
    validate = endpoint.request_model.model_validate_json
    limit = endpoint.max_body
    too_large = error_body(f"request body larger than {limit} bytes")
    call, threadpool = endpoint.call, endpoint.threadpool

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        body = await read_body(receive, limit)
        if body is None:
            await send_json(send, 413, too_large)
            return
        features, errors = features_option(scope["query_string"])
        try:
            request = validate(body)
        except ValidationError as exc:
            body_errors = validation_errors(exc, "body")
            # FastAPI stops at a body that is not JSON, before looking at the parameters
            errors = body_errors if body_errors[0]["type"] == "json_invalid" else [*errors, *body_errors]
        if errors:
            raise RequestValidationError(errors)
        service: PredictionService = scope["app"].state.service
        request_id = service.new_request_id()
        if threadpool or service.mirror.blocking:  # direct lookups do I/O
            status, payload = await run_in_threadpool(call, service, request, request_id, features)
        else:
            status, payload = call(service, request, request_id, features)
        await send_json(send, status, payload, request_id)

    return handler


def accelerate(app: FastAPI, endpoint: JsonEndpoint, declared: Callable[..., Any]) -> None:
    """Serve ``endpoint`` with its fast handler: a route of its own on ``app``, matched
    before every other (the declared FastAPI endpoint ``declared``, in an included router,
    keeps defining the OpenAPI schema). Per app: the routers' routes are not modified."""
    route = APIRoute(endpoint.path, declared, methods=["POST"], include_in_schema=False)
    route.app = fast_handler(endpoint)
    app.router.routes.insert(0, route)


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
