"""Where the real course data lives (read in place by integration tests, never copied)."""

from __future__ import annotations

import os
from pathlib import Path

from streamflow.core.dates import DEMO_MONTHS

REPO_ROOT = Path(__file__).resolve().parents[2]
COURSE_SEEDS = Path(
    os.environ.get("STREAMFLOW_COURSE_SEEDS", REPO_ROOT.parent / "shared" / "data" / "streamflow-course" / "seeds")
)
AS_OF = dict(DEMO_MONTHS)  # month_000 → 2024-01-31, month_001 → 2024-02-29
