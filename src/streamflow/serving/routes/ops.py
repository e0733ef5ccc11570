"""Operations endpoints: liveness, readiness, the served model, Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from streamflow.serving.deps import HolderDep, MetricsDep, MirrorDep
from streamflow.serving.schemas import ErrorResponse, HealthResponse, ModelResponse, ReadyResponse
from streamflow.serving.service import model_unavailable, response_headers

router = APIRouter(tags=["ops"])


@router.get("/health", response_model=HealthResponse)
async def health() -> dict[str, str]:
    """Liveness: the process answers (no dependency is checked)."""
    return {"status": "ok"}


@router.get(
    "/ready", response_model=ReadyResponse, responses={503: {"model": ReadyResponse, "description": "Not ready."}}
)
async def ready(holder: HolderDep, mirror: MirrorDep) -> JSONResponse:
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


@router.get(
    "/model",
    response_model=ModelResponse,
    responses={503: {"model": ErrorResponse, "description": "No model loaded."}},
)
async def model_info(holder: HolderDep) -> Any:
    """The model being served: name, alias, version, run id, training as_of, val metrics."""
    model = holder.current
    if model is None:
        return JSONResponse({"detail": model_unavailable(holder)}, status_code=503, headers=response_headers(503))
    return model.describe()


@router.get("/metrics", response_class=Response)
def prometheus_metrics(metrics: MetricsDep) -> Response:
    """Prometheus text format."""
    data, content_type = metrics.render()
    return Response(data, media_type=content_type)
