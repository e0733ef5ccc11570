"""``POST /predict`` and ``POST /predict/batch``. Each is declared once as a
:class:`~streamflow.serving.asgi.JsonEndpoint`; the FastAPI endpoints below define the
OpenAPI schema and are the reference implementation, ``create_app(fast_path=True)`` serves
the same declarations through the plain ASGI handler."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from streamflow.serving.asgi import Answer, JsonEndpoint, json_response
from streamflow.serving.deps import ServiceDep
from streamflow.serving.schemas import (
    BatchPredictRequest,
    BatchPredictResponse,
    ErrorResponse,
    PredictRequest,
    PredictResponse,
)
from streamflow.serving.service import PredictionService

MAX_BODY_PREDICT = 16 * 1024
MAX_BODY_BATCH = 256 * 1024

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown user_id (not in the online store)."},
    422: {"description": "Malformed body; user_id missing, empty, > 64 characters or not visible ASCII."},
    503: {"model": ErrorResponse, "description": "Model or feature store unavailable; retry later."},
}


def _predict_one(service: PredictionService, request: PredictRequest) -> Answer:
    return service.predict_one(request.user_id)


def _predict_batch(service: PredictionService, request: BatchPredictRequest) -> Answer:
    return service.predict_batch(request.user_ids)


PREDICT = JsonEndpoint("/predict", PredictRequest, MAX_BODY_PREDICT, _predict_one, threadpool=False)
# onnxruntime releases the GIL: a 1,000-row batch must not stall the event loop.
BATCH = JsonEndpoint("/predict/batch", BatchPredictRequest, MAX_BODY_BATCH, _predict_batch, threadpool=True)

router = APIRouter(tags=["predict"])


@router.post(PREDICT.path, response_model=PredictResponse, responses=ERROR_RESPONSES)
async def predict(body: PredictRequest, service: ServiceDep) -> Response:
    """Churn prediction for one subscriber."""
    return json_response(*await PREDICT.answer(service, body))


@router.post(
    BATCH.path,
    response_model=BatchPredictResponse,
    responses={k: v for k, v in ERROR_RESPONSES.items() if k != 404},
)
async def predict_batch(body: BatchPredictRequest, service: ServiceDep) -> Response:
    """Predictions for up to 1,000 subscribers; unknown ids are listed, not fatal."""
    return json_response(*await BATCH.answer(service, body))


# (declaration, FastAPI endpoint) pairs that create_app(fast_path=True) accelerates.
ACCELERATED = ((PREDICT, predict), (BATCH, predict_batch))
