"""Ingest one month: read and validate the six CSVs once, then — in ONE transaction holding the
ingest lock — COPY the validated, typed columns into staging tables, write the live tables
(newer months win) and stamp every snapshot for ``as_of``.

Publishing the month to the online store is not done here (ingest does not depend on the
feature store): see ``streamflow.app.monthly.ingest_and_publish``."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import sqlalchemy as sa
from psycopg import sql

from streamflow.core.data_model import SOURCE_TABLES, SourceTable
from streamflow.core.dates import as_of_timestamp, parse_as_of
from streamflow.core.errors import InputError
from streamflow.core.faults import fault_point
from streamflow.core.progress import ProgressCallback, ProgressEvent, no_progress
from streamflow.core.settings import Settings
from streamflow.db.engine import get_engine, libpq_url
from streamflow.db.schema import migrate
from streamflow.ingest.reader import ParsedFile
from streamflow.ingest.validation import ValidationError, limits_from, read_month, validate_month

log = logging.getLogger(__name__)

INGEST_LOCK_KEY = 0x5F11  # pg_advisory_xact_lock key of the ingest transaction (0x5F10: migrations)
APP_NAME_PREFIX = "streamflow-ingest"
COPY_BATCH_ROWS = 200_000


class IngestError(InputError, RuntimeError):
    """A clear, one-line failure of an ingest (bad input the database refused, another ingest
    holding the lock). Nothing was written."""


class IngestLockTimeout(IngestError):
    """Another ingest held the lock longer than ``ingest_lock_timeout_seconds``."""


@dataclass
class IngestResult:
    as_of: date
    month_dir: Path
    rows: dict[str, int] = field(default_factory=dict)
    ingestion_id: int | None = None
    live: dict[str, dict[str, int]] = field(default_factory=dict)  # table -> inserted/updated/kept_newer
    seconds_validate: float = 0.0
    seconds_load: float = 0.0


def ensure_schema(settings: Settings) -> sa.Engine:
    engine = get_engine(settings)
    migrate(engine)
    return engine


# ---- validation (read once) ---------------------------------------------------------------
def _known_users_lookup(settings: Settings) -> Callable[[list[str]], set[str]]:
    def lookup(ids: list[str]) -> set[str]:
        with psycopg.connect(libpq_url(settings)) as conn:
            rows = conn.execute("SELECT user_id FROM users WHERE user_id = ANY(%s)", (ids,)).fetchall()
        return {r[0] for r in rows}

    return lookup


def read_and_validate(
    month_dir: Path, settings: Settings, progress: ProgressCallback = no_progress
) -> dict[str, ParsedFile]:
    """Read each file once and validate it; raises ValidationError listing every violation."""
    progress(ProgressEvent("validate", message=f"reading and validating {month_dir}"))
    files, report = read_month(month_dir, limits_from(settings))
    validate_month(files, report, _known_users_lookup(settings))
    if not report.ok:
        log.warning("event=ingest_rejected month_dir=%s errors=%d", month_dir, len(report.violations))
        raise ValidationError(report)
    for f in files.values():
        progress(ProgressEvent(f"validate {f.file_name}", f.n_rows, f.n_rows))
    return files


# ---- the lock ---------------------------------------------------------------------------------
def _lock_holder(settings: Settings) -> str:
    """Who holds the ingest lock (application_name of its connection), best effort."""
    try:
        with psycopg.connect(libpq_url(settings), connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT a.application_name, a.pid, extract(epoch FROM now() - a.xact_start)::int"
                " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.granted AND l.objid = %s LIMIT 1",
                (INGEST_LOCK_KEY,),
            ).fetchone()
    except psycopg.Error:
        return "another ingest"
    if not row:
        return "another ingest"
    name, pid, seconds = row
    what = str(name).removeprefix(APP_NAME_PREFIX).strip() or "?"
    return f"another ingest ({what}, pid {pid}, running for {seconds} s)"


def _acquire_ingest_lock(cur: psycopg.Cursor, settings: Settings) -> None:
    timeout = settings.ingest_lock_timeout_seconds
    if timeout <= 0:
        cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (INGEST_LOCK_KEY,))
        row = cur.fetchone()
        if not (row and row[0]):
            raise IngestLockTimeout(f"{_lock_holder(settings)} is running; not waiting (lock timeout 0)")
        return
    cur.execute("SELECT current_setting('lock_timeout')")
    previous = cur.fetchone()
    cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(timeout * 1000)}ms",))
    try:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (INGEST_LOCK_KEY,))
    except psycopg.errors.LockNotAvailable as exc:
        raise IngestLockTimeout(
            f"{_lock_holder(settings)} is running; gave up after waiting {timeout:g} s "
            "(STREAMFLOW_INGEST_LOCK_TIMEOUT_SECONDS); nothing was written"
        ) from exc
    cur.execute("SELECT set_config('lock_timeout', %s, true)", (previous[0] if previous else "0",))


# ---- load -------------------------------------------------------------------------------------
# Every table a month writes is built fresh and indexed once (a sorted index build costs a
# fraction of a million index insertions), then swapped in at the end of the transaction:
# snapshot months are partitions of their snapshot table, live tables are rebuilt as
# "previous live rows merged with this month, newer as_of wins".
def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def partition_name(snapshot_table: str, as_of: date) -> str:
    """The partition of ``snapshot_table`` holding month ``as_of`` (see 002_ingest_publish.sql)."""
    return f"{snapshot_table}_{as_of:%Y%m%d}"


def _new_name(name: str) -> str:
    return f"{name}__new"


def _arrow_csv_copy(
    cur: psycopg.Cursor, target: str, columns: list[str], data: pa.Table, task: str, progress: ProgressCallback
) -> None:
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, NULL '')").format(
        _ident(target), sql.SQL(", ").join(_ident(c) for c in columns)
    )
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    done = 0
    with cur.copy(copy_sql) as copy:
        for batch in data.to_batches(max_chunksize=COPY_BATCH_ROWS):
            buf = io.BytesIO()
            pacsv.write_csv(batch, buf, options)
            copy.write(buf.getbuffer())
            done += batch.num_rows
            progress(ProgressEvent(task, done, data.num_rows))


def _copy_target(table: SourceTable, as_of: date) -> str:
    if table.snapshot_table is None:
        return f"stg_{table.name}"
    return _new_name(partition_name(table.snapshot_table, as_of))


def _copy_month_file(cur: psycopg.Cursor, f: ParsedFile, as_of: date, progress: ProgressCallback) -> str:
    """COPY the validated, typed columns of ``f`` into a fresh table: the month's new snapshot
    partition (not attached yet), or a temporary staging table for ``users``. Returns its name."""
    table = f.table
    cols = table.column_names
    data = pa.table({c: f.typed[c] for c in cols})
    target = _copy_target(table, as_of)
    if table.snapshot_table is None:
        cur.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(
                _ident(target), _ident(table.name)
            )
        )
    else:
        cur.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL EXCLUDING INDEXES)").format(
                _ident(target), _ident(table.snapshot_table)
            )
        )
        ts = sql.Literal(as_of_timestamp(as_of))
        # The CHECK lets ATTACH PARTITION skip its validation scan; the default fills as_of.
        cur.execute(
            sql.SQL(
                "ALTER TABLE {t} ADD CONSTRAINT {c} CHECK (as_of = {ts}), ALTER COLUMN as_of SET DEFAULT {ts}"
            ).format(t=_ident(target), c=_ident(f"{partition_name(table.snapshot_table, as_of)}_month"), ts=ts)
        )
    _arrow_csv_copy(cur, target, cols, data, f"load {table.name}", progress)
    if table.snapshot_table is not None:
        cur.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN as_of DROP DEFAULT").format(_ident(target)))
    return target


def _build_live(cur: psycopg.Cursor, table: SourceTable, source: str, as_of: date) -> dict[str, int]:
    """The new live table: this month's rows, except where the live table holds a newer as_of,
    plus the previous live rows of users absent from this month. Returns row counts."""
    cols = table.column_names
    new = _new_name(table.name)
    listed = sql.SQL(", ").join(_ident(c) for c in cols)
    s_listed = sql.SQL(", ").join(sql.SQL("s.{}").format(_ident(c)) for c in cols)
    t_listed = sql.SQL(", ").join(sql.SQL("t.{}").format(_ident(c)) for c in cols)
    cur.execute(
        sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL EXCLUDING INDEXES)").format(_ident(new), _ident(table.name))
    )
    params = {"as_of": as_of}
    cur.execute(
        sql.SQL(
            "INSERT INTO {new} ({cols}, as_of)"
            " SELECT {s_cols}, %(as_of)s::date FROM {src} AS s"
            "  LEFT JOIN {live} AS t ON t.user_id = s.user_id AND t.as_of > %(as_of)s::date"
            "  WHERE t.user_id IS NULL"
            " UNION ALL"  # (joins, not OR-ed subqueries: hash joins, never a subplan per row)
            " SELECT {t_cols}, t.as_of FROM {live} AS t"
            "  LEFT JOIN {src} AS s ON s.user_id = t.user_id"
            "  WHERE s.user_id IS NULL OR t.as_of > %(as_of)s::date"
        ).format(
            new=_ident(new), cols=listed, s_cols=s_listed, t_cols=t_listed, src=_ident(source), live=_ident(table.name)
        ),
        params,
    )
    total = cur.rowcount
    cur.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY (user_id)").format(_ident(new), _ident(f"{new}_pkey"))
    )
    cur.execute(sql.SQL("SELECT count(*) FILTER (WHERE as_of > %(as_of)s::date) FROM {}").format(_ident(new)), params)
    row = cur.fetchone()
    return {"rows": total, "kept_newer": int(row[0]) if row else 0}


def _index_partition(cur: psycopg.Cursor, snapshot_table: str, as_of: date) -> None:
    new = _new_name(partition_name(snapshot_table, as_of))
    cur.execute(
        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY (user_id, as_of)").format(
            _ident(new), _ident(f"{new}_pkey")
        )
    )


def _swap_in(cur: psycopg.Cursor, as_of: date) -> None:
    """Replace the live tables and the month's snapshot partitions by the new ones (catalog
    operations only: the exclusive locks they take are held for the commit's moment)."""
    ts = as_of_timestamp(as_of)
    for table in SOURCE_TABLES:
        new = _new_name(table.name)
        cur.execute(sql.SQL("DROP TABLE {}").format(_ident(table.name)))
        cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(_ident(new), _ident(table.name)))
        cur.execute(
            sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                _ident(table.name), _ident(f"{new}_pkey"), _ident(f"{table.name}_pkey")
            )
        )
        if table.snapshot_table is None:
            continue
        part = partition_name(table.snapshot_table, as_of)
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_ident(part)))
        cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(_ident(_new_name(part)), _ident(part)))
        cur.execute(
            sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                _ident(part), _ident(f"{_new_name(part)}_pkey"), _ident(f"{part}_pkey")
            )
        )
        cur.execute(
            sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                _ident(table.snapshot_table), _ident(part), sql.Literal(ts)
            )
        )
    for table in SOURCE_TABLES:
        cur.execute(sql.SQL("ANALYZE {}").format(_ident(table.name)))
        if table.snapshot_table:
            cur.execute(sql.SQL("ANALYZE {}").format(_ident(partition_name(table.snapshot_table, as_of))))


