"""The API's online features: an in-process mirror of the Feast online store, or direct
per-request lookups in it (``settings.online_lookup = mirror | direct``).

**Mirror** (default): every user's 14 features, held columnar — user ids as one sorted
fixed-width byte array (binary search, no per-user Python object), the categorical column as
codes, the others as one float64 matrix — and ``features_used`` encoded per request from those
arrays. A reload reads the online store in one streamed query (PostgreSQL pivots Feast's
rows and sends CSV, parsed by pyarrow; or Redis, pipelined), builds a new snapshot off the hot
path and swaps it in with one reference assignment. ~70 bytes per user instead of ~2 KB of
Python objects: 1,000,000 users in ≈ 130 MB (benchmarks/README.md).

**Direct**: no copy; each request (or batch) is one indexed query against the online store —
PostgreSQL (``entity_key = ANY(…)`` over the four tables, a small connection pool) or Redis
(one pipeline of HMGETs). For user bases larger than the mirror should hold.

Both read Feast's own formats (``features.online_codec``, proven equal to Feast's reader) and
share the health and staleness logic of :class:`OnlineFeatures`: a background thread polls the
``feature_materializations`` record (short ``statement_timeout``) every
``feature_poll_seconds``; a failed poll marks the feature store unreachable (``/ready`` and
``/predict`` answer 503 until it answers again). A failed mirror reload keeps the previous
snapshot serving, is counted (``api_feature_reload_failures_total``), reported as ``stale`` on
``/ready`` with its reason, and retried with exponential backoff and jitter. No prediction is
cached — only the online store's content.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from streamflow.core.data_model import ENTITY, FEATURE_VIEWS, FEATURES
from streamflow.core.settings import Settings, settings_json
from streamflow.features.online_codec import decode_value, entity_key, feature_kind, redis_fields, redis_key
from streamflow.model.onnx_layout import MISSING_STRING
from streamflow.model.onnx_model import MIRROR_NUMERIC, MIRROR_STRINGS
from streamflow.serving.metrics import ApiMetrics
from streamflow.serving.poller import PeriodicTask

log = logging.getLogger(__name__)

FEAST_BATCH = 1000
CLUSTERED_CORRELATION = 0.9  # pg_stats correlation of entity_key above which a table is read in key order
VERIFY_SAMPLE = 200  # users whose ValueProto bytes are decoded and compared on every bulk read
MAX_ID_BYTES = 64  # the API accepts user ids of at most 64 characters (visible ASCII)
REDIS_SCAN_COUNT = 10_000
REDIS_CHUNK = 5_000
RELOAD_APP_NAME = "streamflow-api-features-reload"
POLL_APP_NAME = "streamflow-api-features"
LOOKUP_APP_NAME = "streamflow-api-features-lookup"

OnlineSource = Literal["direct", "feast"]
_KINDS = [feature_kind(f) for f in MIRROR_NUMERIC]
# features_used in FEATURES order: (is_string, column in strings / numeric, kind)
_JSON_PLAN = [
    (True, MIRROR_STRINGS.index(f), "string") if f in MIRROR_STRINGS else (False, MIRROR_NUMERIC.index(f), "")
    for f in FEATURES
]
_JSON_KEYS = [json.dumps(f) for f in FEATURES]


class FeatureStoreUnavailable(RuntimeError):
    """The online store could not answer a lookup."""


# ---- features of the requested users ----------------------------------------------------------
def _number_json(v: float, kind: str) -> str:
    if not math.isfinite(v):
        return "null"
    if kind == "int":
        return str(int(v))
    return repr(v)


_STRING_JSON: dict[str, str] = {}


def _string_json(s: str) -> str:
    out = _STRING_JSON.get(s)
    if out is None:
        out = json.dumps(s)
        if len(_STRING_JSON) < 10_000:  # categorical values: a handful
            _STRING_JSON[s] = out
    return out


def encode_features_json(strings: Sequence[str | None], numeric: Sequence[float]) -> bytes:
    """The ``features_used`` object of one user: the 14 features in FEATURES order, each in its
    canonical dtype (ints as integers, flags 1.0/0.0, null for a missing value)."""
    parts = []
    for key, (is_string, col, _) in zip(_JSON_KEYS, _JSON_PLAN, strict=True):
        if is_string:
            s = strings[col]
            parts.append(key + (":null" if s is None else ":" + _string_json(s)))
        else:
            parts.append(key + ":" + _number_json(numeric[col], _KINDS[col]))
    return ("{" + ",".join(parts) + "}").encode()


@dataclass(frozen=True)
class FeatureRows:
    """The found users among the requested ids, in request order: model inputs and features_used."""

    found: list[int]  # positions in the request
    strings: np.ndarray  # object [k, len(MIRROR_STRINGS)], missing = MISSING_STRING
    string_missing: np.ndarray  # bool [k, len(MIRROR_STRINGS)]
    numeric64: np.ndarray  # float64 [k, len(MIRROR_NUMERIC)], missing = NaN
    as_of: date | None = None  # the snapshot the features come from (recorded by the prediction log)

    @property
    def numeric(self) -> np.ndarray:
        """The model's numeric input (float32)."""
        return self.numeric64.astype(np.float32)

    def features_json(self, j: int) -> bytes:
        missing = self.string_missing[j].tolist()
        strings = [None if m else s for s, m in zip(self.strings[j].tolist(), missing, strict=True)]
        return encode_features_json(strings, self.numeric64[j].tolist())


def rows_from_values(found: list[int], values: list[dict[str, Any]], as_of: date | None = None) -> FeatureRows:
    """FeatureRows from per-user decoded values (direct lookups)."""
    k = len(values)
    strings = np.full((k, len(MIRROR_STRINGS)), MISSING_STRING, dtype=object)
    missing = np.ones((k, len(MIRROR_STRINGS)), dtype=bool)
    numeric = np.full((k, len(MIRROR_NUMERIC)), np.nan, dtype=np.float64)
    for i, row in enumerate(values):
        for j, f in enumerate(MIRROR_STRINGS):
            v = row.get(f)
            if v is not None:
                strings[i, j] = str(v)
                missing[i, j] = False
        for j, f in enumerate(MIRROR_NUMERIC):
            v = row.get(f)
            if v is not None:
                numeric[i, j] = float(v)
    return FeatureRows(found, strings, missing, numeric, as_of)


