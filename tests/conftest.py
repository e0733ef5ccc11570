"""Shared test configuration: where the real course data lives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
COURSE_SEEDS = Path(
    os.environ.get("STREAMFLOW_COURSE_SEEDS", REPO_ROOT.parent / "shared" / "data" / "streamflow-course" / "seeds")
)
AS_OF = {"month_000": "2024-01-31", "month_001": "2024-02-29"}


@pytest.fixture(scope="session")
def course_seeds() -> Path:
    if not (COURSE_SEEDS / "month_000" / "users.csv").is_file():
        pytest.fail(f"course data not found at {COURSE_SEEDS} (set STREAMFLOW_COURSE_SEEDS)")
    return COURSE_SEEDS
