"""Shared test configuration: where the real course data lives."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Prefect binds its console log handler to the sys.stderr of the moment its logging is set up
# (at `import prefect`). Done inside a test that captures output, the handler would keep that
# test's stream, closed afterwards, and every later Prefect log line would print a "Logging
# error" traceback. Import it now, while the session-wide capture stream is in place, with its
# local state in a temporary directory.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="streamflow-tests-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
import prefect  # noqa: F401

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