_NO_ROWS = FeatureRows(
    [],
    np.empty((0, len(MIRROR_STRINGS)), dtype=object),
    np.empty((0, len(MIRROR_STRINGS)), dtype=bool),
    np.empty((0, len(MIRROR_NUMERIC)), dtype=np.float64),
)


# ---- the mirror's snapshot --------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureSnapshot:
    """Immutable: a reload builds a new one and swaps the reference."""

    ids: np.ndarray = field(repr=False)  # sorted UTF-8 user ids, dtype S<width>
    codes: np.ndarray = field(repr=False)  # int32 [N, len(MIRROR_STRINGS)], -1 = missing
    categories: tuple[np.ndarray, ...] = field(repr=False)  # per string column: values + [MISSING_STRING]
    numeric: np.ndarray = field(repr=False)  # float64 [N, len(MIRROR_NUMERIC)], NaN = missing
    materialized_at: datetime | None
    as_of: date | None
    loaded_at: float
    load_seconds: float

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def nbytes(self) -> int:
        return int(self.ids.nbytes + self.codes.nbytes + self.numeric.nbytes)

    def position(self, user_id: str) -> int:
        """Row of ``user_id`` or -1."""
        raw = user_id.encode()
        ids = self.ids
        if len(raw) > ids.dtype.itemsize or not len(ids):
            return -1
        i = int(ids.searchsorted(raw))
        return i if i < len(ids) and ids[i] == raw else -1

    def positions(self, user_ids: Sequence[str]) -> np.ndarray:
        if len(user_ids) == 1:
            return np.array([self.position(user_ids[0])], dtype=np.intp)
        width = self.ids.dtype.itemsize
        raw = [u.encode() for u in user_ids]
        fits = np.array([len(r) <= width for r in raw], dtype=bool)
        keys = np.array([r if ok else b"" for r, ok in zip(raw, fits, strict=True)], dtype=self.ids.dtype)
        if not len(self.ids):
            return np.full(len(raw), -1, dtype=np.intp)
        pos = np.minimum(self.ids.searchsorted(keys), len(self.ids) - 1)
        hit = fits & (self.ids[pos] == keys)
        return np.where(hit, pos, -1).astype(np.intp)

    def rows(self, user_ids: Sequence[str]) -> FeatureRows:
        if len(user_ids) == 1:  # /predict: plain indexing, no fancy-index temporaries
            i = self.position(user_ids[0])
            if i < 0:
                return _NO_ROWS
            codes1 = self.codes[i].tolist()
            strings1 = np.array([[cats[c] for cats, c in zip(self.categories, codes1, strict=True)]], dtype=object)
            missing = np.array([[c < 0 for c in codes1]], dtype=bool)
            return FeatureRows([0], strings1, missing, self.numeric[i : i + 1], self.as_of)
        pos = self.positions(user_ids)
        found = np.flatnonzero(pos >= 0)
        idx = pos[found]
        codes = self.codes[idx]
        strings = np.empty(codes.shape, dtype=object)
        for j, cats in enumerate(self.categories):
            strings[:, j] = cats[codes[:, j]]
        return FeatureRows(found.tolist(), strings, codes < 0, self.numeric[idx], self.as_of)

    def frame(self) -> pd.DataFrame:
        """user_id + the 14 features (numbers as float64, strings with None for missing)."""
        out: dict[str, Any] = {ENTITY: [b.decode() for b in self.ids.tolist()]}
        for j, f in enumerate(MIRROR_STRINGS):
            values = self.categories[j][self.codes[:, j]].astype(object)
            values[self.codes[:, j] < 0] = None
            out[f] = values
        for j, f in enumerate(MIRROR_NUMERIC):
            out[f] = self.numeric[:, j]
        return pd.DataFrame(out)[[ENTITY, *FEATURES]]


def _fixed_width_ids(ids: Sequence[str]) -> np.ndarray:
    raw = [u.encode() for u in ids]
    width = max((len(r) for r in raw), default=1) or 1
    return np.array(raw, dtype=f"S{width}")


