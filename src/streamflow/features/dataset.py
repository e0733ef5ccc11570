"""The point-in-time dataset of one month: the 14 features of every user of that
snapshot plus that month's own churn label.

Two readers return the same frame (an integration test proves them equal on the course data):

* ``snapshots`` (the default, ``STREAMFLOW_DATASET_READER``): one SQL per month straight from
  the snapshot tables — the month's partition of each, joined on ``user_id``, with Feast's
  point-in-time rule (a user without a row of that month in a table takes its newest earlier
  row) — streamed by ``COPY … TO STDOUT`` into pyarrow with explicit column types. About
  2 s for 1,000,000 users, memory proportional to the frame;
* ``feast``: Feast's offline retrieval (``get_historical_features`` with an entity frame of
  every user of the month), the reader of record — minutes and gigabytes at 1,000,000 users.

A month's labels may arrive after its features (they are known only once the month is over):
``require_labels=False`` returns the features alone when the month has no labels yet."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from datetime import date, datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import sqlalchemy as sa

from streamflow.core.data_model import (
    CATEGORICAL_FEATURES,
    ENTITY,
    FEATURE_DTYPES,
    FEATURE_VIEWS,
    FEATURES,
    FLAG_FEATURES,
    INT_FEATURES,
    LABEL,
    TIMESTAMP,
)
from streamflow.core.dates import as_of_timestamp, parse_as_of
from streamflow.core.errors import InputError
from streamflow.core.progress import ProgressCallback, ProgressEvent, no_progress
from streamflow.core.settings import Settings
from streamflow.db.engine import get_engine

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)


class EmptySnapshotError(InputError, LookupError):
    """No snapshot rows exist for the requested as_of."""


class MissingLabelsError(EmptySnapshotError):
    """The month has features but no labels (yet)."""


def _to_flag(s: pd.Series) -> pd.Series:
    """bool / 'True' / 1 / None → 1.0 / 0.0 / NaN."""
    if s.dtype == "float64":
        return s
    mapping = {True: 1.0, False: 0.0, "True": 1.0, "False": 0.0, "true": 1.0, "false": 0.0}  # 1/0 hash as True/False
    return s.map(lambda v: np.nan if v is None or (isinstance(v, float) and np.isnan(v)) else mapping[v]).astype(
        "float64"
    )


def coerce_feature_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """Apply the canonical FEATURE_DTYPES (offline int32 / online int64 / nullable bools
    all end up identical), so one MLflow signature fits training and serving."""
    out = df.copy()
    for col in FEATURES:
        if col not in out.columns:
            continue
        if col in FLAG_FEATURES:
            out[col] = _to_flag(out[col])
        elif col in CATEGORICAL_FEATURES:
            out[col] = out[col].astype("object").mask(out[col].isna(), None)
        else:
            out[col] = out[col].astype(np.dtype(FEATURE_DTYPES[col]))
    return out


def snapshot_dates(settings: Settings) -> list[date]:
    with get_engine(settings).connect() as conn:
        rows = conn.execute(
            sa.text("SELECT DISTINCT as_of FROM subscriptions_profile_snapshots ORDER BY as_of")
        ).scalars()
        return [r.date() for r in rows]


def label_dates(settings: Settings) -> list[date]:
    """The as_of dates that have labels (a subset of :func:`snapshot_dates`)."""
    with get_engine(settings).connect() as conn:
        rows = conn.execute(sa.text("SELECT DISTINCT as_of FROM labels_snapshots ORDER BY as_of")).scalars()
        return [r.date() for r in rows]


def build_point_in_time_dataset(
    as_of: str | date,
    settings: Settings,
    with_labels: bool = True,
    *,
    require_labels: bool = True,
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """user_id, event_timestamp, the 14 features (FEATURE_DTYPES) and churn_label (0/1), sorted
    by user_id, read by ``settings.dataset_reader`` (module docstring).

    A month without any label raises :class:`MissingLabelsError`, unless ``require_labels`` is
    False: the frame then has no ``churn_label`` column. A month whose labels cover only some of
    its users always raises (that is broken data, not labels still to come). ``progress``
    receives the rows read (snapshot reader)."""
    if settings.dataset_reader == "feast":
        return build_point_in_time_dataset_feast(as_of, settings, with_labels, require_labels=require_labels)
    return read_month_dataset(
        as_of, settings, with_labels, require_labels=require_labels, progress=progress or no_progress
    )


# ---- snapshot reader ------------------------------------------------------------------------
_FLAG_SQL = set(FLAG_FEATURES)
PARTIAL = "_partial"  # column of the month query: the user lacks a row of that month in some table


def _partitions(conn: sa.Connection, as_of: date) -> dict[str, str | None]:
    """The month's partition of every snapshot table the dataset reads (None: none exists).

    The query names the partitions rather than the partitioned tables: PostgreSQL estimates a
    join of partitioned tables from the parents' statistics, which nothing gathers (ANALYZE
    runs on the partitions) — it then plans nested loops over a million index lookups."""
    from streamflow.ingest.loader import partition_name

    tables = [t for t, _ in FEATURE_VIEWS.values()] + ["labels_snapshots"]
    names = {t: partition_name(t, as_of) for t in tables}
    found = conn.execute(
        sa.text("SELECT n, to_regclass(quote_ident(n)) IS NOT NULL FROM unnest(CAST(:names AS text[])) AS n"),
        {"names": list(names.values())},
    ).all()
    exists: dict[str, bool] = {str(n): bool(e) for n, e in found}
    return {t: n if exists.get(n) else None for t, n in names.items()}


def _month_sql(parts: dict[str, str | None], with_labels: bool) -> str:
    """One SELECT of a month over its partitions: the users of subscriptions_profile_snapshots
    (Feast's entity frame), hash-joined with the other three views' rows of the same month and the
    month's label, plus :data:`PARTIAL` — true for a user without a row of that month in some view
    (Feast then takes the newest earlier row: :func:`_fill_partial`). Placeholder ``{ts}``: the
    month's as_of (a literal)."""
    views = list(FEATURE_VIEWS.values())
    base_table, base_features = views[0]
    select = ["s.user_id", *(f"s.{f}" for f in base_features)]
    joins, partial = [], []
    for i, (table, features) in enumerate(views[1:]):
        alias, part = f"v{i}", parts[table]
        if part is None:
            select += [f"NULL AS {f}" for f in features]
            partial.append("true")
            continue
        joins.append(f'LEFT JOIN "{part}" {alias} ON {alias}.user_id = s.user_id AND {alias}.as_of = {{ts}}')
        select += [f"{alias}.{f}" for f in features]
        partial.append(f"{alias}.user_id IS NULL")
    if with_labels:
        joins.append(f'LEFT JOIN "{parts["labels_snapshots"]}" l ON l.user_id = s.user_id AND l.as_of = {{ts}}')
        select.append(f"l.{LABEL}")
    select.append(f"({' OR '.join(partial) or 'false'}) AS {PARTIAL}")
    base = parts[base_table]
    return f'SELECT {", ".join(select)} FROM "{base}" s {" ".join(joins)} WHERE s.as_of = {{ts}}'


def _fill_partial(conn: sa.Connection, frame: pd.DataFrame, ts: datetime) -> pd.DataFrame:
    """Feast's point-in-time rule for the users flagged :data:`PARTIAL`: each view's missing
    features from that user's newest row before the month (none at all: an input error — Feast
    would return nulls that no model can score)."""
    partial = frame[PARTIAL].to_numpy(dtype=bool)
    frame = frame.drop(columns=[PARTIAL])
    if not partial.any():
        return frame
    users = frame.loc[partial, ENTITY].tolist()
    log.info("event=dataset_point_in_time_fallback as_of=%s users=%d", ts.date(), len(users))
    frame = frame.set_index(ENTITY)
    for table, features in list(FEATURE_VIEWS.values())[1:]:
        missing = frame.loc[users, features[0]].isna()
        need = missing[missing].index.tolist()
        if not need:
            continue
        earlier = pd.read_sql(
            sa.text(
                f"SELECT DISTINCT ON (user_id) user_id, {', '.join(features)} FROM {table} "
                "WHERE user_id = ANY(:users) AND as_of < :ts ORDER BY user_id, as_of DESC"
            ),
            conn,
            params={"users": need, "ts": ts},
        ).set_index(ENTITY)
        absent = len(need) - len(earlier)
        if absent:
            raise EmptySnapshotError(
                f"{absent} users of as_of={ts.date()} have no row in {table} at or before that month"
            )
        for f in features:
            frame.loc[earlier.index, f] = earlier[f].to_numpy()
    frame = frame.reset_index()
    for f in INT_FEATURES:
        frame[f] = frame[f].astype("int64")
    return frame


def _arrow_types(with_labels: bool) -> dict[str, object]:
    import pyarrow as pa

    types: dict[str, object] = {ENTITY: pa.string()}
    for f in FEATURES:
        if f in _FLAG_SQL:
            types[f] = pa.bool_()
        elif f in CATEGORICAL_FEATURES:
            types[f] = pa.string()
        elif f in INT_FEATURES:
            types[f] = pa.int64()
        else:
            types[f] = pa.float64()
    if with_labels:
        types[LABEL] = pa.bool_()
    types[PARTIAL] = pa.bool_()
    return types


class _ChunkReader(io.RawIOBase):
    """A readable stream over the byte chunks of a ``COPY … TO STDOUT`` (pyarrow reads from it)."""

    def __init__(self, chunks: Iterator[bytes | bytearray | memoryview]) -> None:
        self._chunks = chunks
        self._buffer = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        while not len(self._buffer):
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = memoryview(bytes(chunk))
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def _copy_frame(settings: Settings, query: str, ts: datetime, with_labels: bool, task: str, total: int,
                progress: ProgressCallback) -> pd.DataFrame:  # fmt: skip
    """Run ``query`` through ``COPY (…) TO STDOUT (FORMAT csv)`` and parse the stream with pyarrow
    (explicit types: int64, float64 — PostgreSQL prints doubles in shortest round-trip form —,
    bool ``t``/``f``, NULL = unquoted empty field), batch by batch."""
    import psycopg
    import pyarrow as pa
    import pyarrow.csv as pacsv
    from psycopg import sql

    from streamflow.db.engine import libpq_url

    types = _arrow_types(with_labels)
    names = list(types)
    batches: list[pa.RecordBatch] = []
    done = 0
    progress(ProgressEvent(task, 0, total))
    with psycopg.connect(libpq_url(settings), application_name="streamflow-dataset") as conn, conn.cursor() as cur:
        # hash joins of a million rows each: give them memory instead of temp-file batches
        cur.execute(sql.SQL("SET work_mem = {}").format(sql.Literal(settings.dataset_work_mem)))
        copy_sql = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(sql.SQL(query).format(ts=sql.Literal(ts)))
        with cur.copy(copy_sql) as copy:
            stream = io.BufferedReader(_ChunkReader(iter(copy)), buffer_size=1 << 20)
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(column_names=names, block_size=8 << 20, use_threads=False),
                parse_options=pacsv.ParseOptions(newlines_in_values=False),
                convert_options=pacsv.ConvertOptions(
                    column_types=types,
                    true_values=["t"],
                    false_values=["f"],
                    null_values=[""],
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
            for batch in reader:
                batches.append(batch)
                done += batch.num_rows
                progress(ProgressEvent(task, done, total))
    table = pa.Table.from_batches(batches, schema=pa.schema([(n, t) for n, t in types.items()]))
    progress(ProgressEvent(task, done, done))  # the real count, should the month have changed meanwhile
    return _typed_frame(table, with_labels)


def _typed_frame(table: pa.Table, with_labels: bool) -> pd.DataFrame:
    """The arrow table as the canonical frame: sorted by user_id (code-point order, as pandas
    sorts Python strings), flags 1.0/0.0/NaN, counts int64 (float64 while a partial user's are
    missing), floats float64, text as Python str, the label 0/1 (NaN where a user has no label)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = table.column(ENTITY)
    if len(ids) > 1 and not pc.all(pc.less(ids[:-1], ids[1:])).as_py():  # the month's heap is usually sorted
        table = table.sort_by(ENTITY)
    for i, name in enumerate(table.column_names):
        col = table.column(i)
        if name in _FLAG_SQL or name == LABEL or (col.null_count and pa.types.is_integer(col.type)):
            table = table.set_column(i, name, pc.cast(col, pa.float64()))
    frame: pd.DataFrame = table.to_pandas(self_destruct=True)
    return frame


def read_month_dataset(
    as_of: str | date,
    settings: Settings,
    with_labels: bool = True,
    *,
    require_labels: bool = True,
    progress: ProgressCallback = no_progress,
) -> pd.DataFrame:
    """The snapshot reader (see the module docstring); same contract as
    :func:`build_point_in_time_dataset`."""
    as_of_d = parse_as_of(as_of)
    ts = as_of_timestamp(as_of_d)
    t0 = time.perf_counter()
    base_table = next(iter(FEATURE_VIEWS.values()))[0]
    with get_engine(settings).connect() as conn:
        parts = _partitions(conn, as_of_d)
        users = labels_rows = 0
        if parts[base_table] is not None:
            users = int(conn.execute(sa.text(f'SELECT count(*) FROM "{parts[base_table]}"')).scalar() or 0)
        if users and parts["labels_snapshots"] is not None:
            labels_rows = int(
                conn.execute(sa.text(f'SELECT count(*) FROM "{parts["labels_snapshots"]}"')).scalar() or 0
            )
    if not users:
        known = ", ".join(str(d) for d in snapshot_dates(settings)) or "none"
        raise EmptySnapshotError(f"no snapshot found for as_of={as_of_d} (snapshots in the database: {known})")
    join_labels = with_labels and labels_rows > 0
    task = f"read {as_of_d}"
    query = _month_sql(parts, join_labels)
    frame = _copy_frame(settings, query, ts, join_labels, task, users, progress)
    with get_engine(settings).connect() as conn:
        frame = _fill_partial(conn, frame, ts)
    frame.insert(1, TIMESTAMP, pd.to_datetime(pd.Series(pd.Timestamp(ts), index=frame.index), utc=True))
    if with_labels and not join_labels:
        if not require_labels:
            log.info("event=dataset_built reader=snapshots as_of=%s rows=%d labels=absent", as_of_d, len(frame))
            return frame
        raise MissingLabelsError(f"no labels snapshot found for as_of={as_of_d} (its labels have not arrived)")
    if join_labels:
        missing = int(frame[LABEL].isna().sum())
        if missing:
            raise EmptySnapshotError(f"{missing} users of as_of={as_of_d} have no label in labels_snapshots")
        frame[LABEL] = frame[LABEL].astype("int64")
    log.info(
        "event=dataset_built reader=snapshots as_of=%s rows=%d seconds=%.2f",
        as_of_d,
        len(frame),
        time.perf_counter() - t0,
    )
    return frame


# ---- Feast reader (reference) ---------------------------------------------------------------
def build_point_in_time_dataset_feast(
    as_of: str | date, settings: Settings, with_labels: bool = True, *, require_labels: bool = True
) -> pd.DataFrame:
    """The same frame through Feast's offline retrieval (``get_historical_features``)."""
    from streamflow.core.data_model import FEATURE_REFS
    from streamflow.db.roles import grant_feature_store_reads
    from streamflow.features.store import get_feature_store

    as_of_d = parse_as_of(as_of)
    ts = as_of_timestamp(as_of_d)
    engine = get_engine(settings)
    with engine.connect() as conn:
        entity_df = pd.read_sql(
            sa.text("SELECT user_id FROM subscriptions_profile_snapshots WHERE as_of = :ts ORDER BY user_id"),
            conn,
            params={"ts": ts},
        )
        labels = (
            pd.read_sql(
                sa.text("SELECT user_id, churn_label FROM labels_snapshots WHERE as_of = :ts"),
                conn,
                params={"ts": ts},
            )
            if with_labels
            else None
        )
    if entity_df.empty:
        known = ", ".join(str(d) for d in snapshot_dates(settings)) or "none"
        raise EmptySnapshotError(f"no snapshot found for as_of={as_of_d} (snapshots in the database: {known})")
    entity_df[TIMESTAMP] = pd.Timestamp(ts)
    grant_feature_store_reads(settings)  # Feast's role reads the snapshot tables (a no-op with one role)
    store = get_feature_store(settings)
    feats = store.get_historical_features(entity_df=entity_df, features=FEATURE_REFS).to_df()
    feats = feats.sort_values(ENTITY).reset_index(drop=True)
    feats[TIMESTAMP] = pd.to_datetime(feats[TIMESTAMP], utc=True)
    df = coerce_feature_dtypes(feats[[ENTITY, TIMESTAMP, *FEATURES]])
    if labels is not None:
        if labels.empty and not require_labels:
            log.info("event=dataset_built reader=feast as_of=%s rows=%d labels=absent", as_of_d, len(df))
            return df
        if labels.empty:
            raise MissingLabelsError(f"no labels snapshot found for as_of={as_of_d} (its labels have not arrived)")
        df = df.merge(labels, on=ENTITY, how="left", validate="one_to_one")
        missing = int(df[LABEL].isna().sum())
        if missing:
            raise EmptySnapshotError(f"{missing} users of as_of={as_of_d} have no label in labels_snapshots")
        df[LABEL] = df[LABEL].astype(bool).astype("int64")
    log.info("event=dataset_built reader=feast as_of=%s rows=%d", as_of_d, len(df))
    return df