_COPY_CONTEXT = re.compile(r"COPY (\w+), line (\d+)(?:, column (\w+))?")


def _explain_db_error(exc: psycopg.Error, files: dict[str, ParsedFile], targets: dict[str, str]) -> str:
    """One line naming file, line and column of a database error (PostgreSQL refused a value
    validation let through: a bug, but still reported as bad input, never a traceback)."""
    diag = exc.diag
    primary = (diag.message_primary or str(exc)).strip().splitlines()[0]
    context = diag.context or ""
    m = _COPY_CONTEXT.search(context)
    if m and targets.get(m.group(1)) in files:
        f = files[targets[m.group(1)]]
        line = f.line_of(int(m.group(2)) - 1)
        column = f" column '{m.group(3)}'" if m.group(3) else ""
        return f"{f.file_name}{column}, line {line}: the database refused the value: {primary}"
    table = diag.table_name or "?"
    column = f" column '{diag.column_name}'" if diag.column_name else ""
    name = targets.get(table, table.removesuffix("__new"))
    file = files[name].file_name if name in files else table
    return f"{file}{column}: the database refused the month: {primary}"


def load_month(
    files: dict[str, ParsedFile],
    month_dir: Path,
    as_of: date,
    settings: Settings,
    progress: ProgressCallback = no_progress,
) -> IngestResult:
    """One transaction under the ingest lock: staging COPY → live tables → snapshots → ingestions."""
    result = IngestResult(as_of=as_of, month_dir=month_dir)
    app = f"{APP_NAME_PREFIX} {month_dir.name} as of {as_of}"[:63]
    t0 = time.perf_counter()
    targets: dict[str, str] = {}
    try:
        with psycopg.connect(libpq_url(settings), application_name=app) as conn, conn.cursor() as cur:
            progress(ProgressEvent("lock", message="waiting for the ingest lock"))
            _acquire_ingest_lock(cur, settings)
            sources: dict[str, str] = {}
            for i, table in enumerate(SOURCE_TABLES):
                t_step = time.perf_counter()
                targets[_copy_target(table, as_of)] = table.name
                sources[table.name] = _copy_month_file(cur, files[table.name], as_of, progress)
                result.rows[table.name] = files[table.name].n_rows
                log.debug(
                    "event=staged table=%s rows=%d seconds=%.2f",
                    table.name,
                    result.rows[table.name],
                    time.perf_counter() - t_step,
                )
                if i == 0:
                    fault_point("during_copy", settings)
            for table in SOURCE_TABLES:
                t_step = time.perf_counter()
                n = result.rows[table.name]
                progress(ProgressEvent(f"write {table.name}", 0, n))
                if table.snapshot_table:
                    _index_partition(cur, table.snapshot_table, as_of)
                t_live = time.perf_counter()
                result.live[table.name] = _build_live(cur, table, sources[table.name], as_of)
                progress(ProgressEvent(f"write {table.name}", n, n))
                log.debug(
                    "event=written table=%s live=%s snapshot_index_seconds=%.2f live_seconds=%.2f",
                    table.name,
                    json.dumps(result.live[table.name]),
                    t_live - t_step,
                    time.perf_counter() - t_live,
                )
            t_swap = time.perf_counter()
            _swap_in(cur, as_of)
            log.debug("event=swapped_in as_of=%s seconds=%.2f", as_of, time.perf_counter() - t_swap)
            cur.execute(
                "INSERT INTO ingestions (as_of, source_dir, row_counts) VALUES (%s, %s, %s) RETURNING id",
                (as_of, str(month_dir.resolve()), json.dumps(result.rows)),
            )
            row = cur.fetchone()
            result.ingestion_id = int(row[0]) if row else None
            fault_point("before_commit", settings)
            conn.commit()
    except IngestError:
        raise
    except (psycopg.errors.DataError, psycopg.errors.IntegrityError) as exc:
        raise IngestError(_explain_db_error(exc, files, targets) + "; nothing was written") from exc
    result.seconds_load = time.perf_counter() - t0
    kept = {t: v["kept_newer"] for t, v in result.live.items() if v["kept_newer"]}
    if kept:
        log.info("event=live_rows_kept_newer as_of=%s rows=%s", as_of, json.dumps(kept))
    return result