def _encode_categories(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(int32 codes with -1 for missing, object categories + [MISSING_STRING])."""
    s = pd.Series(values, dtype=object)
    s = s.mask(s.isna(), None)
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    cats = np.array([*(str(u) for u in uniques), MISSING_STRING], dtype=object)
    return codes.astype(np.int32), cats


_FLAG_TEXT = {"True": 1.0, "False": 0.0, "true": 1.0, "false": 0.0}


def _as_float(s: pd.Series) -> pd.Series:
    """Numbers, bools (→ 1.0 / 0.0) or None (→ NaN) as float64."""
    if pd.api.types.is_numeric_dtype(s.dtype):
        return s.astype(np.float64)
    return s.map(
        lambda v: math.nan if v is None or v is pd.NA else _FLAG_TEXT.get(v, v) if isinstance(v, str) else float(v)
    ).astype(np.float64)


def build_snapshot(
    frame: pd.DataFrame,
    *,
    materialized_at: datetime | None = None,
    as_of: date | None = None,
    started: float | None = None,
) -> FeatureSnapshot:
    """From a frame of user_id + the 14 features (any dtypes the online store returns).
    Users whose 14 features are all missing are not in the online store: left out; so are
    ids longer than the API accepts."""
    t0 = started if started is not None else time.perf_counter()
    present = frame[FEATURES].notna().any(axis=1)
    df = frame.loc[present, [ENTITY, *FEATURES]].reset_index(drop=True)
    for f in MIRROR_NUMERIC:
        df[f] = _as_float(df[f])
    df = df.drop_duplicates(subset=ENTITY, keep="last")
    fits = np.array([len(str(u).encode()) <= MAX_ID_BYTES for u in df[ENTITY].tolist()], dtype=bool)
    df = df.loc[fits]
    ids = _fixed_width_ids(df[ENTITY].astype(str).tolist())
    order = np.argsort(ids, kind="stable")
    df = df.iloc[order].reset_index(drop=True)
    codes_cats = [_encode_categories(df[f].tolist()) for f in MIRROR_STRINGS]
    codes = np.stack([c for c, _ in codes_cats], axis=1) if codes_cats else np.empty((len(df), 0), np.int32)
    numeric = np.ascontiguousarray(df[MIRROR_NUMERIC].to_numpy(dtype=np.float64, na_value=np.nan))
    return _snapshot(
        ids[order], codes, tuple(c for _, c in codes_cats), numeric, materialized_at=materialized_at, as_of=as_of,
        t0=t0,
    )  # fmt: skip


def _snapshot(
    ids: np.ndarray,
    codes: np.ndarray,
    categories: tuple[np.ndarray, ...],
    numeric: np.ndarray,
    *,
    materialized_at: datetime | None,
    as_of: date | None,
    t0: float,
) -> FeatureSnapshot:
    if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
        raise ValueError("user ids of the online store are not unique")
    for a in (ids, codes, numeric):
        a.setflags(write=False)
    return FeatureSnapshot(
        ids=ids,
        codes=codes,
        categories=categories,
        numeric=numeric,
        materialized_at=materialized_at,
        as_of=as_of,
        loaded_at=time.time(),
        load_seconds=time.perf_counter() - t0,
    )


# ---- bulk read of Feast's PostgreSQL online tables ----------------------------------------------
def view_read_sql(settings: Settings, view: str) -> Any:
    """One feature view of Feast's PostgreSQL online store (``{project}_{view}``: a row per user and
    feature) as one row per user: the user id decoded from the entity key (prefix and length
    checked: anything else is NULL and fails the read), the view's features pivoted on
    ``value_text`` (Feast's text of each value) and typed (flags 1.0/0.0; anything unexpected fails
    the cast). Unordered: on tables the bulk writer wrote (heap in primary-key order) the session
    of :func:`read_view` makes it a streaming aggregate over the key index; Feast's own writer
    leaves no such order and the aggregate hashes."""
    from psycopg import sql

    from streamflow.features.online_codec import KEY_PREFIX_LENGTH, entity_key
    from streamflow.features.online_writer import online_table

    _, features = FEATURE_VIEWS[view]
    prefix = entity_key("")[: KEY_PREFIX_LENGTH - 4]
    n = len(prefix)  # the little-endian u32 length of the id follows the constant prefix
    length = sql.SQL(" + ").join(
        sql.SQL("(get_byte(entity_key, {}) << {})").format(sql.Literal(n + i), sql.Literal(8 * i)) for i in range(4)
    )

    def typed(f: str) -> sql.Composable:
        c = sql.SQL("max(value_text) FILTER (WHERE feature_name = {})").format(sql.Literal(f))
        kind = feature_kind(f)
        if kind == "string":
            return c
        if kind == "bool":
            return sql.SQL(
                "CASE {c} WHEN 'True' THEN 1.0::float8 WHEN 'False' THEN 0.0::float8 ELSE ({c})::float8 END"
            ).format(c=c)
        return sql.SQL("({})::float8").format(c)

    return sql.SQL(
        "SELECT CASE WHEN substring(entity_key FOR {n}) = {prefix} AND octet_length(entity_key) = {k} + {length}"
        " THEN convert_from(substring(entity_key FROM {start}), 'UTF8') END AS user_id, {cols}"
        " FROM {table} GROUP BY entity_key"
    ).format(
        n=sql.Literal(n),
        prefix=sql.Literal(prefix),
        k=sql.Literal(KEY_PREFIX_LENGTH),
        length=length,
        start=sql.Literal(KEY_PREFIX_LENGTH + 1),
        cols=sql.SQL(", ").join(sql.SQL("{} AS {}").format(typed(f), sql.Identifier(f)) for f in features),
        table=sql.Identifier(online_table(settings, view)),
    )


def _arrow_ids(column: Any) -> np.ndarray:
    """A pyarrow string column → fixed-width byte array (vectorised, no Python str per user)."""
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    arr = arr.cast(pa.large_binary())
    n = len(arr)
    if n == 0:
        return np.empty(0, dtype="S1")
    buffers = arr.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64, count=n + 1, offset=arr.offset * 8)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.empty(0, np.uint8)
    lengths = np.diff(offsets)
    width = max(int(lengths.max()), 1)
    if int(lengths.min()) == width:  # every id has the same length (the usual case): a view, no copy
        return data[offsets[0] : offsets[0] + n * width].copy().view(f"S{width}")
    out = np.zeros(n * width, dtype=np.uint8)
    total = int(lengths.sum())
    rows = np.repeat(np.arange(n, dtype=np.int64), lengths)
    within = np.arange(total, dtype=np.int64) - np.repeat(offsets[:-1] - offsets[0], lengths)
    out[rows * width + within] = data[offsets[0] : offsets[0] + total]
    return out.view(f"S{width}")


@dataclass
class _ViewColumns:
    ids: np.ndarray  # sorted S<w>
    strings: dict[str, tuple[np.ndarray, np.ndarray]]  # feature → (int32 codes, categories)
    numeric: dict[str, np.ndarray]  # feature → float64


def read_view(conn: Any, settings: Settings, view: str, use_threads: bool = True) -> _ViewColumns:
    """One view of the PostgreSQL online store, streamed as CSV and parsed by pyarrow."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from psycopg import sql
    from pyarrow import csv

    from streamflow.features.online_writer import online_table

    _, features = FEATURE_VIEWS[view]
    types = {ENTITY: pa.string(), **{f: pa.string() if f in MIRROR_STRINGS else pa.float64() for f in features}}
    row = conn.execute(
        "SELECT correlation FROM pg_stats WHERE schemaname = 'public' AND tablename = %s AND attname = 'entity_key'",
        (online_table(settings, view),),
    ).fetchone()
    clustered = row is not None and row[0] is not None and row[0] > CLUSTERED_CORRELATION
    conn.execute("SELECT set_config('enable_hashagg', %s, false)", ("off" if clustered else "on",))
    conn.execute("SELECT set_config('enable_sort', %s, false)", ("off" if clustered else "on",))
    query = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(view_read_sql(settings, view))
    t0 = time.perf_counter()
    buf = bytearray()
    with conn.cursor() as cur, cur.copy(query) as copy:
        for chunk in copy:  # one row per chunk (libpq): keep the loop minimal
            buf += chunk
    with pa.BufferReader(pa.py_buffer(buf)) as reader:
        table = csv.read_csv(
            reader,
            read_options=csv.ReadOptions(column_names=[ENTITY, *features], block_size=8 << 20, use_threads=use_threads),
            convert_options=csv.ConvertOptions(
                column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
            ),
        )
    log.debug("event=features_view_read view=%s rows=%d clustered=%s seconds=%.2f", view, table.num_rows, clustered,
              time.perf_counter() - t0)  # fmt: skip
    if table.num_rows and table.column(ENTITY).null_count:
        raise ValueError(f"online table of {view} holds entity keys that are not {ENTITY} keys (serialization v3)")
    strings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    numeric: dict[str, np.ndarray] = {}
    for f in features:
        col = table.column(f)
        if f in MIRROR_STRINGS:
            enc = col.combine_chunks().dictionary_encode()
            codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int32)
            strings[f] = (codes, np.array([*enc.dictionary.to_pylist(), MISSING_STRING], dtype=object))
        else:
            numeric[f] = pc.fill_null(col, math.nan).to_numpy()
    ids = _arrow_ids(table.column(ENTITY))
    if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):  # not in byte order: sort here
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        strings = {f: (c[order], cat) for f, (c, cat) in strings.items()}
        numeric = {f: v[order] for f, v in numeric.items()}
    return _ViewColumns(ids, strings, numeric)


