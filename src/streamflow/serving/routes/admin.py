"""``POST /admin/reload``: check the registry alias (and optionally the feature store) now.
No authentication: the API binds to loopback by default."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from streamflow.serving.deps import HolderDep, MirrorDep
from streamflow.serving.schemas import ErrorResponse, ModelResponse

router = APIRouter(tags=["ops"])


@router.post(
    "/admin/reload",
    response_model=ModelResponse,
    responses={503: {"model": ErrorResponse, "description": "Reload failed; the previous model still serves."}},
)
def admin_reload(holder: HolderDep, mirror: MirrorDep, force: bool = False, features: bool = False) -> Any:
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
