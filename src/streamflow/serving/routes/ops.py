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
    """Readiness: a model is loaded and the online features can be served (feature store reachable,
    mirror loaded). Stale features (a failing reload, a materialization behind the newest ingest)
    are reported (``features.stale``, ``stale_reason``) but stay ready unless
    ``STREAMFLOW_FEATURE_MAX_STALE_SECONDS`` is exceeded."""
    model = holder.current
    features_unready = mirror.unready_reason()
    ok = model is not None and features_unready is None
    body = {
        "ready": ok,
        "model": {
            "loaded": model is not None,
            "version": model.version if model else None,
            "error": holder.last_error,
        },
        "features": mirror.status(),
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