def _widen(ids: np.ndarray, width: int) -> np.ndarray:
    return ids if ids.dtype.itemsize == width else ids.astype(f"S{width}")


def assemble(views: list[_ViewColumns]) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
    """(ids, codes, categories, numeric) over all views: aligned as they are when every view holds
    the same users (the usual case, checked), else on the union of their ids."""
    width = max((v.ids.dtype.itemsize for v in views), default=1)
    first = _widen(views[0].ids, width) if views else np.empty(0, dtype="S1")
    if all(np.array_equal(_widen(v.ids, width), first) for v in views[1:]):
        ids = first
        where: list[np.ndarray | None] = [None] * len(views)
    else:
        ids = _widen(views[0].ids, width)
        for v in views[1:]:
            ids = np.union1d(ids, _widen(v.ids, width))
        where = [np.searchsorted(ids, _widen(v.ids, width)) for v in views]
    n = len(ids)
    codes = np.full((n, len(MIRROR_STRINGS)), -1, dtype=np.int32)
    cats: list[np.ndarray] = [np.array([MISSING_STRING], dtype=object) for _ in MIRROR_STRINGS]
    numeric = np.full((n, len(MIRROR_NUMERIC)), np.nan, dtype=np.float64)
    for v, pos in zip(views, where, strict=True):
        target = slice(None) if pos is None else pos
        for f, (c, cat) in v.strings.items():
            j = MIRROR_STRINGS.index(f)
            codes[target, j] = c
            cats[j] = cat
        for f, values in v.numeric.items():
            numeric[target, MIRROR_NUMERIC.index(f)] = values
    # users whose every feature is missing are not in the online store (as Feast's reader says)
    present = (codes >= 0).any(axis=1) | ~np.isnan(numeric).all(axis=1)
    if not present.all():
        ids, codes, numeric = ids[present], codes[present], numeric[present]
    if ids.dtype.itemsize > MAX_ID_BYTES:  # ids the API cannot be asked for: leave them out
        keep = np.char.str_len(ids) <= MAX_ID_BYTES
        ids, codes, numeric = ids[keep].astype(f"S{MAX_ID_BYTES}"), codes[keep], numeric[keep]
    return ids, codes, tuple(cats), numeric


def connect_for_reload(conninfo: str, settings: Settings, gentle: bool = False) -> Any:
    """A connection of the bulk read (its own statement timeout). ``gentle`` (a reload while the
    previous snapshot serves): no parallel query workers, so the read takes one core at most."""
    import psycopg

    conn = psycopg.connect(
        conninfo,
        autocommit=True,
        connect_timeout=max(1, math.ceil(settings.feature_poll_timeout_seconds)),
        application_name=RELOAD_APP_NAME,
        options=f"-c statement_timeout={int(settings.feature_reload_timeout_seconds * 1000)}",
    )
    conn.execute("SELECT set_config('work_mem', %s, false)", (settings.feature_reload_work_mem,))
    if gentle:
        conn.execute("SELECT set_config('max_parallel_workers_per_gather', '0', false)")
    return conn


def read_bulk_postgres(
    conninfo: str, settings: Settings, gentle: bool = False
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
    """(ids, codes, categories, numeric) of every user of Feast's PostgreSQL online store: one
    streamed query per view, ``feature_reload_workers`` views at a time on their own connections
    (with the reload's statement timeout), assembled, and a sample checked against the ValueProto
    bytes. Stops at the fault point ``during_feature_reload`` (tests) with a connection open."""
    from concurrent.futures import ThreadPoolExecutor

    from streamflow.core.faults import fault_point

    def read(view: str) -> _ViewColumns:
        with connect_for_reload(conninfo, settings, gentle) as conn:
            return read_view(conn, settings, view, use_threads=not gentle)

    with connect_for_reload(conninfo, settings, gentle) as control:
        fault_point("during_feature_reload", settings)
        ordered = sorted(FEATURE_VIEWS, key=lambda v: -len(FEATURE_VIEWS[v][1]))  # largest first
        with ThreadPoolExecutor(max_workers=1 if gentle else settings.feature_reload_workers) as pool:
            parts = dict(zip(ordered, pool.map(read, ordered), strict=True))
        ids, codes, cats, numeric = assemble([parts[v] for v in FEATURE_VIEWS])
        del parts
        snap = _snapshot(ids, codes, cats, numeric, materialized_at=None, as_of=None, t0=time.perf_counter())
        verify_sample(control, settings, snap)
    return ids, codes, cats, numeric


def verify_sample(conn: Any, settings: Settings, snap: FeatureSnapshot) -> None:
    """Decode the ValueProto bytes of a random sample of users and compare: the text column the
    bulk read pivots on must say what Feast's values say."""
    if not len(snap):
        return
    rng = np.random.default_rng()
    sample = np.unique(rng.integers(0, len(snap), size=min(VERIFY_SAMPLE, len(snap))))
    users = [b.decode() for b in snap.ids[sample].tolist()]
    fetched = fetch_postgres(conn, settings, users)
    got = snap.rows(users)
    expected = rows_from_values(list(range(len(users))), [fetched.get(u, {}) for u in users])
    for j, u in enumerate(users):
        if got.features_json(j) != expected.features_json(j):
            raise ValueError(
                f"online store text and ValueProto of user {u!r} differ: {got.features_json(j)!r} vs "
                f"{expected.features_json(j)!r}"
            )


def lookup_sql(settings: Settings) -> Any:
    from psycopg import sql

    from streamflow.features.online_writer import online_table

    return sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT entity_key, feature_name, value FROM {} WHERE entity_key = ANY(%(keys)s)").format(
            sql.Identifier(online_table(settings, view))
        )
        for view in FEATURE_VIEWS
    )


