"""Bulk writer of Feast's PostgreSQL online store: the same tables, rows and bytes Feast's own
``materialize`` writes, built in SQL and swapped in atomically.

Feast's PostgreSQL online store keeps one table per feature view, ``{project}_{view}``, with one
row per (entity, feature): ``entity_key`` (entity key serialization v3), ``feature_name``,
``value`` (a serialized ``ValueProto``), ``value_text`` (Python ``str`` of the value),
``vector_value`` (NULL), ``event_ts`` (the row's as_of) and ``created_ts`` (NULL). Feast writes
them row by row from Python (14,000,000 rows for a million users); here each view is built
by one ``INSERT … SELECT`` over the newest snapshot row of every user, with the encoders of
``db/sql/002_ingest_publish.sql``, into a fresh table indexed once. The new tables replace the
old ones — and ``feature_materializations`` records the month and the ingestion they cover —
in ONE transaction: readers (``get_online_features``, the API's mirror) see the previous month
or the new one, never a mix. Every materialization reads one exported snapshot of the
database, so all views come from the same committed state even while an ingest commits.

Equality with Feast's own writer is proven by tests (bytes of every row, and
``get_online_features`` for every user)."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date

import psycopg
from psycopg import sql

from streamflow.db.engine import libpq_url
from streamflow.faults import fault_point
from streamflow.progress import ProgressCallback, ProgressEvent, no_progress
from streamflow.schema import ENTITY, FEATURE_VIEWS, FLAG_FEATURES, FLOAT_FEATURES, INT_FEATURES
from streamflow.settings import Settings

log = logging.getLogger(__name__)

MATERIALIZE_LOCK_KEY = 0x5F12  # session advisory lock: one materialization at a time
NEW_SUFFIX = "__sf_new"
APP_NAME = "streamflow-materialize"
KNOWN_COLUMNS = {"entity_key", "feature_name", "value", "value_text", "value_num", "vector_value", "event_ts",
                 "created_ts"}  # fmt: skip


class MaterializeError(RuntimeError):
    """A clear, one-line failure of a materialization; the online store is unchanged."""


@dataclass
class ViewWrite:
    view: str
    table: str
    rows: int
    seconds: float


@dataclass
class BulkWriteResult:
    as_of: date | None
    ingestion_id: int | None
    rows: int
    views: list[ViewWrite] = field(default_factory=list)
    seconds: float = 0.0


def online_table(settings: Settings, view: str) -> str:
    """Feast's table name for a feature view (no feature view versioning)."""
    return f"{settings.feast_project}_{view}"


def _feature_expr(feature: str) -> tuple[sql.Composable, sql.Composable, sql.Composable]:
    """(value bytes, value_text, value_num) of ``s.<feature>`` as Feast writes them; NULL
    features are an empty ValueProto (zero bytes) with NULL text, as Feast writes None."""
    col = sql.SQL("s.{}").format(sql.Identifier(feature))
    if feature in INT_FEATURES:
        enc, text = "streamflow_value_int64", sql.SQL("{}::text").format(col)
    elif feature in FLOAT_FEATURES:
        enc, text = "streamflow_value_double", sql.SQL("streamflow_py_float_text({})").format(col)
    elif feature in FLAG_FEATURES:
        enc, text = "streamflow_value_bool", sql.SQL("streamflow_py_bool_text({})").format(col)
    else:
        enc, text = "streamflow_value_string", col
    value = sql.SQL("coalesce({}({}), '\\x'::bytea)").format(sql.SQL(enc), col)
    if feature in FLAG_FEATURES:
        num = sql.SQL("CASE WHEN {c} THEN 1.0::float8 WHEN NOT {c} THEN 0.0::float8 END").format(c=col)
    elif feature in INT_FEATURES or feature in FLOAT_FEATURES:
        num = sql.SQL("{}::float8").format(col)
    else:
        num = sql.SQL("NULL::float8")
    return value, text, num


