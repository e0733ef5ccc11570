"""Request and response bodies of the prediction API (they also drive /docs)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.config import JsonDict

MAX_USER_ID_LENGTH = 64
MAX_BATCH = 1000
# Visible ASCII only: no whitespace, control characters or non-ASCII look-alikes.
USER_ID_PATTERN = r"^[!-~]+$"
EXAMPLE_USER_ID = "7590-VHVEG"

UserId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_USER_ID_LENGTH, pattern=USER_ID_PATTERN),
    Field(description="Subscriber id (1-64 visible ASCII characters).", examples=[EXAMPLE_USER_ID]),
]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"user_id": EXAMPLE_USER_ID}]})

    user_id: UserId


class BatchPredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"user_ids": [EXAMPLE_USER_ID, "5575-GNVDE", "0000-NOPE"]}]}
    )

    user_ids: list[UserId] = Field(min_length=1, max_length=MAX_BATCH)


class FeaturesUsed(BaseModel):
    """The 14 features as the model received them (flags 1.0 / 0.0 / null)."""

    months_active: int | None
    monthly_fee: float | None
    paperless_billing: float | None
    plan_stream_tv: float | None
    plan_stream_movies: float | None
    net_service: str | None
    watch_hours_30d: float | None
    avg_session_mins_7d: float | None
    unique_devices_30d: int | None
    skips_7d: int | None
    rebuffer_events_7d: int | None
    failed_payments_90d: int | None
    support_tickets_90d: int | None
    ticket_avg_resolution_hrs_90d: float | None


EXAMPLE_FEATURES: JsonDict = {
    "months_active": 1,
    "monthly_fee": 29.85,
    "paperless_billing": 1.0,
    "plan_stream_tv": 0.0,
    "plan_stream_movies": 0.0,
    "net_service": "DSL",
    "watch_hours_30d": 24.48,
    "avg_session_mins_7d": 29.14,
    "unique_devices_30d": 3,
    "skips_7d": 4,
    "rebuffer_events_7d": 1,
    "failed_payments_90d": 1,
    "support_tickets_90d": 0,
    "ticket_avg_resolution_hrs_90d": 16.0,
}


class PredictResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": EXAMPLE_USER_ID,
                    "prediction": 1,
                    "churn_probability": 0.731667,
                    "model_version": "3",
                    "features_used": EXAMPLE_FEATURES,
                }
            ]
        }
    )

    user_id: str
    prediction: Literal[0, 1]
    churn_probability: float = Field(ge=0.0, le=1.0)
    model_version: str
    features_used: FeaturesUsed


class BatchPrediction(BaseModel):
    user_id: str
    prediction: Literal[0, 1]
    churn_probability: float = Field(ge=0.0, le=1.0)
    features_used: FeaturesUsed


class BatchPredictResponse(BaseModel):
    model_version: str
    count: int = Field(description="Number of predictions (known ids, duplicates included).")
    predictions: list[BatchPrediction] = Field(description="In request order, unknown ids skipped.")
    unknown_user_ids: list[str] = Field(description="Requested ids absent from the online store.")


class ErrorResponse(BaseModel):
    detail: str
    user_id: str | None = None


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ModelResponse(BaseModel):
    name: str
    alias: str
    version: str
    run_id: str
    as_of: str
    metrics: dict[str, float]
    loaded_at: str
    load_seconds: float
    format: str


class ReadyResponse(BaseModel):
    ready: bool
    model: dict[str, object]
    features: dict[str, object]