def fetch_postgres(conn: Any, settings: Settings, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """user_id → {feature: value} for the ids present in Feast's PostgreSQL online tables (one
    indexed query), values decoded from Feast's ValueProto bytes."""
    keys = {entity_key(u): u for u in user_ids}
    out: dict[str, dict[str, Any]] = {}
    with conn.cursor() as cur:
        cur.execute(lookup_sql(settings), {"keys": list(keys)}, prepare=True)
        for key, name, raw in cur.fetchall():
            u = keys[bytes(key)]
            out.setdefault(u, {})[name] = decode_value(bytes(raw))
    return {u: v for u, v in out.items() if any(x is not None for x in v.values())}


# ---- Redis (Feast's Redis online store layout) ----------------------------------------------------
def redis_client(settings: Settings, pool_size: int | None = None) -> Any:
    """A Redis client; with ``pool_size``, a pool that makes a request wait (up to the lookup
    timeout) for a free connection instead of failing."""
    import redis

    timeout = settings.online_lookup_timeout_seconds
    if pool_size is None:
        return redis.Redis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=pool_size,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    return redis.Redis(connection_pool=pool)


def fetch_redis(client: Any, settings: Settings, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """user_id → {feature: value} for the ids present in Redis: one pipeline of HMGETs (one round trip)."""
    fields = redis_fields()
    names = [f for _, f, _ in fields]
    hash_fields = [h for _, _, h in fields]
    pipe = client.pipeline(transaction=False)
    for u in user_ids:
        pipe.hmget(redis_key(u, settings.feast_project), hash_fields)
    out: dict[str, dict[str, Any]] = {}
    for u, values in zip(user_ids, pipe.execute(), strict=True):
        if any(v for v in values):
            out[u] = {f: (decode_value(v) if v else None) for f, v in zip(names, values, strict=True)}
    return out


def read_bulk_redis(client: Any, settings: Settings) -> pd.DataFrame:
    """Every user in Redis (SCAN of Feast's keys of this project, pipelined HMGETs)."""
    from streamflow.features.online_codec import KEY_PREFIX_LENGTH, user_id_of

    prefix = entity_key("")[: KEY_PREFIX_LENGTH - 4]
    project = settings.feast_project.encode()
    fields = redis_fields()
    names = [f for _, f, _ in fields]
    hash_fields = [h for _, _, h in fields]
    cache: dict[bytes, Any] = {}
    ids: list[str] = []
    columns: list[list[Any]] = [[] for _ in names]
    batch: list[bytes] = []

    def flush() -> None:
        pipe = client.pipeline(transaction=False)
        for k in batch:
            pipe.hmget(k, hash_fields)
        for k, values in zip(batch, pipe.execute(), strict=True):
            if not any(values):
                continue
            ids.append(user_id_of(k[: len(k) - len(project)]))
            for col, v in zip(columns, values, strict=True):
                if not v:
                    col.append(None)
                    continue
                d = cache.get(v, cache)
                if d is cache:
                    d = decode_value(v)
                    if len(cache) < 100_000:
                        cache[v] = d
                col.append(d)
        batch.clear()

    for key in client.scan_iter(match=prefix + b"*" + project, count=REDIS_SCAN_COUNT):
        if key.endswith(project):
            batch.append(key)
            if len(batch) >= REDIS_CHUNK:
                flush()
    if batch:
        flush()
    return pd.DataFrame({ENTITY: ids, **dict(zip(names, columns, strict=True))})[[ENTITY, *FEATURES]]


# ---- health, staleness, reloads -------------------------------------------------------------------
@dataclass(frozen=True)
class Materialization:
    materialized_at: datetime | None
    as_of: date | None
    online_store_stale: bool = False
    online_store_reason: str | None = None


class OnlineFeatures:
    """What /predict needs from the online store, whichever way it is read: ``available``,
    ``unavailable_reason()``, ``lookup(user_ids)``, and the status /ready reports."""

    mode = "mirror"
    blocking = False  # lookups do I/O: run them off the event loop

    def __init__(self, settings: Settings, metrics: ApiMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.db_ok = False
        self.last_error: str | None = None
        self.latest: Materialization | None = None
        self._conninfo: str | None = None
        self._conn: Any = None
        self._lock = threading.Lock()
        self._poll = PeriodicTask("feature-poll", settings.feature_poll_seconds, self.check, join_timeout=15)

    # database ---------------------------------------------------------------------------------
    def conninfo(self) -> str:
        if self._conninfo is None:
            # Resolved once: for the embedded PostgreSQL this attaches to (or starts) it;
            # afterwards the API only ever connects, so a stopped database stays stopped.
            from streamflow.db.engine import libpq_url

            self._conninfo = libpq_url(self.settings)
        return self._conninfo

    def connect(self, timeout_seconds: float, application_name: str) -> Any:
        import psycopg

        return psycopg.connect(
            self.conninfo(),
            autocommit=True,
            connect_timeout=max(1, math.ceil(self.settings.feature_poll_timeout_seconds)),
            application_name=application_name,
            options=f"-c statement_timeout={int(timeout_seconds * 1000)}",
        )

    def _poll_conn(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = self.connect(self.settings.feature_poll_timeout_seconds, POLL_APP_NAME)
        return self._conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken
                conn.close()

    def _latest_materialization(self) -> Materialization:
        from streamflow.features.online_state import online_store_state_from

        state = online_store_state_from(self._poll_conn())
        return Materialization(
            materialized_at=datetime.fromisoformat(state.materialized_at) if state.materialized_at else None,
            as_of=date.fromisoformat(state.as_of) if state.as_of else None,
            online_store_stale=state.stale,
            online_store_reason=state.reason if state.stale else None,
        )

    # the interface -------------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        raise NotImplementedError

    @property
    def servable(self) -> bool:
        """Predictions can be answered (the mirror: a snapshot is loaded, even while the database
        is unreachable; direct lookups: the store answers)."""
        return self.available

    def unavailable_reason(self) -> str:
        raise NotImplementedError

    def lookup(self, user_ids: Sequence[str]) -> FeatureRows:
        raise NotImplementedError

    def stale(self) -> tuple[bool, str | None]:
        """(stale, reason): the features served are not the newest the data path has."""
        latest = self.latest
        if latest is not None and latest.online_store_stale:
            return True, f"online store: {latest.online_store_reason}"
        return False, None

    def status(self) -> dict[str, Any]:
        """The ``features`` object of /ready."""
        stale, reason = self.stale()
        latest = self.latest
        return {
            "mode": self.mode,
            "store": self.settings.online_store,
            "reachable": self.db_ok,
            "users": None,
            "as_of": str(latest.as_of) if latest and latest.as_of else None,
            "materialized_at": latest.materialized_at.isoformat() if latest and latest.materialized_at else None,
            "stale": stale,
            "stale_reason": reason,
            "error": self.last_error,
        }

    def unready_reason(self) -> str | None:
        """Why /ready must answer 503 because of the features (None: serve)."""
        if not self.available:
            return self.unavailable_reason()
        return None

    def _publish(self) -> None:
        m = self.metrics
        if m is None:
            return
        stale, _ = self.stale()
        m.features_stale.set(1 if stale else 0)

    def check(self, force: bool = False) -> bool:
        """Health check (+ reload for the mirror). Never raises."""
        with self._lock:
            try:
                latest = self._latest_materialization()
            except Exception as exc:
                self._close()
                msg = _one_line(exc)
                if self.db_ok or self.last_error != msg:
                    log.warning("event=feature_store_unreachable error=%r", msg)
                self.db_ok = False
                self.last_error = msg
                self._publish()
                return False
            if not self.db_ok:
                log.info("event=feature_store_reachable")
            self.db_ok = True
            self.latest = latest
            try:
                return self._after_poll(latest, force)
            finally:
                self._publish()

    def _after_poll(self, latest: Materialization, force: bool) -> bool:
        self.last_error = None if latest.materialized_at else "the online store was never materialized"
        return False

    def start(self) -> None:
        self._poll.start()

    def stop(self) -> None:
        self._poll.stop()
        self._close()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


class FeatureMirror(OnlineFeatures):
    """Every user's features in memory, reloaded when a new materialization appears."""

    mode = "mirror"
    blocking = False

    def __init__(self, settings: Settings, source: OnlineSource = "direct", metrics: ApiMetrics | None = None) -> None:
        super().__init__(settings, metrics)
        self.source = source
        self.snapshot: FeatureSnapshot | None = None
        self.reload_failures = 0  # consecutive
        self.next_reload_at = 0.0  # monotonic; backoff after failures
        self.reload_started: float | None = None
        self._store: Any = None
        self._loader: Any = None  # the running loader process
        self._files: Path | None = None  # the .npy files the snapshot maps

    @property
    def available(self) -> bool:
        return self.db_ok and self.snapshot is not None

    @property
    def servable(self) -> bool:
        return self.snapshot is not None  # keeps serving its snapshot through a database outage

    def unavailable_reason(self) -> str:
        if not self.db_ok:
            return f"feature store unreachable: {self.last_error or 'not checked yet'}"
        if self.snapshot is None:
            return f"online features not loaded yet: {self.last_error or 'loading'}"
        return ""

    def lookup(self, user_ids: Sequence[str]) -> FeatureRows:
        snap = self.snapshot
        if snap is None:
            raise FeatureStoreUnavailable(self.unavailable_reason())
        return snap.rows(user_ids)

    # staleness ---------------------------------------------------------------------------------
    def stale(self) -> tuple[bool, str | None]:
        snap, latest = self.snapshot, self.latest
        if snap is not None and latest is not None and latest.materialized_at != snap.materialized_at:
            served = f"serving the snapshot of as_of {snap.as_of} (materialized {_iso(snap.materialized_at)})"
            if self.reload_failures:
                wait = max(0.0, self.next_reload_at - time.monotonic())
                return True, (
                    f"reload of the materialization of {_iso(latest.materialized_at)} failed "
                    f"{self.reload_failures} time(s), next attempt in {wait:.0f} s: {self.last_error}; {served}"
                )
            if self.reload_started is not None:
                return True, f"reloading the materialization of {_iso(latest.materialized_at)}; {served}"
            return True, f"a newer materialization ({_iso(latest.materialized_at)}) is not loaded yet; {served}"
        return super().stale()

    def stale_seconds(self) -> float:
        """How long the served snapshot has been behind the newest materialization (0: it is not)."""
        snap, latest = self.snapshot, self.latest
        if (
            snap is None
            or latest is None
            or latest.materialized_at is None
            or latest.materialized_at == snap.materialized_at
        ):
            return 0.0
        return max(0.0, datetime.now(UTC).timestamp() - latest.materialized_at.timestamp())

    def unready_reason(self) -> str | None:
        reason = super().unready_reason()
        if reason:
            return reason
        limit = self.settings.feature_max_stale_seconds
        if limit > 0 and self.stale_seconds() > limit:
            return f"features stale for more than {limit:g} s (STREAMFLOW_FEATURE_MAX_STALE_SECONDS): {self.stale()[1]}"
        return None

    def status(self) -> dict[str, Any]:
        out = super().status()
        snap = self.snapshot
        out.update(
            users=len(snap) if snap else 0,
            as_of=str(snap.as_of) if snap and snap.as_of else None,
            materialized_at=snap.materialized_at.isoformat() if snap and snap.materialized_at else None,
            loaded_at=_iso(datetime.fromtimestamp(snap.loaded_at, UTC)) if snap else None,
            reload_failures=self.reload_failures,
        )
        return out

    # reading the online store -----------------------------------------------------------------
    def read_snapshot(self, latest: Materialization | None = None, started: float | None = None) -> FeatureSnapshot:
        """Every user's online features as a new snapshot, read in this process."""
        return self._read_snapshot(latest, started, in_process=True)

    def _read_snapshot(
        self, latest: Materialization | None, started: float | None, *, in_process: bool
    ) -> FeatureSnapshot:
        """Every user's online features as a new snapshot (bulk read on its own connection, with
        ``feature_reload_timeout_seconds``, never the poll's short timeout)."""
        t0 = started if started is not None else time.perf_counter()
        materialized_at = latest.materialized_at if latest else None
        as_of = latest.as_of if latest else None
        if self.source == "feast":
            frame = self.read_online_feast(self._user_ids())
            return build_snapshot(frame, materialized_at=materialized_at, as_of=as_of, started=t0)
        if self.settings.online_store == "redis":
            client = redis_client(self.settings)
            try:
                frame = read_bulk_redis(client, self.settings)
            finally:
                client.close()
            return build_snapshot(frame, materialized_at=materialized_at, as_of=as_of, started=t0)
        if in_process:
            ids, codes, cats, numeric = read_bulk_postgres(self.conninfo(), self.settings)
        else:
            ids, codes, cats, numeric = self._load_in_child()
        return _snapshot(ids, codes, cats, numeric, materialized_at=materialized_at, as_of=as_of, t0=t0)

    # the loader process -----------------------------------------------------------------------------
    def _features_dir(self) -> Path:
        root = self.settings.run_dir / "features"
        root.mkdir(parents=True, exist_ok=True)
        return root

    def _load_in_child(self) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
        """Run the bulk read in a child process (``python -m streamflow.serving.mirror_loader``): its
        CPU, memory and GIL are not the API's. It leaves the arrays as .npy files that this process
        maps read-only (pages are file-backed: the kernel may reclaim them)."""
        import subprocess
        import sys
        import tempfile

        out = Path(tempfile.mkdtemp(prefix=f"pid{os.getpid()}-", dir=self._features_dir()))
        # The first load may take the whole machine (nothing is served yet); a reload runs gently:
        # one connection, no parallel query workers, one parsing thread, a lower CPU priority.
        gentle = self.snapshot is not None
        payload = json.dumps({"settings": settings_json(self.settings), "conninfo": self.conninfo(), "gentle": gentle})
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamflow.serving.mirror_loader", str(out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        self._loader = proc
        try:
            proc.communicate(payload.encode(), timeout=self.settings.feature_reload_timeout_seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            _remove_dir(out)
            raise TimeoutError("the mirror's loader process did not finish in time") from None
        finally:
            self._loader = None
        if proc.returncode != 0:
            error = out / "error.txt"
            message = error.read_text().strip() if error.is_file() else f"loader process exited with {proc.returncode}"
            _remove_dir(out)
            raise RuntimeError(message)
        try:
            ids = np.load(out / "ids.npy", mmap_mode="r")
            codes = np.load(out / "codes.npy", mmap_mode="r")
            numeric = np.load(out / "numeric.npy", mmap_mode="r")
            cats = tuple(np.array(c, dtype=object) for c in json.loads((out / "categories.json").read_text()))
        except Exception:
            _remove_dir(out)
            raise
        previous, self._files = self._files, out
        if previous is not None:  # mapped pages stay valid for requests still reading them
            _remove_dir(previous)
        return ids, codes, cats, numeric

    def _remove_stale_dirs(self) -> None:
        """Files left by API processes that died without cleaning up."""
        from streamflow.core.processes import pid_alive

        with contextlib.suppress(OSError):
            for d in self._features_dir().iterdir():
                pid = d.name.removeprefix("pid").split("-", 1)[0]
                if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                    _remove_dir(d)

    def read_online_direct(self) -> pd.DataFrame:
        """Every user's online features as a frame (user_id + the 14 features), through the bulk read."""
        return self.read_snapshot().frame()

    def _user_ids(self) -> list[str]:
        with self.connect(self.settings.feature_reload_timeout_seconds, RELOAD_APP_NAME) as conn:
            return [r[0] for r in conn.execute(f"SELECT {ENTITY} FROM users ORDER BY {ENTITY}").fetchall()]

    def _feature_store(self) -> Any:
        if self._store is None:
            from streamflow.features.store import get_feature_store

            self._store = get_feature_store(self.settings)
        return self._store

    def read_online_feast(self, user_ids: Sequence[str]) -> pd.DataFrame:
        """The same through Feast's public API (``get_online_features`` in batches): the reference."""
        from streamflow.features.store import ONLINE_FEATURE_REFS

        store = self._feature_store()
        parts = []
        for start in range(0, len(user_ids), FEAST_BATCH):
            rows = [{ENTITY: u} for u in user_ids[start : start + FEAST_BATCH]]
            response = store.get_online_features(features=ONLINE_FEATURE_REFS, entity_rows=rows)
            parts.append(pd.DataFrame(response.to_dict()))
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in [ENTITY, *FEATURES]})
        return pd.concat(parts, ignore_index=True)[[ENTITY, *FEATURES]]

    # reloads -----------------------------------------------------------------------------------------
    def _backoff(self) -> float:
        """Seconds until the next attempt after ``reload_failures`` consecutive failures:
        exponential from the poll interval, capped, with full jitter in its upper half."""
        base = max(self.settings.feature_poll_seconds, 0.5)
        cap = self.settings.feature_reload_backoff_max_seconds
        delay = min(cap, base * 2 ** (self.reload_failures - 1))
        return random.uniform(delay / 2, delay)

    def _reload(self, latest: Materialization) -> FeatureSnapshot:
        t0 = time.perf_counter()
        self.reload_started = t0
        try:
            snap = self._read_snapshot(
                latest, t0, in_process=self.source != "direct" or self.settings.online_store != "postgres"
            )
        finally:
            self.reload_started = None
        previous = self.snapshot
        self.snapshot = snap  # the swap: one reference assignment
        log.info(
            "event=features_loaded source=%s store=%s users=%d as_of=%s materialized_at=%s previous_users=%s "
            "load_seconds=%.3f bytes=%d",
            self.source,
            self.settings.online_store,
            len(snap),
            snap.as_of,
            _iso(snap.materialized_at),
            len(previous) if previous else None,
            snap.load_seconds,
            snap.nbytes,
        )
        m = self.metrics
        if m is not None:
            m.feature_reloads.inc()
            m.feature_last_reload.set(snap.loaded_at)
            m.feature_reload_seconds.set(snap.load_seconds)
            m.feature_users.set(len(snap))
            if snap.as_of is not None:
                m.features_as_of.set(
                    datetime(snap.as_of.year, snap.as_of.month, snap.as_of.day, tzinfo=UTC).timestamp()
                )
        return snap

    def _after_poll(self, latest: Materialization, force: bool) -> bool:
        snap = self.snapshot
        if not force and snap is not None and snap.materialized_at == latest.materialized_at:
            self.last_error = None
            return False
        if latest.materialized_at is None and not force:
            self.last_error = "the online store was never materialized"
            return False
        if not force and self.reload_failures and time.monotonic() < self.next_reload_at:
            return False  # backing off; /ready reports the failure and the next attempt
        try:
            self._reload(latest)
        except Exception as exc:
            self.reload_failures += 1
            delay = self._backoff()
            self.next_reload_at = time.monotonic() + delay
            self.last_error = _one_line(exc)
            if self.metrics is not None:
                self.metrics.feature_reload_failures.inc()
            log.warning(
                "event=features_load_failed serving_users=%s serving_as_of=%s failures=%d retry_in_seconds=%.1f "
                "error=%r",
                len(snap) if snap else None,
                snap.as_of if snap else None,
                self.reload_failures,
                delay,
                self.last_error,
            )
            if _connection_lost(exc):
                self._close()
            return False
        self.reload_failures = 0
        self.next_reload_at = 0.0
        self.last_error = None
        return True

    def start(self) -> None:
        self._remove_stale_dirs()
        super().start()

    def stop(self) -> None:
        loader = self._loader
        if loader is not None and loader.poll() is None:
            loader.terminate()
        super().stop()
        if self._files is not None:
            _remove_dir(self._files)


def _remove_dir(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _connection_lost(exc: BaseException) -> bool:
    import psycopg

    return isinstance(exc, psycopg.OperationalError)


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts else None


class DirectLookup(OnlineFeatures):
    """One indexed lookup in the online store per request (or batch); nothing held in memory."""

    mode = "direct"
    blocking = True

    def __init__(self, settings: Settings, metrics: ApiMetrics | None = None) -> None:
        super().__init__(settings, metrics)
        self._pool: Any = None
        self._redis: Any = None
        self._pool_lock = threading.Lock()

    @property
    def available(self) -> bool:
        latest = self.latest
        return self.db_ok and latest is not None and latest.materialized_at is not None

    def unavailable_reason(self) -> str:
        if not self.db_ok:
            return f"feature store unreachable: {self.last_error or 'not checked yet'}"
        return f"online store not ready: {self.last_error or 'not materialized yet'}"

    def _postgres_pool(self) -> Any:
        with self._pool_lock:
            if self._pool is None:
                from psycopg_pool import ConnectionPool

                s = self.settings
                self._pool = ConnectionPool(
                    self.conninfo(),
                    min_size=1,
                    max_size=s.online_pool_size,
                    timeout=s.online_lookup_timeout_seconds,
                    kwargs={
                        "autocommit": True,
                        "application_name": LOOKUP_APP_NAME,
                        "options": f"-c statement_timeout={int(s.online_lookup_timeout_seconds * 1000)}",
                    },
                    name="streamflow-online-lookup",
                    open=True,
                )
            return self._pool

    def _redis_client(self) -> Any:
        with self._pool_lock:
            if self._redis is None:
                self._redis = redis_client(self.settings, pool_size=self.settings.online_pool_size)
            return self._redis

    def fetch(self, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        try:
            if self.settings.online_store == "redis":
                return fetch_redis(self._redis_client(), self.settings, user_ids)
            with self._postgres_pool().connection() as conn:
                return fetch_postgres(conn, self.settings, user_ids)
        except Exception as exc:
            raise FeatureStoreUnavailable(f"online store lookup failed: {_one_line(exc)}") from exc

    def lookup(self, user_ids: Sequence[str]) -> FeatureRows:
        fetched = self.fetch(user_ids)
        found = [i for i, u in enumerate(user_ids) if u in fetched]
        latest = self.latest
        return rows_from_values(found, [fetched[user_ids[i]] for i in found], latest.as_of if latest else None)

    def status(self) -> dict[str, Any]:
        out = super().status()
        out["pool_size"] = self.settings.online_pool_size
        return out

    def _after_poll(self, latest: Materialization, force: bool) -> bool:
        super()._after_poll(latest, force)
        m = self.metrics
        if m is not None and latest.as_of is not None:
            m.features_as_of.set(
                datetime(latest.as_of.year, latest.as_of.month, latest.as_of.day, tzinfo=UTC).timestamp()
            )
        return False

    def start(self) -> None:
        # connect before the first request rather than on it
        with contextlib.suppress(Exception):
            if self.settings.online_store == "redis":
                self._redis_client().ping()
            else:
                self._postgres_pool()
        super().start()

    def stop(self) -> None:
        super().stop()
        with self._pool_lock:
            pool, self._pool = self._pool, None
            client, self._redis = self._redis, None
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.close(timeout=5)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()


def online_features(settings: Settings, metrics: ApiMetrics | None = None) -> OnlineFeatures:
    """The API's online features as the settings choose (``online_lookup``)."""
    if settings.online_lookup == "direct":
        return DirectLookup(settings, metrics)
    return FeatureMirror(settings, metrics=metrics)
