"""Ingest one month: validate the six CSVs, then in ONE transaction COPY them into
staging tables, upsert the live tables and stamp every snapshot for ``as_of``.
Afterwards the Feast definitions are applied and the online store materialized."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import psycopg
import sqlalchemy as sa
from psycopg import sql

from streamflow.dates import as_of_timestamp, parse_as_of
from streamflow.db.engine import get_engine, libpq_url
from streamflow.db.schema import migrate
from streamflow.ingest.validation import ValidationError, read_month, validate_month
from streamflow.schema import SOURCE_TABLES, SourceTable
from streamflow.settings import Settings

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class IngestResult:
    as_of: date
    month_dir: Path
    rows: dict[str, int] = field(default_factory=dict)
    seconds_validate: float = 0.0
    seconds_load: float = 0.0
    seconds_materialize: float = 0.0
    materialized_as_of: date | None = None


def ensure_schema(settings: Settings) -> sa.Engine:
    engine = get_engine(settings)
    migrate(engine)
    return engine


def _known_user_ids(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text("SELECT user_id FROM users")).scalars())


def _copy_into_staging(cur: psycopg.Cursor, table: SourceTable, path: Path, header: list[str]) -> int:
    stg = sql.Identifier(f"stg_{table.name}")
    cur.execute(
        sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(
            stg, sql.Identifier(table.name)
        )
    )
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in header)
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, HEADER true, NULL '')").format(stg, cols)
    with cur.copy(copy_sql) as copy, path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            copy.write(chunk)
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(stg))
    row = cur.fetchone()
    return int(row[0]) if row else 0


def _upsert_live(cur: psycopg.Cursor, table: SourceTable) -> None:
    cols = table.column_names
    updates = [c for c in cols if c != "user_id"]
    cur.execute(
        sql.SQL(
            "INSERT INTO {t} AS t ({cols}) SELECT {cols} FROM {stg} ON CONFLICT (user_id) DO UPDATE SET {upd}"
            " WHERE ({old}) IS DISTINCT FROM ({new})"  # unchanged rows are not rewritten
        ).format(
            t=sql.Identifier(table.name),
            stg=sql.Identifier(f"stg_{table.name}"),
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols),
            upd=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updates),
            old=sql.SQL(", ").join(sql.SQL("t.{c}").format(c=sql.Identifier(c)) for c in updates),
            new=sql.SQL(", ").join(sql.SQL("EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updates),
        )
    )


def _stamp_snapshot(cur: psycopg.Cursor, table: SourceTable, ts: datetime) -> None:
    assert table.snapshot_table is not None
    snap = sql.Identifier(table.snapshot_table)
    cols = table.snapshot_columns
    cur.execute(sql.SQL("DELETE FROM {} WHERE as_of = %s").format(snap), (ts,))
    cur.execute(
        sql.SQL("INSERT INTO {snap} (user_id, as_of, {cols}) SELECT user_id, %s, {cols} FROM {stg}").format(
            snap=snap,
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in cols),
            stg=sql.Identifier(f"stg_{table.name}"),
        ),
        (ts,),
    )


def ingest_month(
    month_dir: Path,
    as_of: str | date,
    settings: Settings,
    *,
    materialize: bool = True,
    progress: Progress | None = None,
) -> IngestResult:
    """Validate, load and snapshot one month; raises ValidationError (nothing written)."""
    say = progress or (lambda _msg: None)
    as_of_d = parse_as_of(as_of)
    month_dir = Path(month_dir)
    if not month_dir.is_dir():
        raise FileNotFoundError(f"month directory not found: {month_dir}")
    engine = ensure_schema(settings)

    say(f"validating {month_dir}")
    t_val = time.perf_counter()
    frames, report = read_month(month_dir)
    validate_month(frames, report, _known_user_ids(engine))
    if not report.ok:
        log.warning("event=ingest_rejected month_dir=%s as_of=%s errors=%d", month_dir, as_of_d, len(report.violations))
        raise ValidationError(report)
    headers = {name: list(df.columns) for name, df in frames.items()}
    del frames

    result = IngestResult(as_of=as_of_d, month_dir=month_dir, seconds_validate=time.perf_counter() - t_val)
    ts = as_of_timestamp(as_of_d)
    t0 = time.perf_counter()
    say(f"loading {month_dir.name} as of {as_of_d} (one transaction)")
    with psycopg.connect(libpq_url(settings)) as conn, conn.cursor() as cur:
        cur.execute("SET LOCAL synchronous_commit = on")
        for table in SOURCE_TABLES:
            t_step = time.perf_counter()
            result.rows[table.name] = _copy_into_staging(cur, table, month_dir / table.file_name, headers[table.name])
            log.debug(
                "event=staged table=%s rows=%d seconds=%.2f",
                table.name,
                result.rows[table.name],
                time.perf_counter() - t_step,
            )
        for table in SOURCE_TABLES:
            t_step = time.perf_counter()
            _upsert_live(cur, table)
            t_snap = time.perf_counter()
            if table.snapshot_table:
                _stamp_snapshot(cur, table, ts)
            log.debug(
                "event=written table=%s upsert_seconds=%.2f snapshot=%s snapshot_seconds=%.2f",
                table.name,
                t_snap - t_step,
                table.snapshot_table,
                time.perf_counter() - t_snap,
            )
        cur.execute(
            "INSERT INTO ingestions (as_of, source_dir, row_counts) VALUES (%s, %s, %s)",
            (as_of_d, str(month_dir.resolve()), json.dumps(result.rows)),
        )
        conn.commit()
    result.seconds_load = time.perf_counter() - t0
    log.info(
        "event=ingested as_of=%s month_dir=%s rows=%s seconds=%.2f",
        as_of_d,
        month_dir,
        json.dumps(result.rows),
        result.seconds_load,
    )

    if materialize:
        from streamflow.features.store import materialize_latest

        say("applying Feast definitions and materializing the online store")
        t1 = time.perf_counter()
        result.materialized_as_of = materialize_latest(settings)
        result.seconds_materialize = time.perf_counter() - t1
    return result
