"""Monthly scheduling: a served Prefect deployment that ingests the newest month folder and
then runs ``monitor_month`` on the last two snapshots.

``serve_schedules(settings, seeds_dir)`` blocks (``prefect.serve``): it registers the
deployments with the Prefect API (``PREFECT_API_URL``, e.g. the compose ``prefect`` service,
or an ephemeral local server) and executes their scheduled runs in subprocesses until
interrupted. Runs read their settings from the environment (``STREAMFLOW_*``);
``serve_schedules`` exports ``STREAMFLOW_HOME`` of the given settings so they use the same
state.

Deployments (see :func:`build_deployments`):

* ``monthly_monitoring/streamflow-monthly`` — cron ``0 6 1 * *`` (06:00 UTC on the 1st):
  ingest the newest ``month_NNN`` folder of ``seeds_dir`` (skipped if its as_of is already
  ingested; month ``k`` is as of ``start_as_of`` + k months) → monitor the last two snapshots.
* ``monitor_month/monitor-on-demand`` — no schedule: the monitor alone, for manual runs
  (``prefect deployment run monitor_month/monitor-on-demand -p as_of_cur=…``).
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.schedules import Cron
from prefect.types.entrypoint import EntrypointType

from streamflow.app.monthly import ingest_and_publish, publish_if_stale
from streamflow.core.dates import DEMO_REF_AS_OF, month_as_of, parse_as_of
from streamflow.core.errors import InputError
from streamflow.core.settings import Settings, get_settings
from streamflow.features.dataset import snapshot_dates
from streamflow.flows.monitor import emit_line, monitor_month

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DEFAULT_CRON = "0 6 1 * *"
DEFAULT_TIMEZONE = "UTC"
START_AS_OF = DEMO_REF_AS_OF  # as_of of month_000 (course convention)
PIPELINE_DEPLOYMENT = "streamflow-monthly"
MONITOR_DEPLOYMENT = "monitor-on-demand"
TAGS = ["streamflow", "monitoring"]

_MONTH_DIR = re.compile(r"^month_(\d{3,})$")


class NoMonthError(InputError, FileNotFoundError):
    """``seeds_dir`` holds no ``month_NNN`` folder."""


def newest_month(seeds_dir: str | Path, start_as_of: str | date = START_AS_OF) -> tuple[Path, date]:
    """(folder, as_of) of the ``month_NNN`` folder with the highest index."""
    root = Path(seeds_dir)
    months = [(int(m[1]), p) for p in (root.iterdir() if root.is_dir() else []) if (m := _MONTH_DIR.match(p.name))]
    months = [(i, p) for i, p in months if p.is_dir()]
    if not months:
        raise NoMonthError(f"no month_NNN folder in {root}")
    index, path = max(months)
    return path, month_as_of(parse_as_of(start_as_of), index)


@task(name="ingest_newest_month", persist_result=False, cache_policy=NO_CACHE)
def ingest_newest_month(seeds_dir: str, start_as_of: str) -> dict[str, Any]:
    """Ingest (validate → load → snapshot → materialize) the newest month, unless already there."""
    settings = get_settings()
    path, as_of = newest_month(seeds_dir, start_as_of)
    try:
        known = snapshot_dates(settings)
    except Exception:  # schema not created yet: nothing ingested
        known = []
    if as_of in known:
        emit_line(f"[Ingest] {path.name} (as_of={as_of}) already ingested: skipped")
        healed = publish_if_stale(settings)  # a crash after an earlier commit left the online store stale
        if healed is not None:
            emit_line(f"[Ingest] online store was stale: re-materialized → {healed.as_of}")
        skipped: dict[str, Any] = {"month_dir": str(path), "as_of": as_of.isoformat(), "ingested": False}
        if healed is not None:
            skipped["healed_online_store"] = str(healed.as_of)
        return skipped
    result = ingest_and_publish(path, as_of, settings, materialize=True)
    emit_line(f"[Ingest] {path.name} as_of={as_of} rows={result.rows} online={result.materialized_as_of}")
    return {"month_dir": str(path), "as_of": as_of.isoformat(), "ingested": True, "rows": result.rows}


@flow(name="monthly_monitoring")
def monthly_monitoring(
    seeds_dir: str,
    start_as_of: str = START_AS_OF,
    threshold: float | None = None,
    retrain: bool = False,
) -> dict[str, Any]:
    """Ingest the newest month folder, then monitor the last two snapshots (ref = previous)."""
    ingested = ingest_newest_month(seeds_dir, start_as_of)
    dates = snapshot_dates(get_settings())
    if len(dates) < 2:
        emit_line(f"[Monitor] skipped: needs two snapshots, the database has {[d.isoformat() for d in dates]}")
        return {"ingest": ingested, "monitor": None}
    ref, cur = dates[-2].isoformat(), dates[-1].isoformat()
    summary = monitor_month(as_of_ref=ref, as_of_cur=cur, threshold=threshold, retrain=retrain)
    return {"ingest": ingested, "monitor": summary}


def build_deployments(
    settings: Settings,
    seeds_dir: str | Path,
    *,
    cron: str = DEFAULT_CRON,
    timezone: str = DEFAULT_TIMEZONE,
    retrain: bool = False,
    start_as_of: str = START_AS_OF,
) -> list[RunnerDeployment]:
    """The deployment objects :func:`serve_schedules` serves (no API call, nothing started)."""
    pipeline = monthly_monitoring.to_deployment(
        name=PIPELINE_DEPLOYMENT,
        schedule=Cron(cron, timezone=timezone),
        parameters={
            "seeds_dir": str(Path(seeds_dir).expanduser().resolve()),
            "start_as_of": start_as_of,
            "threshold": settings.drift_threshold,
            "retrain": retrain,
        },
        description="Monthly: ingest the newest month folder, then drift-monitor the last two snapshots.",
        tags=TAGS,
        entrypoint_type=EntrypointType.MODULE_PATH,  # runs import the installed package, whatever the cwd
    )
    on_demand = monitor_month.to_deployment(
        name=MONITOR_DEPLOYMENT,
        parameters={"threshold": settings.drift_threshold, "retrain": retrain},
        description="The drift monitor alone (manual runs).",
        tags=TAGS,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    # to_deployment is sync-compatible (typed as "value or coroutine"); called from sync code it is the value
    return [cast("RunnerDeployment", pipeline), cast("RunnerDeployment", on_demand)]


def serve_schedules(
    settings: Settings,
    seeds_dir: str | Path,
    *,
    cron: str = DEFAULT_CRON,
    timezone: str = DEFAULT_TIMEZONE,
    retrain: bool = False,
) -> None:
    """Serve the deployments (blocks until Ctrl-C; schedules are paused on shutdown)."""
    from prefect import serve

    os.environ["STREAMFLOW_HOME"] = str(settings.home)
    serve(*build_deployments(settings, seeds_dir, cron=cron, timezone=timezone, retrain=retrain))
