"""A small synchronous client of the Prometheus HTTP API v1 (query, query_range, targets,
alerts, rules), used by the monitoring report and the tests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx


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
