"""Overload shedding: a request beyond a concurrency limit is answered at once with 503 +
``Retry-After`` (JSON, counted in ``api_requests_shed_total{limit}``) instead of queueing until
its client times out.

Both limits are per worker process and are decided where uvicorn creates a request's task
(:class:`GuardedHttpToolsProtocol`, the HTTP protocol ``run_server`` selects), so that they see
the requests *queued* on the event loop and not only those running: a ``/predict`` runs to
completion without yielding, so a counter inside the app would never see more than one.

* ``server`` — ``api_limit_concurrency``: uvicorn's ``limit_concurrency`` (open connections +
  requests in progress). uvicorn's own answer is a plain-text 503 without ``Retry-After``; here
  the request is marked instead and answered by :class:`ShedMiddleware`, the app's outermost
  layer after the metrics.
* ``client`` — ``api_max_requests_per_client``: requests in progress (queued or running) from
  one client address. With HTTP/1.1 that is at most one per connection, so it bounds what one
  client can hold: connections with slow bodies, slow readers, batches in the thread pool.

``/health``, ``/ready`` and ``/metrics`` are never shed: probes and scrapes must see an
overloaded worker as alive and measurable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from streamflow.core.settings import Settings
from streamflow.serving.metrics import ApiMetrics

SHED_KEY = "streamflow.shed"  # scope key: which limit shed this request ("client" / "server")
NEVER_SHED = frozenset({"/health", "/ready", "/metrics"})
RETRY_AFTER_OVERLOADED = "1"
_DETAIL = {
    "client": b'{"detail":"too many concurrent requests from this client; retry later"}',
    "server": b'{"detail":"server overloaded; retry later"}',
}
_ACTIVE_ATTR = "streamflow_active_per_client"


def configure(settings: Settings) -> None:
    """Set this process's per-client limit (call before serving, in every worker)."""
    GuardedHttpToolsProtocol.max_per_client = settings.api_max_requests_per_client


def _counted(app: Any, host: str, active: dict[str, int]) -> Any:
    async def run(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        finally:
            n = active.get(host, 1) - 1
            if n > 0:
                active[host] = n
            else:
                active.pop(host, None)

    return run


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with both limits applied when a request's task starts."""

    max_per_client: ClassVar[int | None] = None

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        scope = cycle.scope
        if scope.get("path") in NEVER_SHED:
            app = self.app  # even when uvicorn's own limit said otherwise
        elif app is not self.app:  # uvicorn's limit_concurrency answer: ours instead
            scope[SHED_KEY] = "server"
            app = self.app
        elif self.max_per_client is not None:
            active: dict[str, int] | None = getattr(self.server_state, _ACTIVE_ATTR, None)
            if active is None:
                active = {}
                setattr(self.server_state, _ACTIVE_ATTR, active)
            host = str(self.client[0]) if self.client else ""
            n = active.get(host, 0)
            if n >= self.max_per_client:
                scope[SHED_KEY] = "client"
            else:
                active[host] = n + 1
                app = _counted(self.app, host, active)
        super()._start_asgi_task(cycle, app)


class ShedMiddleware:
    """Answers the requests the protocol marked as shed: 503 JSON + ``Retry-After`` (and
    ``Connection: close`` when the worker as a whole is over its limit), counted by limit and
    by route template (``routes``: path → route, for the metrics middleware's label)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, routes: Mapping[str, Any]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = scope.get(SHED_KEY)
        if limit is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.metrics.observe_shed(limit)
        route = self.routes.get(scope["path"])
        if route is not None:
            scope["route"] = route
        body = _DETAIL[limit]
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", RETRY_AFTER_OVERLOADED.encode()),
        ]
        if limit == "server":
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
