"""``POST /predict`` and ``POST /predict/batch``. Each is declared once as a
:class:`~streamflow.serving.asgi.JsonEndpoint`; the FastAPI endpoints below define the
OpenAPI schema and are the reference implementation, ``create_app(fast_path=True)`` serves
the same declarations through the plain ASGI handler.

``features_used`` is returned only when asked for with the query parameter ``?features=true``
(an option of the answer, not part of the input: the bodies stay ``{"user_id"}`` /
``{"user_ids"}``). Every answer of the service carries ``X-Request-ID``, the id under which its
predictions are recorded in the prediction log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from streamflow.serving.asgi import FEATURES_PARAM, Answer, JsonEndpoint, json_response
from streamflow.serving.deps import ServiceDep
from streamflow.serving.schemas import (
    BatchPredictRequest,
    BatchPredictResponse,
    ErrorResponse,
    PredictRequest,
    PredictResponse,
)
from streamflow.serving.service import REQUEST_ID_HEADER, PredictionService

MAX_BODY_PREDICT = 16 * 1024
MAX_BODY_BATCH = 256 * 1024

_REQUEST_ID = {
    REQUEST_ID_HEADER: {
        "description": "Id of this request; its predictions are recorded under it in the prediction log.",
        "schema": {"type": "string", "format": "uuid"},
    }
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown user_id (not in the online store).", "headers": _REQUEST_ID},
    422: {
        "description": "Malformed body (user_id missing, empty, > 64 characters or not visible ASCII) or an "
        "invalid `features` value."
    },
    503: {
        "model": ErrorResponse,
        "description": "Model or features not loaded yet, or overloaded (a concurrency limit); retry after "
        "`Retry-After` seconds.",
    },
}
SUCCESS = {"description": "Successful Response", "headers": _REQUEST_ID}

FeaturesFlag = Annotated[
    bool,
    Query(
        alias=FEATURES_PARAM,
        description="Include `features_used` (the model's inputs) in the answer. Default: not included.",
    ),
]


def _predict_one(service: PredictionService, request: PredictRequest, request_id: str, features: bool) -> Answer:
    return service.predict_one(request.user_id, request_id, features)


def _predict_batch(service: PredictionService, request: BatchPredictRequest, request_id: str, features: bool) -> Answer:
    return service.predict_batch(request.user_ids, request_id, features)


PREDICT = JsonEndpoint("/predict", PredictRequest, MAX_BODY_PREDICT, _predict_one, threadpool=False)
# onnxruntime releases the GIL: a 1,000-row batch must not stall the event loop.
BATCH = JsonEndpoint("/predict/batch", BatchPredictRequest, MAX_BODY_BATCH, _predict_batch, threadpool=True)

router = APIRouter(tags=["predict"])


@router.post(PREDICT.path, response_model=PredictResponse, responses={200: SUCCESS, **ERROR_RESPONSES})
async def predict(body: PredictRequest, service: ServiceDep, features: FeaturesFlag = False) -> Response:
    """Churn prediction for one subscriber (`?features=true`: with the features the model received)."""
    request_id = service.new_request_id()
    return json_response(*await PREDICT.answer(service, body, request_id, features), request_id)


@router.post(
    BATCH.path,
    response_model=BatchPredictResponse,
    responses={200: SUCCESS, **{k: v for k, v in ERROR_RESPONSES.items() if k != 404}},
)
async def predict_batch(body: BatchPredictRequest, service: ServiceDep, features: FeaturesFlag = False) -> Response:
    """Predictions for up to 1,000 subscribers; unknown ids are listed, not fatal (`?features=true`: with
    each one's features)."""
    request_id = service.new_request_id()
    return json_response(*await BATCH.answer(service, body, request_id, features), request_id)


# (declaration, FastAPI endpoint) pairs that create_app(fast_path=True) accelerates.
ACCELERATED = ((PREDICT, predict), (BATCH, predict_batch))
