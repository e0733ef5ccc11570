"""Versioned schema: numbered SQL files in ``db/sql`` applied once each, recorded in
``schema_migrations``. Safe to call from several processes (advisory lock)."""

from __future__ import annotations

import logging
from importlib import resources

import sqlalchemy as sa

log = logging.getLogger(__name__)
_LOCK_KEY = 0x5F10


def migrations() -> list[tuple[str, str]]:
    files = sorted(
        (f for f in resources.files("streamflow.db").joinpath("sql").iterdir() if f.name.endswith(".sql")),
        key=lambda f: f.name,
    )
    return [(f.name, f.read_text()) for f in files]


def migrate(engine: sa.Engine) -> list[str]:
    """Apply pending migrations; returns the names applied now."""
    applied_now: list[str] = []
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        conn.execute(
            sa.text(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
        )
        done = set(conn.execute(sa.text("SELECT name FROM schema_migrations")).scalars())
        for name, sql in migrations():
            if name in done:
                continue
            conn.exec_driver_sql(sql)
            conn.execute(sa.text("INSERT INTO schema_migrations (name) VALUES (:n)"), {"n": name})
            applied_now.append(name)
            log.info("event=migration_applied name=%s", name)
    return applied_now
