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
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date

import psycopg
from psycopg import sql

from streamflow.core.data_model import ENTITY, FEATURE_VIEWS, FLAG_FEATURES, FLOAT_FEATURES, INT_FEATURES, SOURCE_TABLES
from streamflow.core.errors import OperationalError
from streamflow.core.faults import fault_point
from streamflow.core.progress import ProgressCallback, ProgressEvent, no_progress
from streamflow.core.settings import Settings
from streamflow.db.engine import libpq_url

log = logging.getLogger(__name__)

MATERIALIZE_LOCK_KEY = 0x5F12  # session advisory lock: one materialization at a time
NEW_SUFFIX = "__sf_new"
APP_NAME = "streamflow-materialize"
KNOWN_COLUMNS = {"entity_key", "feature_name", "value", "value_text", "value_num", "vector_value", "event_ts",
                 "created_ts"}  # fmt: skip


class MaterializeError(OperationalError, RuntimeError):
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


def _le4(length: sql.Composable) -> sql.Composable:
    """Little-endian uint32 of an integer expression."""
    return sql.SQL(
        "set_byte(set_byte(set_byte(set_byte('\\x00000000'::bytea, 0, ({n}) & 255), 1, (({n}) >> 8) & 255),"
        " 2, (({n}) >> 16) & 255), 3, ({n}) >> 24)"
    ).format(n=length)


def entity_key_expr(column: sql.Composable) -> sql.Composable:
    """Feast's entity key, serialization v3, for one STRING join key ``user_id``:
    <u32 1><u32 STRING=2><u32 len(name)><name><u32 STRING=2><u32 len(value)><value>."""
    name = ENTITY.encode()
    prefix = (
        struct.pack("<III", 1, 2, len(name)) + name + struct.pack("<I", 2)
    ).hex()  # constant part, computed here once
    utf8 = sql.SQL("convert_to({}, 'UTF8')").format(column)
    return sql.SQL("{prefix}::bytea || {le4} || {utf8}").format(
        prefix=sql.Literal("\\x" + prefix), le4=_le4(sql.SQL("octet_length({})").format(utf8)), utf8=utf8
    )


def _value_expr(feature: str, col: sql.Composable) -> tuple[sql.Composable, sql.Composable, sql.Composable]:
    """(value bytes, value_text, value_num) as Feast writes them: ``ValueProto.SerializeToString()``
    (oneof members are serialized even when 0/false/""), ``str(value)``, the number. A NULL
    feature is an empty ValueProto (zero bytes) with NULL text, as Feast writes None."""
    if feature in INT_FEATURES:  # field 4, varint
        value = sql.SQL(
            "CASE WHEN {c} IS NULL THEN '\\x'::bytea WHEN {c} >= 0 AND {c} < 128"
            " THEN set_byte('\\x2000'::bytea, 1, {c}::int) ELSE '\\x20'::bytea || streamflow_varint({c}) END"
        ).format(c=col)
        return value, sql.SQL("{}::text").format(col), sql.SQL("{}::float8").format(col)
    if feature in FLOAT_FEATURES:  # field 5, fixed64 little-endian
        value = sql.SQL(
            "CASE WHEN {c} IS NULL THEN '\\x'::bytea ELSE '\\x29'::bytea || streamflow_le8({c}) END"
        ).format(c=col)
        text = sql.SQL(
            # (float8 literals: a bare 1e15 is numeric, and float-vs-numeric comparisons are slow)
            "CASE WHEN abs({c}) >= '1e15'::float8 AND abs({c}) < '1e16'::float8 THEN streamflow_py_float_text_e15({c})"
            " WHEN {c} = trunc({c}) AND abs({c}) < '1e15'::float8 THEN {c}::text || '.0' ELSE {c}::text END"
        ).format(c=col)
        return value, text, sql.SQL("{}::float8").format(col)
    if feature in FLAG_FEATURES:  # field 7, varint 0/1
        value = sql.SQL(
            "CASE WHEN {c} IS NULL THEN '\\x'::bytea WHEN {c} THEN '\\x3801'::bytea ELSE '\\x3800'::bytea END"
        ).format(c=col)
        text = sql.SQL("CASE WHEN {c} THEN 'True' WHEN NOT {c} THEN 'False' END").format(c=col)
        num = sql.SQL("CASE WHEN {c} THEN 1.0::float8 WHEN NOT {c} THEN 0.0::float8 END").format(c=col)
        return value, text, num
    # string: field 2, length-delimited
    utf8 = sql.SQL("convert_to({}, 'UTF8')").format(col)
    value = sql.SQL(
        "CASE WHEN {c} IS NULL THEN '\\x'::bytea WHEN octet_length({u}) < 128"
        " THEN set_byte('\\x1200'::bytea, 1, octet_length({u})) || {u}"
        " ELSE '\\x12'::bytea || streamflow_varint(octet_length({u})) || {u} END"
    ).format(c=col, u=utf8)
    return value, col, sql.SQL("NULL::float8")


