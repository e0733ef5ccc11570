"""Integration stacks: a STREAMFLOW_HOME with real services, its settings as an environment."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from streamflow.app.monthly import ingest_and_publish
from streamflow.core.logging_setup import setup_logging
from streamflow.core.settings import Settings
from streamflow.db.engine import release_embedded
from streamflow.training.registry import promote
from streamflow.training.train import TrainResult, train_model
from tests.helpers.course import AS_OF


@dataclass
class Stack:
    settings: Settings
    seeds: Path
    trained: list[TrainResult] = field(default_factory=list)

    def train(self, as_of: str) -> TrainResult:
        result = train_model(as_of, self.settings, promote_if_first=True)
        self.trained.append(result)
        return result

    def promote(self, version: str, reason: str = "test") -> None:
        """Publish ``version`` as an operator would (`streamflow promote --allow-older`)."""
        promote(self.settings, version, reason, allow_older=True)

    def env(self) -> dict[str, str]:
        """Environment for a subprocess (CLI, API server) that uses this stack."""
        env = dict(os.environ)
        env["STREAMFLOW_HOME"] = str(self.settings.home)
        env.pop("MLFLOW_TRACKING_URI", None)
        return env


@contextlib.contextmanager
def environment_of(settings: Settings) -> Iterator[None]:
    """Run the body with ``settings`` as this process's environment: what a deployed Prefect flow
    (or any `get_settings()` caller) sees. Every field that differs from its default is exported."""
    saved = os.environ.copy()
    try:
        for name, value in settings.model_dump(exclude_defaults=True).items():
            os.environ[f"STREAMFLOW_{name.upper()}"] = str(value)
        if settings.mlflow_tracking_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        if settings.report_dir is None:
            os.environ.pop("REPORT_DIR", None)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def make_settings(home: Path, **overrides: object) -> Settings:
    return Settings(home=home, **overrides)  # type: ignore[arg-type]


@contextlib.contextmanager
def course_months_stack(home: Path, seeds: Path, **overrides: object) -> Iterator[Stack]:
    """Both course months ingested and published under ``home`` (online = 2024-02-29), a model
    trained on 2024-01-31 in production; the embedded PostgreSQL released on the way out."""
    setup_logging("WARNING")
    settings = make_settings(home, **overrides)
    stack = Stack(settings=settings, seeds=seeds)
    try:
        for month, as_of in AS_OF.items():
            ingest_and_publish(seeds / month, as_of, settings)
        stack.train("2024-01-31")
        yield stack
    finally:
        release_embedded(settings)
