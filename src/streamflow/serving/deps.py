"""The app's components as FastAPI dependencies: ``create_app`` puts them on ``app.state``,
route handlers declare what they need with these ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from streamflow.serving.features import OnlineFeatures
from streamflow.serving.metrics import ApiMetrics
from streamflow.serving.model_holder import ModelHolder
from streamflow.serving.service import PredictionService


async def get_service(request: Request) -> PredictionService:
    return request.app.state.service  # type: ignore[no-any-return]


async def get_holder(request: Request) -> ModelHolder:
    return request.app.state.holder  # type: ignore[no-any-return]


async def get_mirror(request: Request) -> OnlineFeatures:
    return request.app.state.mirror  # type: ignore[no-any-return]


async def get_metrics(request: Request) -> ApiMetrics:
    return request.app.state.metrics  # type: ignore[no-any-return]


ServiceDep = Annotated[PredictionService, Depends(get_service)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]
MirrorDep = Annotated[OnlineFeatures, Depends(get_mirror)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