def fill_sql(snapshot_table: str, features: list[str], target: str, columns: list[str]) -> sql.Composed:
    """INSERT … SELECT of one view: the newest snapshot row of every user, one output row per feature."""
    rows = []
    for f in features:
        value, text, num = _feature_expr(f)
        rows.append(sql.SQL("({}, {}, {}, {})").format(sql.Literal(f), value, text, num))
    out_cols = [c for c in ("entity_key", "feature_name", "value", "value_text", "value_num", "vector_value",
                            "event_ts", "created_ts") if c in columns]  # fmt: skip
    exprs = {
        "entity_key": sql.SQL("streamflow_entity_key({}, s.{})").format(sql.Literal(ENTITY), sql.Identifier(ENTITY)),
        "feature_name": sql.SQL("f.name"),
        "value": sql.SQL("f.value"),
        "value_text": sql.SQL("f.text"),
        "value_num": sql.SQL("f.num"),
        "vector_value": sql.SQL("NULL"),
        # Feast binds a naive UTC datetime, read in the session's time zone: the same here.
        "event_ts": sql.SQL("(s.as_of AT TIME ZONE 'UTC')::timestamp::timestamptz"),
        "created_ts": sql.SQL("NULL"),
    }
    feats = sql.SQL(", ").join(sql.Identifier(f) for f in features)
    return sql.SQL(
        "INSERT INTO {target} ({cols}) SELECT {exprs}"
        " FROM (SELECT DISTINCT ON ({entity}) {entity}, as_of, {feats} FROM {snap}"
        "       ORDER BY {entity}, as_of DESC) AS s"
        " CROSS JOIN LATERAL (VALUES {rows}) AS f(name, value, text, num)"
    ).format(
        target=sql.Identifier(target),
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in out_cols),
        exprs=sql.SQL(", ").join(exprs[c] for c in out_cols),
        entity=sql.Identifier(ENTITY),
        feats=feats,
        snap=sql.Identifier(snapshot_table),
        rows=sql.SQL(", ").join(rows),
    )


_INDEX_DEF = re.compile(r"^CREATE (UNIQUE )?INDEX (\S+) ON (\S+) (USING .*)$")


def _table_layout(cur: psycopg.Cursor, table: str) -> tuple[list[str], list[tuple[str, str]], str | None]:
    """Columns, (index name, 'USING …' clause) of non-constraint indexes, and the primary key name."""
    cur.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum",
        (f"public.{table}",),
    )
    columns = [r[0] for r in cur.fetchall()]
    cur.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'p'", (f"public.{table}",)
    )
    row = cur.fetchone()
    pkey = row[0] if row else None
    cur.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = 'public' AND i.tablename = %s"
        " AND i.indexname IS DISTINCT FROM %s ORDER BY i.indexname",
        (table, pkey),
    )
    indexes = []
    for name, definition in cur.fetchall():
        m = _INDEX_DEF.match(definition)
        if not m or m.group(1):
            raise MaterializeError(f"online table {table}: unexpected index {definition!r}")
        indexes.append((name, m.group(4)))
    return columns, indexes, pkey


def _drop_leftovers(cur: psycopg.Cursor, tables: list[str]) -> None:
    for t in tables:
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(t + NEW_SUFFIX)))


def _build_view(
    settings: Settings,
    snapshot_id: str,
    view: str,
    progress: ProgressCallback,
    halfway: Callable[[], None],
) -> ViewWrite:
    """Fill and index ``{table}__sf_new`` in a transaction that sees the exported snapshot."""
    snapshot_table, features = FEATURE_VIEWS[view]
    table = online_table(settings, view)
    new = table + NEW_SUFFIX
    t0 = time.perf_counter()
    with psycopg.connect(libpq_url(settings), application_name=APP_NAME) as conn, conn.cursor() as cur:
        cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        cur.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))
        cur.execute("SELECT set_config('maintenance_work_mem', %s, true)", (settings.materialize_maintenance_work_mem,))
        cur.execute("SELECT set_config('extra_float_digits', '1', true)")  # shortest exact float text
        columns, indexes, pkey = _table_layout(cur, table)
        unknown = set(columns) - KNOWN_COLUMNS
        if unknown or pkey is None:
            raise MaterializeError(
                f"online table {table} has a layout this writer does not know (columns {sorted(unknown)}, "
                f"primary key {pkey}); set STREAMFLOW_MATERIALIZE_WRITER=feast"
            )
        cur.execute(
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(sql.Identifier(new), sql.Identifier(table))
        )
        total_expected = None
        progress(ProgressEvent(f"materialize {view}", 0, total_expected))
        cur.execute(fill_sql(snapshot_table, features, new, columns))
        rows = cur.rowcount
        progress(ProgressEvent(f"materialize {view}", rows, rows))
        halfway()
        cur.execute(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY (entity_key, feature_name)").format(
                sql.Identifier(new), sql.Identifier(pkey + NEW_SUFFIX)
            )
        )
        for name, using in indexes:
            cur.execute(
                sql.SQL("CREATE INDEX {} ON {} ").format(sql.Identifier(name + NEW_SUFFIX), sql.Identifier(new))
                + sql.SQL(using)  # type: ignore[arg-type]  # Feast's own index definition, read from the catalog
            )
        cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(new)))
        conn.commit()
    return ViewWrite(view=view, table=table, rows=rows, seconds=time.perf_counter() - t0)


