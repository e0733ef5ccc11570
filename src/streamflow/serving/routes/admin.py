"""``POST /admin/reload``: check the registry alias (and optionally the feature store) now.

Off unless ``settings.admin_token`` is set (the route is then not registered: 404, and absent
from the OpenAPI document). With it, the request must carry ``Authorization: Bearer <token>``
(compared in constant time; anything else → 401). One reload at a time: a second one while the
first runs → 409 at once. The reload runs in a thread of its own limiter (never one of the
threads ``/metrics`` and the batch endpoint use) and never on the event loop, so neither
``/predict`` nor ``/metrics`` waits for it."""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from streamflow.serving.deps import HolderDep, MirrorDep
from streamflow.serving.features import FeatureMirror
from streamflow.serving.model_holder import ModelHolder
from streamflow.serving.schemas import ErrorResponse, ModelResponse

router = APIRouter(tags=["ops"])
bearer = HTTPBearer(auto_error=False, description="The API's admin token (STREAMFLOW_ADMIN_TOKEN).")


class AdminGate:
    """The token (kept as its SHA-256: equal-length constant-time comparison) and the
    single-flight state of the reload. Lives on ``app.state.admin``."""

    def __init__(self, token: str) -> None:
        self._digest = hashlib.sha256(token.encode()).digest()
        self.busy = False  # read and set on the event loop only: no lock needed
        self.limiter = anyio.CapacityLimiter(1)

    def authorized(self, credentials: HTTPAuthorizationCredentials | None) -> bool:
        given = credentials.credentials if credentials is not None else ""
        return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), self._digest)


def reload_now(holder: ModelHolder, mirror: FeatureMirror, force: bool, features: bool) -> JSONResponse | Any:
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
    "/admin/reload",
    response_model=ModelResponse,
    responses={
        401: {"model": ErrorResponse, "description": "Missing or wrong bearer token."},
        409: {"model": ErrorResponse, "description": "Another reload is running; retry when it has finished."},
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
    """Check the alias now and load its version if it changed (``force``: reload even
    if unchanged; ``features``: also reload the feature mirror). Requires the admin token."""
    gate: AdminGate = request.app.state.admin
    if not gate.authorized(credentials):
        return JSONResponse(
            {"detail": "missing or wrong admin token (Authorization: Bearer …)"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    if gate.busy:
        return JSONResponse({"detail": "a reload is already running; retry when it has finished"}, status_code=409)
    gate.busy = True
    try:
        return await anyio.to_thread.run_sync(reload_now, holder, mirror, force, features, limiter=gate.limiter)
    finally:
        gate.busy = False
