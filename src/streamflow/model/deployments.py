"""Deployment records: the served model, published to PostgreSQL (table ``model_deployments``,
migration ``013_model_deployments.sql``; contract in ``docs/CONTRACTS.md``).

MLflow stays the registry of record for people and training; what the API serves is the latest
deployment record of ``(model_name, alias)``: the version's metadata, the sha256 of its artefacts
and the ONNX bytes themselves. Records are written only by
:func:`streamflow.training.registry.promote` (compare-and-set under an advisory lock, after
verifying the version's artefacts against the hashes recorded at training) and read by the API's
model holder through :class:`DeploymentSource` — so the API never talks to MLflow, never imports
it, and an alias moved in the MLflow UI is not served until ``streamflow promote VERSION``.

This module holds the SQL (shared by the writer, which runs it through SQLAlchemy's
``exec_driver_sql``, and the reader, plain psycopg) and the reader. It imports neither MLflow nor
the training stack.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from streamflow.core.settings import Settings

log = logging.getLogger(__name__)

TABLE = "model_deployments"
_COLUMNS = (
    "id, model_name, alias, version, run_id, as_of, metrics, onnx_sha256, artifact_sha256, onnx_size, "
    "previous_version, reason, promoted_at"
)
HEAD_SQL = (
    f"SELECT id, version, onnx_sha256 FROM {TABLE} "
    "WHERE model_name = %(name)s AND alias = %(alias)s ORDER BY id DESC LIMIT 1"
)
CURRENT_SQL = (
    f"SELECT {_COLUMNS} FROM {TABLE} WHERE model_name = %(name)s AND alias = %(alias)s ORDER BY id DESC LIMIT 1"
)
BY_ID_SQL = f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = %(id)s"
ONNX_SQL = f"SELECT onnx FROM {TABLE} WHERE id = %(id)s"
HISTORY_SQL = f"SELECT {_COLUMNS} FROM {TABLE} WHERE model_name = %(name)s AND alias = %(alias)s ORDER BY id"
INSERT_SQL = (
    f"INSERT INTO {TABLE} (model_name, alias, version, run_id, as_of, metrics, onnx_sha256, artifact_sha256, "
    "onnx, onnx_size, previous_version, reason) VALUES (%(name)s, %(alias)s, %(version)s, %(run_id)s, %(as_of)s, "
    "%(metrics)s::jsonb, %(onnx_sha256)s, %(artifact_sha256)s::jsonb, %(onnx)s, %(onnx_size)s, "
    "%(previous_version)s, %(reason)s) RETURNING id"
)
# One promotion at a time per (model, alias): a transaction-scoped advisory lock.
LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext(%(key)s))"


def lock_key(model_name: str, alias: str) -> str:
    return f"streamflow.promote:{model_name}@{alias}"


@dataclass(frozen=True)
class DeploymentHead:
    """What the API's poll reads every few seconds (no bytes)."""

    id: int
    version: str
    onnx_sha256: str


@dataclass(frozen=True)
class Deployment:
    """One published version (the ONNX bytes are read separately)."""

    id: int
    model_name: str
    alias: str
    version: str
    run_id: str
    as_of: date
    metrics: dict[str, float]
    onnx_sha256: str
    artifact_sha256: dict[str, str] = field(repr=False)
    onnx_size: int
    previous_version: str | None
    reason: str
    promoted_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model_name": self.model_name,
            "alias": self.alias,
            "version": self.version,
            "run_id": self.run_id,
            "as_of": self.as_of.isoformat(),
            "metrics": self.metrics,
            "onnx_sha256": self.onnx_sha256,
            "artifact_sha256": self.artifact_sha256,
            "onnx_size": self.onnx_size,
            "previous_version": self.previous_version,
            "reason": self.reason,
            "promoted_at": self.promoted_at.isoformat(),
        }


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return dict(value or {})


