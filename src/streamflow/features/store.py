"""The Feast feature store of StreamFlow: repo config generated from settings, feature
definitions (entity ``user``, four feature views over the snapshot tables), apply and
materialize."""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import psycopg
import sqlalchemy as sa
import yaml
from feast import Entity, FeatureStore, FeatureView, Field, RepoConfig
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
from feast.types import Bool, FeastType, Float64, Int64, String
from feast.value_type import ValueType

from streamflow.core.data_model import FEATURE_REFS, FEATURE_VIEWS, FLAG_FEATURES, FLOAT_FEATURES, INT_FEATURES
from streamflow.core.fileio import SECRET_MODE, atomic_write_text
from streamflow.core.home import ensure_private_home, private_dir
from streamflow.core.progress import ProgressCallback, no_progress
from streamflow.core.settings import Settings
from streamflow.core.thirdparty import after_feast_import
from streamflow.db.engine import feast_pg_params, feast_sqlalchemy_url, get_engine
from streamflow.db.schema import migrate

after_feast_import()  # Feast's import re-enables every library's deprecation warnings: undo it
log = logging.getLogger(__name__)

ONLINE_FEATURE_REFS: list[str] = list(FEATURE_REFS)
T = TypeVar("T")
TIMESTAMP_FIELD = "as_of"


def _feast_type(feature: str) -> FeastType:
    if feature in INT_FEATURES:
        return Int64
    if feature in FLOAT_FEATURES:
        return Float64
    if feature in FLAG_FEATURES:
        return Bool
    return String


def repo_config_dict(settings: Settings) -> dict[str, object]:
    """The feature_store.yaml content, derived from settings (no literal host/password): Feast's
    own role (``STREAMFLOW_FEAST_DATABASE_URL``) for the registry and both stores."""
    p = feast_pg_params(settings)
    pg = {
        "host": p.host,
        "port": p.port,
        "database": p.database,
        "db_schema": "public",
        "user": p.user,
        "password": p.password,
        "sslmode": settings.db_sslmode,
    }
    online: dict[str, object] = (
        {"type": "redis", "connection_string": feast_redis_connection_string(settings.redis_url)}
        if settings.online_store == "redis"
        else {"type": "postgres", **pg}
    )
    return {
        "project": settings.feast_project,
        "provider": "local",
        "registry": {
            "registry_type": "sql",
            "path": feast_sqlalchemy_url(settings),
            "cache_ttl_seconds": 60,
            "sqlalchemy_config_kwargs": {"pool_pre_ping": True},
        },
        "online_store": online,
        "offline_store": {"type": "postgres", **pg},
        "entity_key_serialization_version": 3,
    }


def feast_redis_connection_string(redis_url: str) -> str:
    """``redis://[user:password@]host:port/db`` (or ``rediss://``) → Feast's Redis connection string
    ``host:port,db=N[,username=…][,password=…][,ssl=true]``."""
    from urllib.parse import unquote, urlsplit

    url = urlsplit(redis_url)
    if url.scheme not in ("redis", "rediss") or not url.hostname:
        raise ValueError(f"STREAMFLOW_REDIS_URL must be redis://host:port/db or rediss://…, got {redis_url!r}")
    parts = [f"{url.hostname}:{url.port or 6379}"]
    db = url.path.lstrip("/")
    parts.append(f"db={int(db) if db else 0}")
    if url.username:
        parts.append(f"username={unquote(url.username)}")
    if url.password:
        parts.append(f"password={unquote(url.password)}")
    if url.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def write_repo_config(settings: Settings) -> Path:
    """Write feature_store.yaml (0600: it holds the DB password) for the `feast` CLI."""
    repo = settings.feast_repo_dir
    ensure_private_home(settings.home)
    private_dir(repo)
    path = repo / "feature_store.yaml"
    atomic_write_text(path, yaml.safe_dump(repo_config_dict(settings), sort_keys=False), mode=SECRET_MODE)
    return path


@lru_cache(maxsize=4)
def _store_for(config_yaml: str, repo_path: str) -> FeatureStore:
    cfg = RepoConfig(repo_path=Path(repo_path), **yaml.safe_load(config_yaml))
    return FeatureStore(config=cfg)


def get_feature_store(settings: Settings) -> FeatureStore:
    """The store, built in memory from settings (cached); the yaml file is for the `feast` CLI
    and is (re)written when the definitions are applied."""
    return _store_for(yaml.safe_dump(repo_config_dict(settings)), str(settings.feast_repo_dir))


user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="A subscriber")


def feature_views() -> list[FeatureView]:
    views = []
    for fv_name, (table, features) in FEATURE_VIEWS.items():
        source = PostgreSQLSource(name=f"{table}_source", table=table, timestamp_field=TIMESTAMP_FIELD)
        views.append(
            FeatureView(
                name=fv_name,
                entities=[user],
                ttl=timedelta(0),  # 0 = no expiry: a snapshot stays valid until the next one
                schema=[Field(name=f, dtype=_feast_type(f)) for f in features],
                source=source,
                online=True,
                tags={"snapshot_table": table},
            )
        )
    return views


