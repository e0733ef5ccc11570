"""The API over a real (small) ONNX model and a real feature snapshot, no database: what
the serving unit tests and the browser test of /docs build their apps from, and a uvicorn
server in a thread for the tests that need real HTTP."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import uvicorn
from fastapi import FastAPI

from streamflow.core.data_model import ENTITY, FEATURES, LABEL
from streamflow.core.settings import Settings
from streamflow.serving.app import create_app
from streamflow.serving.features import FeatureMirror, FeatureSnapshot, build_snapshot
from streamflow.serving.metrics import ApiMetrics
from streamflow.serving.model_holder import LoadedModel, ModelHolder, build_loaded_model
from streamflow.training.onnx_export import export_onnx
from streamflow.training.pipeline import build_pipeline
from tests.helpers.data import month_frame
from tests.helpers.net import free_port

VERSION = "7"
TRAIN_AS_OF = "2024-01-31"
ONLINE_AS_OF = date(2024, 2, 29)


@dataclass
class Served:
    settings: Settings
    pipeline: Any
    model: LoadedModel
    onnx_bytes: bytes
    snapshot: FeatureSnapshot
    online: pd.DataFrame

    @property
    def user_ids(self) -> list[str]:
        return list(self.online[ENTITY])


def build_served(seeds: Path, home: Path, n_estimators: int = 40) -> Served:
    """A forest trained on ``seeds/month_000``, served over the features of ``month_001``."""
    settings = Settings(home=home, n_estimators=n_estimators)
    train = month_frame(seeds / "month_000")
    pipe = build_pipeline(settings, n_jobs=1)
    pipe.fit(train[FEATURES], train[LABEL])
    onnx_bytes = export_onnx(pipe, train[FEATURES].head(200))
    model = build_loaded_model(
        onnx_bytes,
        name=settings.model_name,
        alias=settings.model_alias,
        version=VERSION,
        run_id="unit-run",
        as_of=TRAIN_AS_OF,
        metrics={"val_auc": 0.8},
    )
    online = month_frame(seeds / "month_001")
    snapshot = build_snapshot(
        online[[ENTITY, *FEATURES]], as_of=ONLINE_AS_OF, materialized_at=datetime(2024, 3, 1, tzinfo=UTC)
    )
    return Served(settings, pipe, model, onnx_bytes, snapshot, online)


def served_settings(served: Served, **overrides: Any) -> Settings:
    """The served settings with some fields changed (validated, like the environment would be)."""
    return Settings(**{**served.settings.model_dump(), **overrides})


def make_app(
    served: Served,
    *,
    fast_path: bool = True,
    db_ok: bool = True,
    with_model: bool = True,
    with_features: bool = True,
    **settings: Any,
) -> FastAPI:
    """The app over the served model and snapshot, no background threads (the prediction log
    only buffers: its rows are in ``app.state.service.log``); ``settings`` override fields."""
    config = served_settings(served, **settings) if settings else served.settings
    metrics = ApiMetrics()
    holder = ModelHolder(config, metrics)
    if with_model:
        holder.install(served.model)
    mirror = FeatureMirror(config)
    mirror.snapshot = served.snapshot if with_features else None
    mirror.db_ok = db_ok
    if not db_ok:
        mirror.last_error = "OperationalError: connection refused"
    return create_app(config, holder=holder, mirror=mirror, start_background=False, fast_path=fast_path)


@contextlib.contextmanager
def uvicorn_in_thread(app: FastAPI, start_timeout: float = 30.0, settings: Settings | None = None) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yields its URL and
    always shuts the server down. With ``settings``: uvicorn configured as ``streamflow serve``
    configures it (``serving.server.uvicorn_options``: httptools, overload limits)."""
    port = free_port()
    if settings is not None:
        from streamflow.serving.limits import configure
        from streamflow.serving.server import uvicorn_options

        configure(settings)
        config = uvicorn.Config(app, **{**uvicorn_options(settings, "127.0.0.1", port), "log_level": "warning"})
    else:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
