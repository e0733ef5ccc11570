"""Bulk writer of Feast's Redis online store (``STREAMFLOW_ONLINE_STORE=redis``): the same keys,
hash fields and bytes Feast's ``RedisOnlineStore.online_write_batch`` writes, from the month's
feature table in one pass.

Layout (``feast/infra/online_stores/redis.py``, ``features.online_codec``): one Redis hash per
user, key = entity key (serialization v3) + project name; per feature view, one field per feature
named ``mmh3("{view}:{feature}")`` holding the serialized ``ValueProto`` (empty for a missing
value) and ``_ts:{view}`` holding the view's event time as a ``google.protobuf.Timestamp``.

Every user's newest snapshot row of each view is read from PostgreSQL in one query (the same
latest-rows queries as the PostgreSQL writer, joined on user_id, one consistent snapshot),
streamed through a server-side cursor, and sent as raw RESP ``HSET`` commands in pipelined
batches (one command per user for all four views). Redis has no multi-key swap: while the write
runs, direct readers see some users already on the new month (Feast's own Redis
materialization behaves the same); the materialization is recorded — and the API's mirror
reloads — only once every user is written."""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg import sql

from streamflow.core.data_model import ENTITY, FEATURE_VIEWS
from streamflow.core.progress import ProgressCallback, ProgressEvent, no_progress
from streamflow.core.settings import Settings
from streamflow.db.engine import libpq_url
from streamflow.features.online_codec import (
    encode_value,
    feature_kind,
    redis_field,
    redis_key,
    redis_ts_field,
    timestamp_proto,
)
from streamflow.features.online_writer import APP_NAME, MATERIALIZE_LOCK_KEY, MaterializeError, _lock, _source_for

log = logging.getLogger(__name__)

BATCH_USERS = 5_000
FETCH_ROWS = 50_000
_D = struct.Struct("<d")
_SMALL_INTS = [b"\x20" + bytes([i]) for i in range(128)]


@dataclass
class RedisWriteResult:
    as_of: date | None
    ingestion_id: int | None
    users: int
    rows: int  # feature values written
    seconds: float


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _encoder(feature: str) -> Callable[[Any], bytes]:
    """Fast ValueProto encoder of one feature (equal to ``online_codec.encode_value``)."""
    kind = feature_kind(feature)
    if kind == "float":
        pack = _D.pack
        return lambda v: b"" if v is None else b"\x29" + pack(v)
    if kind == "int":
        return lambda v: b"" if v is None else _SMALL_INTS[v] if 0 <= v < 128 else encode_value(feature, v)
    if kind == "bool":
        return lambda v: b"" if v is None else (b"\x38\x01" if v else b"\x38\x00")
    cache: dict[str, bytes] = {}

    def string(v: Any) -> bytes:
        if v is None:
            return b""
        out = cache.get(v)
        if out is None:
            out = encode_value(feature, v)
            if len(cache) < 10_000:
                cache[v] = out
        return out

    return string


def source_sql(cur: psycopg.Cursor[Any]) -> sql.Composed:
    """user_id, then per view: its as_of and its features (NULL as_of: the user has no row there)."""
    parts = []
    select = [sql.SQL("COALESCE({})").format(sql.SQL(", ").join(sql.SQL("v{}.{}").format(sql.SQL(str(i)),
              sql.Identifier(ENTITY)) for i in range(len(FEATURE_VIEWS))))]  # fmt: skip
    for i, (_, (table, features)) in enumerate(FEATURE_VIEWS.items()):
        parts.append(sql.SQL("({}) AS {}").format(_source_for(cur, table, features), sql.Identifier(f"v{i}")))
        select.append(sql.SQL("v{}.as_of").format(sql.SQL(str(i))))
        select.extend(sql.SQL("v{}.{}").format(sql.SQL(str(i)), sql.Identifier(f)) for f in features)
    joined = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        joined = sql.SQL("{} FULL JOIN {} ON v{}.{} = v0.{}").format(
            joined, part, sql.SQL(str(i)), sql.Identifier(ENTITY), sql.Identifier(ENTITY)
        )
    return sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(select), joined)


Plan = list[tuple[bytes, list[tuple[bytes, Callable[[Any], bytes]]]]]  # per view: _ts field, (field, encoder)s


