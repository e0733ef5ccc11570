"""Request and response bodies of the prediction API (they also drive /docs)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model
from pydantic.config import JsonDict

from streamflow.core.data_model import CATEGORICAL_FEATURES, FEATURE_DTYPES, FEATURES, FLAG_FEATURES

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


# The 14 features, as the model received them, derived from schema.py (the one source):
# canonical dtype → JSON type, always nullable (a missing value is null).
_JSON_TYPES: dict[str, type] = {"int64": int, "float64": float, "object": str}
_EXAMPLE_BY_FEATURE_KIND: dict[str, Any] = {"flag": 1.0, "categorical": "DSL", "int64": 3, "float64": 29.85}


def _feature_kind(name: str) -> str:
    if name in FLAG_FEATURES:
        return "flag"
    if name in CATEGORICAL_FEATURES:
        return "categorical"
    return FEATURE_DTYPES[name]


EXAMPLE_FEATURES: JsonDict = {f: _EXAMPLE_BY_FEATURE_KIND[_feature_kind(f)] for f in FEATURES}

FeaturesUsed: type[BaseModel] = create_model(
    "FeaturesUsed",
    __doc__=f"The {len(FEATURES)} features as the model received them (flags 1.0 / 0.0 / null).",
    **{f: (_JSON_TYPES[FEATURE_DTYPES[f]] | None, ...) for f in FEATURES},  # type: ignore[call-overload]
)


def _no_default(schema: JsonDict) -> None:
    schema.pop("default", None)


# Present only when asked for (``?features=true``); never null.
FEATURES_USED_FIELD: Any = Field(
    default=None,
    description="The features the model received; only with `?features=true`.",
    json_schema_extra=_no_default,
)


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
    features_used: FeaturesUsed = FEATURES_USED_FIELD


class BatchPrediction(BaseModel):
    user_id: str
    prediction: Literal[0, 1]
    churn_probability: float = Field(ge=0.0, le=1.0)
    features_used: FeaturesUsed = FEATURES_USED_FIELD


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
    sha256: str | None = None  # of the served ONNX bytes, verified against the deployment record
    deployment_id: int | None = None
    promoted_at: str | None = None


class ReadyResponse(BaseModel):
    ready: bool
    model: dict[str, object]
    features: dict[str, object]