def _reconnecting(settings: Settings, action: Callable[[FeatureStore], T]) -> T:
    """Run ``action`` on the cached store; if the database dropped its connections (server
    restarted), rebuild the store once and retry instead of failing on a dead connection."""
    try:
        return action(get_feature_store(settings))
    except psycopg.OperationalError as exc:
        log.warning("event=feast_reconnect reason=%r", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        _store_for.cache_clear()
        return action(get_feature_store(settings))


def apply_definitions(settings: Settings) -> FeatureStore:
    def apply(store: FeatureStore) -> FeatureStore:
        with contextlib.redirect_stdout(io.StringIO()):
            store.apply([user, *feature_views()])
        return store

    from streamflow.db.roles import grant_feature_store_reads

    write_repo_config(settings)
    grant_feature_store_reads(settings)  # Feast's role reads the snapshot tables (services/postgres/)
    store = _reconnecting(settings, apply)
    log.info("event=feast_apply project=%s views=%s", settings.feast_project, ",".join(FEATURE_VIEWS))
    return store


@dataclass
class MaterializationResult:
    """What a materialization published: the newest as_of online, the ingestion it covers."""

    as_of: date | None
    ingestion_id: int | None = None
    writer: str = ""
    rows: int = 0
    seconds: float = 0.0


def _materialize_with_feast(settings: Settings, start: datetime, end: datetime) -> MaterializationResult:
    """Feast's own writer (reference; row by row and not atomic: readers see a mix while it runs)."""
    t0 = time.perf_counter()
    engine = get_engine(settings)
    with engine.connect() as conn:
        ingestion_id = conn.execute(sa.text("SELECT max(id) FROM ingestions")).scalar()

    def materialize(store: FeatureStore) -> None:
        # Feast prints coloured progress to stdout; keep our output (and --json) clean.
        with contextlib.redirect_stdout(io.StringIO()) as feast_out:
            store.materialize(start_date=start - timedelta(seconds=1), end_date=end + timedelta(seconds=1))
        log.debug("event=feast_materialize_output text=%r", feast_out.getvalue())

    _reconnecting(settings, materialize)
    latest = end.astimezone(UTC).date()
    seconds = time.perf_counter() - t0
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO feature_materializations (as_of, ingestion_id, writer, seconds)"
                " VALUES (:d, :i, 'feast', :s)"
            ),
            {"d": latest, "i": ingestion_id, "s": seconds},
        )
    return MaterializationResult(as_of=latest, ingestion_id=ingestion_id, writer="feast", seconds=seconds)


def materialize_online(settings: Settings, progress: ProgressCallback | None = None) -> MaterializationResult:
    """Apply the definitions and load every user's newest snapshot into the online store,
    recording the materialization (as_of, covered ingestion) — see ``online_writer``."""
    engine = get_engine(settings)
    migrate(engine)
    with engine.connect() as conn:
        bounds = conn.execute(sa.text("SELECT min(as_of), max(as_of) FROM subscriptions_profile_snapshots")).one()
    if bounds[0] is None:
        log.info("event=materialize_skipped reason=no_snapshots")
        return MaterializationResult(as_of=None)
    apply_definitions(settings)
    if settings.materialize_writer == "feast":
        result = _materialize_with_feast(settings, bounds[0], bounds[1])
    elif settings.online_store == "redis":
        from streamflow.features.redis_writer import write_redis_online_store

        redis_result = write_redis_online_store(settings, progress or no_progress)
        result = MaterializationResult(
            as_of=redis_result.as_of,
            ingestion_id=redis_result.ingestion_id,
            writer="redis-bulk",
            rows=redis_result.rows,
            seconds=redis_result.seconds,
        )
    else:
        from streamflow.features.online_writer import write_online_store

        bulk = write_online_store(settings, progress or no_progress)
        result = MaterializationResult(
            as_of=bulk.as_of, ingestion_id=bulk.ingestion_id, writer="bulk", rows=bulk.rows, seconds=bulk.seconds
        )
    log.info(
        "event=materialized latest_as_of=%s ingestion_id=%s writer=%s rows=%d seconds=%.2f views=%d",
        result.as_of, result.ingestion_id, result.writer, result.rows, result.seconds, len(FEATURE_VIEWS),
    )  # fmt: skip
    return result


def materialize_latest(settings: Settings, progress: ProgressCallback | None = None) -> date | None:
    """Load the newest snapshot of every user into the online store and record it; returns the
    newest as_of now online (None: nothing ingested yet).

    Every user gets its latest row even when an older month is re-ingested after a newer one."""
    return materialize_online(settings, progress).as_of
