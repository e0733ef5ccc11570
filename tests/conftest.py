"""Shared test configuration: where the real course data lives (integration tests) and the
generated data the unit tests build on."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

# Prefect binds its console log handler to the sys.stderr of the moment its logging is set up
# (at `import prefect`). Done inside a test that captures output, the handler would keep that
# test's stream, closed afterwards, and every later Prefect log line would print a "Logging
# error" traceback. Import it now, while the session-wide capture stream is in place, with its
# local state in a temporary directory.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="streamflow-tests-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
import prefect  # noqa: F401

from tests.helpers.course import COURSE_SEEDS


@pytest.fixture(scope="session")
def course_seeds() -> Path:
    if not (COURSE_SEEDS / "month_000" / "users.csv").is_file():
        pytest.fail(f"course data not found at {COURSE_SEEDS} (set STREAMFLOW_COURSE_SEEDS)")
    return COURSE_SEEDS


# ---- generated data (unit tests never read the course data) ---------------------------
GENERATED_USERS = 2000
GENERATED_SEED = 7


@pytest.fixture(scope="session")
def generated_seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two months (as_of 2024-01-31, 2024-02-29) in the course format, from the project's generator."""
    from streamflow.seeds.generator import generate_months

    root = tmp_path_factory.mktemp("generated_seeds")
    generate_months(root, 2, GENERATED_USERS, GENERATED_SEED)
    return root


@pytest.fixture(scope="session")
def served(generated_seeds: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A small forest (40 trees) on generated month_000, serving generated month_001's features."""
    from tests.helpers.serving import build_served

    return build_served(generated_seeds, tmp_path_factory.mktemp("serving_home"))