def hset_command(
    user_id: str, row: tuple[Any, ...], project: str, plan: Plan, ts_cache: dict[datetime, bytes]
) -> tuple[bytes, int]:
    """One RESP ``HSET`` of a user's views (``row``: per view, as_of then its features)."""
    fields: list[bytes] = []
    pos = 0
    values = 0
    for ts_field, feats in plan:
        as_of = row[pos]
        pos += 1
        if as_of is None:
            pos += len(feats)
            continue
        ts = ts_cache.get(as_of)
        if ts is None:
            ts = ts_cache[as_of] = _bulk(timestamp_proto(as_of))
        fields.append(ts_field)
        fields.append(ts)
        for field_bulk, encode in feats:
            fields.append(field_bulk)
            fields.append(_bulk(encode(row[pos])))
            pos += 1
            values += 1
    key = redis_key(user_id, project)
    head = b"*%d\r\n$4\r\nHSET\r\n%s" % (2 + len(fields), _bulk(key))
    return head + b"".join(fields), values


def write_redis_online_store(settings: Settings, progress: ProgressCallback = no_progress) -> RedisWriteResult:
    """Write every user's newest snapshot of each view into Redis in Feast's layout, then record the
    materialization (as_of and covered ingestion) in PostgreSQL."""
    import redis

    t0 = time.perf_counter()
    project = settings.feast_project
    plan = [
        (_bulk(redis_ts_field(view)), [(_bulk(redis_field(view, f)), _encoder(f)) for f in features])
        for view, (_, features) in FEATURE_VIEWS.items()
    ]
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=60, socket_connect_timeout=10)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise MaterializeError(f"Redis online store at {settings.redis_url} is not reachable: {exc}") from exc
    url = libpq_url(settings)
    users = values = 0
    with psycopg.connect(url, application_name=APP_NAME, autocommit=True) as lock_conn:
        _lock(lock_conn.cursor(), settings)
        try:
            with psycopg.connect(url, application_name=APP_NAME) as conn:
                cur = conn.cursor()
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cur.execute("SELECT max(id) FROM ingestions")
                row = cur.fetchone()
                ingestion_id = int(row[0]) if row and row[0] is not None else None
                cur.execute(
                    sql.SQL("SELECT max(as_of) FROM {}").format(sql.Identifier(next(iter(FEATURE_VIEWS.values()))[0]))
                )
                row = cur.fetchone()
                latest = row[0].date() if row and row[0] is not None else None
                query = source_sql(cur)
                ts_cache: dict[datetime, bytes] = {}
                connection = client.connection_pool.get_connection()
                try:
                    with conn.cursor(name="streamflow_redis_materialize") as rows:
                        rows.itersize = FETCH_ROWS
                        rows.execute(query)
                        batch: list[bytes] = []
                        for r in rows:
                            command, n = hset_command(r[0], r[1:], project, plan, ts_cache)
                            batch.append(command)
                            values += n
                            if len(batch) >= BATCH_USERS:
                                _send(connection, batch)
                                users += len(batch)
                                batch = []
                                progress(ProgressEvent("materialize redis", users, None))
                        if batch:
                            _send(connection, batch)
                            users += len(batch)
                finally:
                    client.connection_pool.release(connection)
                conn.rollback()
            with psycopg.connect(url, application_name=APP_NAME) as rec:
                rec.execute(
                    "INSERT INTO feature_materializations (as_of, ingestion_id, writer, rows_written, seconds)"
                    " VALUES (%s, %s, 'redis-bulk', %s, %s)",
                    (latest, ingestion_id, values, time.perf_counter() - t0),
                )
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", (MATERIALIZE_LOCK_KEY,))
            client.close()
    progress(ProgressEvent("materialize redis", users, users))
    result = RedisWriteResult(
        as_of=latest, ingestion_id=ingestion_id, users=users, rows=values, seconds=time.perf_counter() - t0
    )
    log.info(
        "event=online_store_written writer=redis-bulk as_of=%s ingestion_id=%s users=%d values=%d seconds=%.2f",
        latest, ingestion_id, users, values, result.seconds,
    )  # fmt: skip
    return result


def _send(connection: Any, batch: list[bytes]) -> None:
    """Send a batch of HSETs in one write and read every reply (an error reply fails the write)."""
    import redis

    try:
        connection.send_packed_command([b"".join(batch)], check_health=False)
        for _ in batch:
            connection.read_response()
    except redis.RedisError as exc:
        raise MaterializeError(f"Redis online store write failed: {exc}") from exc
