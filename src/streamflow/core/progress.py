"""Progress of long stages, reported by library code to whoever listens (the CLI renders it
with rich; the API and flows pass nothing). A leaf module: no rich import here, so library code
paths that the API imports stay free of terminal rendering."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a long stage.

    ``task`` names a unit of work ("load subscriptions", "materialize usage_agg_30d_fv");
    ``done`` is the number of rows of that task finished so far (monotonic), ``total`` its size
    when known. A plain message (no rows) has ``total`` None and ``done`` 0. ``unit`` says what
    is counted when it is not rows (e.g. the trees of a forest)."""

    task: str
    done: int = 0
    total: int | None = None
    message: str | None = None
    unit: str = "rows"


ProgressCallback = Callable[[ProgressEvent], None]


def no_progress(_event: ProgressEvent) -> None:
    """The default listener: ignores everything."""