def latest_rows_sql(snapshot_table: str, live_table: str | None, features: list[str], latest: object) -> sql.Composed:
    """The newest snapshot row of every user: (user_id, as_of, features…).

    With ``live_table`` (whose ``as_of`` records, per user, the newest month that user was
    ingested in — maintained by the ingest in the same transaction as the snapshots): the
    latest month's partition, plus the older rows of users absent from it, looked up by key;
    no sort of all months. Without it: ``DISTINCT ON`` over every month (the definition)."""
    entity = sql.Identifier(ENTITY)
    feats = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(f)) for f in features)
    snap = sql.Identifier(snapshot_table)
    if live_table is None:
        return sql.SQL(
            "SELECT DISTINCT ON (s.{e}) s.{e}, s.as_of, {feats} FROM {snap} AS s ORDER BY s.{e}, s.as_of DESC"
        ).format(e=entity, feats=feats, snap=snap)
    return sql.SQL(
        "SELECT s.{e}, s.as_of, {feats} FROM {snap} AS s WHERE s.as_of = {latest}"
        " UNION ALL"
        " SELECT s.{e}, s.as_of, {feats} FROM {live} AS l"
        "  JOIN {snap} AS s ON s.{e} = l.{e} AND s.as_of = (l.as_of::timestamp AT TIME ZONE 'UTC')"
        "  WHERE l.as_of < ({latest} AT TIME ZONE 'UTC')::date"
    ).format(e=entity, feats=feats, snap=snap, live=sql.Identifier(live_table), latest=sql.Literal(latest))


def fill_sql(source: sql.Composable, features: list[str], target: str, columns: list[str]) -> sql.Composed:
    """INSERT … SELECT of one view from ``source`` (one row per user, see ``latest_rows_sql``):
    one output row per (user, feature), the entity key encoded once per user. Rows are written in
    primary-key order (users by entity key; ``features`` must come in the table's ``feature_name``
    order): the heap is then clustered on the key, and the API's bulk read walks it in key order
    without hashing or sorting (``serving/features.py``)."""
    with_num = "value_num" in columns  # (only Feast's OpenAI-compatible layout has it)
    exprs = [_value_expr(f, sql.SQL("s.{}").format(sql.Identifier(f))) for f in features]

    def array(items: list[sql.Composable], pgtype: str) -> sql.Composable:
        return sql.SQL("unnest(ARRAY[{}]::{}[])").format(sql.SQL(", ").join(items), sql.SQL(pgtype))

    # One output row per feature: parallel unnest() of per-user arrays in the select list
    # (a ProjectSet; much cheaper than a LATERAL VALUES list re-evaluated per user).
    projected = {
        "entity_key": sql.SQL("s.entity_key"),
        "feature_name": array([sql.Literal(f) for f in features], "text"),
        "value": array([v for v, _, _ in exprs], "bytea"),
        "value_text": array([t for _, t, _ in exprs], "text"),
        "value_num": array([n for _, _, n in exprs], "float8"),
        "vector_value": sql.SQL("NULL"),
        "event_ts": sql.SQL("s.event_ts"),
        "created_ts": sql.SQL("NULL"),
    }
    out_cols = [c for c in projected if c in columns and (c != "value_num" or with_num)]
    return sql.SQL(
        "INSERT INTO {target} ({cols}) SELECT {exprs}"
        # OFFSET 0 keeps the subquery: the entity key and event_ts are computed once per user, not once per
        # feature. event_ts: Feast binds a naive UTC datetime, read in the session's time zone: the same here.
        " FROM (SELECT {key} AS entity_key, (r.as_of AT TIME ZONE 'UTC')::timestamp::timestamptz AS event_ts, r.*"
        "       FROM ({source}) AS r ORDER BY 1 OFFSET 0) AS s"
    ).format(
        target=sql.Identifier(target),
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in out_cols),
        exprs=sql.SQL(", ").join(projected[c] for c in out_cols),
        key=entity_key_expr(sql.SQL("r.{}").format(sql.Identifier(ENTITY))),
        source=source,
    )


def _source_for(cur: psycopg.Cursor, snapshot_table: str, features: list[str]) -> sql.Composed:
    """Pick the cheap latest-rows query when the live table's as_of can be trusted."""
    live = next((t.name for t in SOURCE_TABLES if t.snapshot_table == snapshot_table), None)
    cur.execute(sql.SQL("SELECT max(as_of) FROM {}").format(sql.Identifier(snapshot_table)))
    row = cur.fetchone()
    latest = row[0] if row else None
    if live is not None and latest is not None:
        cur.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE as_of IS NULL OR as_of > %s)").format(sql.Identifier(live)),
            ((latest.astimezone(UTC)).date(),),
        )
        row = cur.fetchone()
        if row and not row[0]:
            return latest_rows_sql(snapshot_table, live, features, latest)
    return latest_rows_sql(snapshot_table, None, features, latest)


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
        cur.execute("SELECT array_agg(f ORDER BY f) FROM unnest(%s::text[]) AS f", (features,))  # the PK's order
        row = cur.fetchone()
        key_order = list(row[0]) if row else features
        cur.execute(fill_sql(_source_for(cur, snapshot_table, features), key_order, new, columns))
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
                + sql.SQL(using)  # Feast's own index definition, read from the catalog
            )
        cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(new)))
        conn.commit()
    return ViewWrite(view=view, table=table, rows=rows, seconds=time.perf_counter() - t0)


def _table_owner(cur: psycopg.Cursor, table: str) -> str | None:
    cur.execute("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = to_regclass(%s)", (f"public.{table}",))
    row = cur.fetchone()
    return str(row[0]) if row else None


def _swap(cur: psycopg.Cursor, settings: Settings) -> None:
    """Replace each online table by its rebuilt twin; the twin goes to the role that owned the old
    table (Feast's, with least-privilege roles: streamflow.db.roles), so Feast keeps owning it."""
    cur.execute("SELECT current_user")
    row = cur.fetchone()
    me = str(row[0]) if row else None
    for view in FEATURE_VIEWS:
        table = online_table(settings, view)
        new = table + NEW_SUFFIX
        _, indexes, pkey = _table_layout(cur, new)
        owner = _table_owner(cur, table)
        if owner is not None and owner != me:
            cur.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(new), sql.Identifier(owner)))
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