def ingest_month(
    month_dir: Path | str,
    as_of: str | date,
    settings: Settings,
    *,
    progress: ProgressCallback | None = None,
) -> IngestResult:
    """Validate, load and snapshot one month (one transaction, ingest lock held).

    Raises ValidationError (bad input), IngestLockTimeout (another ingest held the lock too
    long) or IngestError (the database refused the data): nothing is written in any of them.
    Does not touch the online store: ``streamflow.app.monthly.ingest_and_publish`` does both."""
    emit = progress or no_progress
    as_of_d = parse_as_of(as_of)
    month_dir = Path(month_dir)
    if not month_dir.is_dir():
        raise FileNotFoundError(f"month directory not found: {month_dir}")
    ensure_schema(settings)
    t_val = time.perf_counter()
    files = read_and_validate(month_dir, settings, emit)
    seconds_validate = time.perf_counter() - t_val
    result = load_month(files, month_dir, as_of_d, settings, emit)
    result.seconds_validate = seconds_validate
    log.info(
        "event=ingested as_of=%s month_dir=%s ingestion_id=%s rows=%s validate_seconds=%.2f load_seconds=%.2f",
        as_of_d,
        month_dir,
        result.ingestion_id,
        json.dumps(result.rows),
        seconds_validate,
        result.seconds_load,
    )
    return result