def _swap(cur: psycopg.Cursor, settings: Settings) -> None:
    for view in FEATURE_VIEWS:
        table = online_table(settings, view)
        new = table + NEW_SUFFIX
        _, indexes, pkey = _table_layout(cur, new)
        cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
        cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(new), sql.Identifier(table)))
        if pkey:
            cur.execute(
                sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                    sql.Identifier(table), sql.Identifier(pkey), sql.Identifier(pkey.removesuffix(NEW_SUFFIX))
                )
            )
        for name, _ in indexes:
            cur.execute(
                sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(name), sql.Identifier(name.removesuffix(NEW_SUFFIX))
                )
            )


def _lock(cur: psycopg.Cursor, settings: Settings) -> None:
    timeout = settings.materialize_lock_timeout_seconds
    cur.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(timeout * 1000)}ms" if timeout > 0 else "1ms",))
    try:
        cur.execute("SELECT pg_advisory_lock(%s)", (MATERIALIZE_LOCK_KEY,))
    except psycopg.errors.LockNotAvailable as exc:
        raise MaterializeError(
            f"another materialization is running; gave up after waiting {timeout:g} s "
            "(STREAMFLOW_MATERIALIZE_LOCK_TIMEOUT_SECONDS); the online store is unchanged"
        ) from exc


def write_online_store(settings: Settings, progress: ProgressCallback = no_progress) -> BulkWriteResult:
    """Rebuild every online table from the snapshots and swap them in atomically, recording the
    materialization (as_of and covered ingestion) in the same transaction."""
    t0 = time.perf_counter()
    tables = [online_table(settings, v) for v in FEATURE_VIEWS]
    url = libpq_url(settings)
    with psycopg.connect(url, application_name=APP_NAME, autocommit=True) as lock_conn:
        lock_cur = lock_conn.cursor()
        _lock(lock_cur, settings)
        try:
            _drop_leftovers(lock_cur, tables)
            with psycopg.connect(url, application_name=APP_NAME) as snap_conn, snap_conn.cursor() as snap:
                snap.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                snap.execute("SELECT pg_export_snapshot()")
                row = snap.fetchone()
                assert row is not None
                snapshot_id = str(row[0])
                snap.execute("SELECT max(id) FROM ingestions")
                row = snap.fetchone()
                ingestion_id = int(row[0]) if row and row[0] is not None else None
                snap.execute(
                    sql.SQL("SELECT max(as_of) FROM {}").format(sql.Identifier(next(iter(FEATURE_VIEWS.values()))[0]))
                )
                row = snap.fetchone()
                latest = row[0].date() if row and row[0] is not None else None
                results: list[ViewWrite] = []
                # Every worker imports the snapshot while the exporting transaction is open.
                ordered = sorted(FEATURE_VIEWS, key=lambda v: -len(FEATURE_VIEWS[v][1]))
                first_done = threading.Lock()
                halfway_seen: list[bool] = []

                def halfway() -> None:
                    with first_done:
                        if halfway_seen:
                            return
                        halfway_seen.append(True)
                    fault_point("during_materialize", settings)

                with ThreadPoolExecutor(max_workers=settings.materialize_workers) as pool:
                    futures = [pool.submit(_build_view, settings, snapshot_id, v, progress, halfway) for v in ordered]
                    results = [fut.result() for fut in futures]
                snap_conn.rollback()
            fault_point("before_swap", settings)
            rows = sum(r.rows for r in results)
            with psycopg.connect(url, application_name=APP_NAME) as conn, conn.cursor() as cur:
                progress(ProgressEvent("swap", message="swapping the new online tables in"))
                timeout = settings.materialize_lock_timeout_seconds
                cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{int(timeout * 1000)}ms",))
                try:
                    _swap(cur, settings)
                except psycopg.errors.LockNotAvailable as exc:
                    raise MaterializeError(
                        f"readers of the online store held it for more than {timeout:g} s; the online store is "
                        "unchanged (STREAMFLOW_MATERIALIZE_LOCK_TIMEOUT_SECONDS)"
                    ) from exc
                cur.execute(
                    "INSERT INTO feature_materializations (as_of, ingestion_id, writer, rows_written, seconds)"
                    " VALUES (%s, %s, 'bulk', %s, %s)",
                    (latest, ingestion_id, rows, time.perf_counter() - t0),
                )
                conn.commit()
        finally:
            lock_cur.execute("SELECT pg_advisory_unlock(%s)", (MATERIALIZE_LOCK_KEY,))
    result = BulkWriteResult(
        as_of=latest, ingestion_id=ingestion_id, rows=rows, views=results, seconds=time.perf_counter() - t0
    )
    log.info(
        "event=online_store_written writer=bulk as_of=%s ingestion_id=%s rows=%d seconds=%.2f views=%s",
        latest, ingestion_id, rows, result.seconds,
        ",".join(f"{r.view}:{r.rows}:{r.seconds:.1f}s" for r in results),
    )  # fmt: skip
    return result
