"""Least-privilege database roles, seen from the application.

With an external PostgreSQL (compose, Kubernetes) three login roles exist, created by the
server's init script ``services/postgres/10-streamflow-roles.sh`` — the only thing the superuser
runs:

* the **application** role (``STREAMFLOW_DATABASE_URL``: ingest, materialize, train, serve,
  monitor) owns the tables it creates (live, snapshots and their partitions, ingestions,
  materializations, model performance …): CREATE/DROP/ALTER of its own tables, COPY FROM STDIN,
  advisory locks. No superuser, no ``pg_execute_server_program``: ``COPY … TO PROGRAM`` is refused.
  It is a member of Feast's role, because it *publishes* Feast's online store: the bulk writer
  rebuilds Feast's tables and swaps them in (:mod:`streamflow.features.online_writer` hands the new
  tables to the role that owned the old ones), and the API's mirror reads them.
* **Feast's** role (``STREAMFLOW_FEAST_DATABASE_URL``, the credentials in ``feature_store.yaml``)
  owns Feast's registry and online tables and may only *read* the snapshot tables its offline store
  queries (:func:`grant_feature_store_reads`, run by the application, their owner). It cannot
  write or read anything else of the application.
* **MLflow's** role owns the ``mlflow`` database and nothing else; it cannot connect to the
  application's database.

The embedded PostgreSQL has one role, its superuser, reachable only by the home's owner (SCRAM
over a 0700 socket: :mod:`streamflow.db.embedded`); the three-role split is for servers shared by
services.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from psycopg import sql

from streamflow.core.data_model import FEATURE_VIEWS
from streamflow.core.settings import Settings
from streamflow.db.engine import feast_libpq_url, get_engine, libpq_url, split_url

log = logging.getLogger(__name__)


def feature_store_role(settings: Settings) -> str | None:
    """Feast's role when it is not the application's own (None: one role does both)."""
    if not settings.feast_database_url:
        return None
    feast = split_url(feast_libpq_url(settings)).user
    return None if feast == split_url(libpq_url(settings)).user else feast


def feature_source_tables() -> list[str]:
    """The tables Feast's offline store reads: the snapshot table of each feature view."""
    return sorted({table for table, _features in FEATURE_VIEWS.values()})


def grant_feature_store_reads(settings: Settings) -> list[str]:
    """Let Feast's role SELECT the snapshot tables (only those); the tables granted now.

    Idempotent and cheap: a grant already in place is not repeated (concurrent GRANTs on one table
    can fail with "tuple concurrently updated")."""
    role = feature_store_role(settings)
    if role is None:
        return []
    granted = []
    with get_engine(settings).begin() as conn:
        raw = conn.connection.driver_connection
        for table in feature_source_tables():
            has = conn.execute(
                sa.text("SELECT to_regclass(:t) IS NULL OR has_table_privilege(:r, to_regclass(:t), 'SELECT')"),
                {"t": f"public.{table}", "r": role},
            ).scalar()
            if has:
                continue
            stmt = sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(table), sql.Identifier(role))
            conn.exec_driver_sql(stmt.as_string(raw))
            granted.append(table)
    if granted:
        log.info("event=feature_store_reads_granted role=%s tables=%s", role, ",".join(granted))
    return granted
