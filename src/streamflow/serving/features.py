"""An in-process mirror of the Feast online store, invalidated by materialization.

Every user's latest 14 features are read in bulk from the online store (Feast's
PostgreSQL online tables decoded with Feast's codecs, or ``get_online_features`` in
batches — see ``FeatureMirror.read_online``) into numpy arrays the model consumes directly, plus
the pre-encoded JSON of ``features_used``. A background thread checks
``max(materialized_at)`` of ``feature_materializations`` every
``settings.feature_poll_seconds``: a change reloads the mirror; a failing query marks the
feature store unavailable (``/ready`` fails, ``/predict`` answers 503) until the
database answers again. No prediction is cached — only the online store's content.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from streamflow.onnx_layout import MISSING_STRING
from streamflow.schema import ENTITY, FEATURE_DTYPES, FEATURE_VIEWS, FEATURES
from streamflow.serving.model_holder import MIRROR_NUMERIC, MIRROR_STRINGS
from streamflow.serving.poller import PeriodicTask
from streamflow.settings import Settings

log = logging.getLogger(__name__)

FEAST_BATCH = 1000
DB_TIMEOUT_SECONDS = 3


OnlineSource = Literal["direct", "feast"]


@dataclass(frozen=True)
class FeatureSnapshot:
    """Immutable: a reload builds a new one and swaps the reference."""

    index: dict[str, int]
    strings: np.ndarray  # object [N, len(MIRROR_STRINGS)], missing = ""
    numeric: np.ndarray  # float32 [N, len(MIRROR_NUMERIC)], missing = NaN
    features_json: list[bytes] = field(repr=False)  # per row: the "features_used" object
    materialized_at: datetime | None
    as_of: date | None
    loaded_at: float
    load_seconds: float

    def __len__(self) -> int:
        return len(self.index)


def _json_value(v: Any, dtype: str) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if dtype == "int64":
        return int(v)
    if dtype == "float64":
        return float(v)
    return str(v)


def build_snapshot(
    frame: pd.DataFrame,
    *,
    materialized_at: datetime | None = None,
    as_of: date | None = None,
    started: float | None = None,
) -> FeatureSnapshot:
    """From a frame of user_id + the 14 features (any dtypes the online store returns).
    Users whose 14 features are all missing are not in the online store: left out."""
    from streamflow.features.dataset import coerce_feature_dtypes

    t0 = started if started is not None else time.perf_counter()
    present = frame[FEATURES].notna().any(axis=1)
    df = coerce_feature_dtypes(frame.loc[present, [ENTITY, *FEATURES]].reset_index(drop=True))
    df = df.drop_duplicates(subset=ENTITY, keep="last").reset_index(drop=True)
    ids = df[ENTITY].astype(str).tolist()
    strings = df[MIRROR_STRINGS].astype(object)
    strings = strings.where(strings.notna(), MISSING_STRING).to_numpy(dtype=object)
    numeric = np.ascontiguousarray(df[MIRROR_NUMERIC].to_numpy(dtype=np.float32, na_value=np.nan))
    columns = {f: df[f].tolist() for f in FEATURES}
    features_json = [
        json.dumps(
            {f: _json_value(columns[f][i], FEATURE_DTYPES[f]) for f in FEATURES}, separators=(",", ":"), allow_nan=False
        ).encode()
        for i in range(len(ids))
    ]
    strings.setflags(write=False)
    numeric.setflags(write=False)
    return FeatureSnapshot(
        index={u: i for i, u in enumerate(ids)},
        strings=strings,
        numeric=numeric,
        features_json=features_json,
        materialized_at=materialized_at,
        as_of=as_of,
        loaded_at=time.time(),
        load_seconds=time.perf_counter() - t0,
    )


class FeatureMirror:
    def __init__(self, settings: Settings, source: OnlineSource = "direct") -> None:
        self.settings = settings
        self.source = source
        self.snapshot: FeatureSnapshot | None = None
        self.db_ok = False
        self.last_error: str | None = None
        self._conninfo: str | None = None
        self._conn: Any = None
        self._store: Any = None
        self._lock = threading.Lock()
        self._poll = PeriodicTask("feature-poll", settings.feature_poll_seconds, self.check, join_timeout=15)

    @property
    def available(self) -> bool:
        return self.db_ok and self.snapshot is not None

    def unavailable_reason(self) -> str:
        if not self.db_ok:
            return f"feature store unreachable: {self.last_error or 'not checked yet'}"
        if self.snapshot is None:
            return f"online features not loaded yet: {self.last_error or 'loading'}"
        return ""

    # database --------------------------------------------------------------------------
    def _connect(self) -> Any:
        import psycopg

        if self._conninfo is None:
            # Resolved once: for the embedded PostgreSQL this attaches to (or starts) it;
            # afterwards the API only ever connects, so a stopped database stays stopped.
            from streamflow.db.engine import libpq_url

            self._conninfo = libpq_url(self.settings)
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=DB_TIMEOUT_SECONDS,
                options=f"-c statement_timeout={DB_TIMEOUT_SECONDS * 1000}",
            )
        return self._conn

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken
                conn.close()

    def _latest_materialization(self) -> tuple[datetime | None, date | None]:
        conn = self._connect()
        row = conn.execute(
            "SELECT materialized_at, as_of FROM feature_materializations ORDER BY materialized_at DESC LIMIT 1"
        ).fetchone()
        return (row[0], row[1]) if row else (None, None)

    def _user_ids(self) -> list[str]:
        conn = self._connect()
        return [r[0] for r in conn.execute(f"SELECT {ENTITY} FROM users ORDER BY {ENTITY}").fetchall()]

    # online store ------------------------------------------------------------------
    def read_online(self) -> pd.DataFrame:
        """Every user's online features: user_id + the 14 features (as Feast decodes them)."""
        return self.read_online_direct() if self.source == "direct" else self.read_online_feast(self._user_ids())

    def read_online_direct(self) -> pd.DataFrame:
        """Read Feast's PostgreSQL online tables (``{project}_{feature_view}``) in one query
        per view and decode them with Feast's own codecs (entity key v3, ValueProto).
        ~0.4 s for 7,043 users vs ~2.5 s through ``get_online_features``; a test checks
        both agree."""
        from feast.infra.key_encoding_utils import deserialize_entity_key
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type

        from streamflow.thirdparty import after_feast_import

        after_feast_import()
        from psycopg import sql

        conn = self._connect()
        keys: dict[bytes, str] = {}
        columns: dict[str, dict[str, Any]] = {f: {} for f in FEATURES}
        for view, (_, features) in FEATURE_VIEWS.items():
            table = sql.Identifier(f"{self.settings.feast_project}_{view}")
            query = sql.SQL("SELECT entity_key, feature_name, value FROM {} WHERE feature_name = ANY(%s)").format(table)
            for key, name, raw in conn.execute(query, (features,)).fetchall():
                key = bytes(key)
                user_id = keys.get(key)
                if user_id is None:
                    user_id = keys[key] = str(deserialize_entity_key(key, 3).entity_values[0].string_val)
                columns[name][user_id] = feast_value_type_to_python_type(Value.FromString(bytes(raw)))
        ids = sorted(keys.values())
        return pd.DataFrame({ENTITY: ids, **{f: [columns[f].get(u) for u in ids] for f in FEATURES}})

    def _feature_store(self) -> Any:
        if self._store is None:
            from streamflow.features.store import get_feature_store

            self._store = get_feature_store(self.settings)
        return self._store

    def read_online_feast(self, user_ids: Sequence[str]) -> pd.DataFrame:
        """The same through Feast's public API (``get_online_features`` in batches)."""
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

    def _reload(self, materialized_at: datetime | None, as_of: date | None) -> FeatureSnapshot:
        t0 = time.perf_counter()
        frame = self.read_online()
        snap = build_snapshot(frame, materialized_at=materialized_at, as_of=as_of, started=t0)
        previous = self.snapshot
        self.snapshot = snap
        log.info(
            "event=features_loaded source=%s users=%d as_of=%s materialized_at=%s previous_users=%s load_seconds=%.3f",
            self.source,
            len(snap),
            as_of,
            materialized_at.isoformat() if materialized_at else None,
            len(previous) if previous else None,
            snap.load_seconds,
        )
        return snap

    def check(self, force: bool = False) -> bool:
        """Health check + invalidation. Returns True if the mirror was reloaded. Never raises."""
        with self._lock:
            try:
                materialized_at, as_of = self._latest_materialization()
            except Exception as exc:
                self._close()
                msg = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
                if self.db_ok or self.last_error != msg:
                    log.warning("event=feature_store_unreachable error=%r", msg)
                self.db_ok = False
                self.last_error = msg
                return False
            if not self.db_ok:
                log.info("event=feature_store_reachable")
            self.db_ok = True
            snap = self.snapshot
            if not force and snap is not None and snap.materialized_at == materialized_at:
                self.last_error = None
                return False
            if materialized_at is None and not force:
                self.last_error = "the online store was never materialized"
                return False
            try:
                self._reload(materialized_at, as_of)
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "event=features_load_failed serving_users=%s error=%r",
                    len(snap) if snap else None,
                    self.last_error,
                )
                return False
            self.last_error = None
            return True

    # background poll -------------------------------------------------------------------
    def start(self) -> None:
        self._poll.start()

    def stop(self) -> None:
        self._poll.stop()
        self._close()
