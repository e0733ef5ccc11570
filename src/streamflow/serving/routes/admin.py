"""``POST /admin/reload``: check the newest deployment record (and optionally the feature store) now.

Off unless ``settings.admin_token`` is set (the route is then not registered: 404, and absent
from the OpenAPI document). With it, the request must carry ``Authorization: Bearer <token>``
(compared in constant time; anything else → 401). One reload at a time: a second one while the
first runs → 409 at once; and at most one per ``admin_reload_cooldown_seconds`` → 429 +
``Retry-After``. Those refusals are answered by :class:`AdminGuard`, a plain ASGI layer in
front of FastAPI (~30 µs instead of a full FastAPI request), so a burst of abusive calls costs
the event loop — and the ``/predict`` requests queued behind it — next to nothing. The reload
itself runs in a thread of its own limiter (never one of the threads ``/metrics`` and the
batch endpoint use), never on the event loop."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from streamflow.serving.deps import HolderDep, MirrorDep
from streamflow.serving.features import OnlineFeatures
from streamflow.serving.model_holder import ModelHolder
from streamflow.serving.schemas import ErrorResponse, ModelResponse

PATH = "/admin/reload"
router = APIRouter(tags=["ops"])
bearer = HTTPBearer(auto_error=False, description="The API's admin token (STREAMFLOW_ADMIN_TOKEN).")

Refusal = tuple[int, dict[str, str], dict[str, str]]  # (status, body, headers)


class AdminGate:
    """The token (kept as its SHA-256: an equal-length constant-time comparison), the
    single-flight flag and the cooldown of the reload. Lives on ``app.state.admin``; read and
    changed on the event loop only (no lock needed)."""

    def __init__(self, token: str, cooldown_seconds: float) -> None:
        self._digest = hashlib.sha256(token.encode()).digest()
        self.cooldown = cooldown_seconds
        self.busy = False
        self.last_reload_done = -math.inf  # time.monotonic() when the last reload finished
        self.limiter = anyio.CapacityLimiter(1)

    def authorized(self, authorization: str | None) -> bool:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            given = ""
        return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), self._digest)

    def refusal(self, authorization: str | None) -> Refusal | None:
        """Why this call may not reload now (None: it may)."""
        if not self.authorized(authorization):
            detail = "missing or wrong admin token (Authorization: Bearer …)"
            return 401, {"detail": detail}, {"WWW-Authenticate": "Bearer"}
        if self.busy:
            return 409, {"detail": "a reload is already running; retry when it has finished"}, {}
        wait = self.last_reload_done + self.cooldown - time.monotonic()
        if wait > 0:
            retry = str(max(1, math.ceil(wait)))
            detail = f"reloaded less than {self.cooldown:g} s ago; retry in {retry} s"
            return 429, {"detail": detail}, {"Retry-After": retry}
        return None


class AdminGuard:
    """Refuses what :meth:`AdminGate.refusal` refuses before FastAPI sees the request;
    ``route`` labels the answer in the metrics."""

    def __init__(self, app: ASGIApp, gate: AdminGate, route: Any) -> None:
        self.app = app
        self.gate = gate
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        refused = self.gate.refusal(authorization)
        if refused is None:
            await self.app(scope, receive, send)
            return
        status, body, headers = refused
        scope["route"] = self.route
        payload = json.dumps(body).encode()
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": payload})


def _refused(refused: Refusal) -> JSONResponse:
    status, body, headers = refused
    return JSONResponse(body, status_code=status, headers=headers or None)


def reload_now(holder: ModelHolder, mirror: OnlineFeatures, force: bool, features: bool) -> Any:
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


@router.post(
    PATH,
    response_model=ModelResponse,
    responses={
        401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
        409: {"model": ErrorResponse, "description": "Another reload is running; retry when it has finished."},
        429: {"model": ErrorResponse, "description": "A reload finished less than the cooldown ago; see Retry-After."},
        503: {"model": ErrorResponse, "description": "Reload failed; the previous model still serves."},
    },
)
async def admin_reload(
    request: Request,
    holder: HolderDep,
    mirror: MirrorDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    force: bool = False,
    features: bool = False,
) -> Any:
    """Check the newest deployment record now and load its version if it changed (``force``: reload even
    if unchanged; ``features``: also reload the feature mirror). Requires the admin token."""
    gate: AdminGate = request.app.state.admin
    refused = gate.refusal(request.headers.get("authorization"))  # AdminGuard answered these already
    if refused is not None:
        return _refused(refused)
    gate.busy = True
    try:
        return await anyio.to_thread.run_sync(reload_now, holder, mirror, force, features, limiter=gate.limiter)
    finally:
        gate.busy = False
        gate.last_reload_done = time.monotonic()