def deployment_from_row(row: Any) -> Deployment:
    """A row of ``SELECT {_COLUMNS}`` (tuple or SQLAlchemy Row) as a :class:`Deployment`."""
    (id_, name, alias, version, run_id, as_of, metrics, sha, artifacts, size, previous, reason, at) = tuple(row)
    return Deployment(
        id=int(id_),
        model_name=str(name),
        alias=str(alias),
        version=str(version),
        run_id=str(run_id),
        as_of=as_of,
        metrics={str(k): float(v) for k, v in _json(metrics).items()},
        onnx_sha256=str(sha),
        artifact_sha256={str(k): str(v) for k, v in _json(artifacts).items()},
        onnx_size=int(size),
        previous_version=None if previous is None else str(previous),
        reason=str(reason),
        promoted_at=at,
    )


def insert_params(
    *,
    model_name: str,
    alias: str,
    version: str,
    run_id: str,
    as_of: date,
    metrics: dict[str, float],
    onnx_sha256: str,
    artifact_sha256: dict[str, str],
    onnx: bytes,
    previous_version: str | None,
    reason: str,
) -> dict[str, Any]:
    return {
        "name": model_name,
        "alias": alias,
        "version": version,
        "run_id": run_id,
        "as_of": as_of,
        "metrics": json.dumps(metrics, allow_nan=False),
        "onnx_sha256": onnx_sha256,
        "artifact_sha256": json.dumps(artifact_sha256, sort_keys=True),
        "onnx": onnx,
        "onnx_size": len(onnx),
        "previous_version": previous_version,
        "reason": reason,
    }


class DeploymentSource:
    """The API's read side: one autocommit psycopg connection with bounded waits (connect and
    statement timeouts from the settings), reopened after any error. ``head()`` is the cheap
    poll; ``fetch(id)`` reads one record and its ONNX bytes (binary transfer)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conninfo: str | None = None
        self._conn: Any = None

    def _connect(self) -> Any:
        import psycopg

        if self._conninfo is None:
            from streamflow.db.engine import libpq_url

            self._conninfo = libpq_url(self.settings)
        if self._conn is None or self._conn.closed:
            timeout = self.settings.model_db_timeout_seconds
            self._conn = psycopg.connect(
                self._conninfo,
                autocommit=True,
                connect_timeout=max(1, round(timeout)),
                options=f"-c statement_timeout={round(timeout * 1000)}",
            )
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _run(self, fn: Any) -> Any:
        try:
            return fn(self._connect())
        except Exception:
            self.close()  # a broken or timed-out connection is not reused
            raise

    def head(self) -> DeploymentHead | None:
        """The latest deployment of the settings' model and alias; None when there is none (or
        when the table does not exist yet: nothing was ever published)."""
        import psycopg

        params = {"name": self.settings.model_name, "alias": self.settings.model_alias}
        try:
            row = self._run(lambda c: c.execute(HEAD_SQL, params).fetchone())
        except psycopg.errors.UndefinedTable:
            return None
        return None if row is None else DeploymentHead(int(row[0]), str(row[1]), str(row[2]))

    def fetch(self, deployment_id: int) -> tuple[Deployment, bytes]:
        """Record ``deployment_id`` and its ONNX bytes, in one snapshot (a transaction with the
        longer ``model_fetch_timeout_seconds``: the bytes may be large)."""
        timeout_ms = round(self.settings.model_fetch_timeout_seconds * 1000)

        def read(conn: Any) -> tuple[Deployment, bytes]:
            with conn.transaction():
                conn.execute(f"SET LOCAL statement_timeout = {timeout_ms}")
                meta = conn.execute(BY_ID_SQL, {"id": deployment_id}).fetchone()
                if meta is None:
                    raise LookupError(f"deployment #{deployment_id} no longer exists")
                blob = conn.execute(ONNX_SQL, {"id": deployment_id}, binary=True).fetchone()
            return deployment_from_row(meta), bytes(blob[0])

        result: tuple[Deployment, bytes] = self._run(read)
        return result
