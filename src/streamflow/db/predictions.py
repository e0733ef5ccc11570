"""The prediction log's table (``predictions``, migration 011) as seen from the CLI: what it
holds (``streamflow status``) and its retention (``streamflow predictions prune``).

The table is partitioned by ``served_at``, one partition per UTC day named
``predictions_pYYYYMMDD`` (created on demand by the SQL function
``streamflow_prediction_partition(day)``, which the API's writer calls). Pruning drops whole
partitions: no DELETE, no bloat, no vacuum. The writer itself lives in
``streamflow.serving.prediction_log``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from streamflow.core.errors import InputError, OperationalError
from streamflow.core.settings import Settings

log = logging.getLogger(__name__)

TABLE = "predictions"
PARTITION_PREFIX = "predictions_p"
_PARTITION_NAME = re.compile(r"^predictions_p(\d{8})$")
# The columns the writer COPYs, in order.
COLUMNS: tuple[str, ...] = (
    "request_id",
    "served_at",
    "user_id",
    "model_name",
    "model_version",
    "as_of",
    "churn_probability",
    "prediction",
)


def partition_name(day: date) -> str:
    return f"{PARTITION_PREFIX}{day:%Y%m%d}"


def partition_day(name: str) -> date | None:
    """The UTC day a partition holds, from its name (None: not one of ours)."""
    m = _PARTITION_NAME.match(name)
    if m is None:
        return None
    digits = m.group(1)
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


def _engine(settings: Settings) -> sa.Engine:
    from streamflow.db.engine import get_engine
    from streamflow.db.schema import migrate

    engine = get_engine(settings)
    migrate(engine)
    return engine


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat() if ts is not None else None


def prediction_stats(settings: Settings) -> dict[str, Any]:
    """``{"rows": N, "by_model_version": {version: rows}, "first": ts, "last": ts}`` (UTC ISO
    timestamps of the first and last prediction, None when the log is empty). Versions of another
    registered model than ``settings.model_name`` are keyed ``name:version``."""
    query = sa.text(
        "SELECT model_name, model_version, count(*) AS n, min(served_at) AS first, max(served_at) AS last "
        "FROM predictions GROUP BY model_name, model_version ORDER BY model_name, model_version"
    )
    by_version: dict[str, int] = {}
    first: datetime | None = None
    last: datetime | None = None
    with _engine(settings).connect() as conn:
        for r in conn.execute(query):
            key = str(r.model_version) if r.model_name == settings.model_name else f"{r.model_name}:{r.model_version}"
            by_version[key] = int(r.n)
            first = r.first if first is None or r.first < first else first
            last = r.last if last is None or r.last > last else last
    return {"rows": sum(by_version.values()), "by_model_version": by_version, "first": _iso(first), "last": _iso(last)}


@dataclass(frozen=True)
class PrunedPartition:
    name: str
    day: date
    rows: int


@dataclass
class PruneResult:
    older_than_days: int
    cutoff: date  # predictions served before 00:00 UTC of this day are (or would be) deleted
    dry_run: bool
    partitions: list[PrunedPartition] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "older_than_days": self.older_than_days,
            "cutoff": self.cutoff.isoformat(),
            "dry_run": self.dry_run,
            "rows": self.rows,
            "partitions": [{"name": p.name, "day": p.day.isoformat(), "rows": p.rows} for p in self.partitions],
        }


def prune_predictions(
    settings: Settings, older_than_days: int, *, dry_run: bool = False, now: datetime | None = None
) -> PruneResult:
    """Delete the predictions served before 00:00 UTC of the day ``older_than_days`` days before
    today (UTC) by dropping their daily partitions, all in one transaction. A prediction younger
    than ``older_than_days`` days is never deleted; one up to a day older may be kept (whole days
    go). ``dry_run``: report what would go, change nothing. Waits at most
    ``prediction_log_prune_lock_timeout_seconds`` for the API's writers."""
    if older_than_days < 0:
        raise InputError(f"--older-than must be a number of days >= 0, got {older_than_days}")
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    try:
        cutoff = today - timedelta(days=older_than_days)
    except OverflowError:
        raise InputError(f"--older-than {older_than_days} days reaches before year 1") from None
    result = PruneResult(older_than_days=older_than_days, cutoff=cutoff, dry_run=dry_run)
    lock_ms = int(settings.prediction_log_prune_lock_timeout_seconds * 1000)
    try:
        with _engine(settings).begin() as conn:
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {lock_ms}")
            names = conn.execute(
                sa.text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'public.predictions'::regclass ORDER BY c.relname"
                )
            ).scalars()
            old = [(str(n), d) for n in names if (d := partition_day(str(n))) is not None and d < cutoff]
            for name, day in old:  # names are ours (checked by the pattern): safe to quote as identifiers
                rows = conn.exec_driver_sql(f'SELECT count(*) FROM "{name}"').scalar_one()
                result.partitions.append(PrunedPartition(name, day, int(rows)))
            if not dry_run:
                for p in result.partitions:
                    conn.exec_driver_sql(f'DROP TABLE "{p.name}"')
    except sa.exc.OperationalError as exc:
        if "lock timeout" in str(exc) or "LockNotAvailable" in type(exc.orig).__name__:
            raise OperationalError(
                f"could not lock the prediction log within {settings.prediction_log_prune_lock_timeout_seconds:g} s "
                "(the API is writing to it); nothing was deleted, run the prune again"
            ) from exc
        raise
    log.info(
        "event=predictions_pruned older_than_days=%d cutoff=%s partitions=%d rows=%d dry_run=%s",
        older_than_days,
        cutoff,
        len(result.partitions),
        result.rows,
        dry_run,
    )
    return result
