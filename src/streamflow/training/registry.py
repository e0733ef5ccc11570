"""MLflow tracking/registry helpers and the one way a version reaches production.

* One place that knows the tracking URI (with bounded HTTP calls, ``registry_client``), the
  experiment, the registered model name and the ``production`` alias.
* :func:`verified_version` — a registered version's artefacts, downloaded and checked against the
  sha256 recorded at training (run tags and model-version tags, ``streamflow.model.artifacts``).
* :func:`promote` — compare-and-set publication: under a PostgreSQL advisory lock, re-read what
  is deployed and what the MLflow alias points at, refuse if either moved since the caller looked
  (``expected_current``) or if the candidate was trained on an older month than the deployed
  model; otherwise write the *deployment record* (``model_deployments``: the verified ONNX bytes,
  their sha256, metadata — what the API serves), the alias history row (``model_alias_history``)
  and move the MLflow alias, in one transaction that commits only once MLflow accepted the move.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

import mlflow
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from streamflow.core.dates import parse_as_of
from streamflow.core.errors import InputError, OperationalError
from streamflow.core.home import ensure_private_home
from streamflow.core.settings import Settings
from streamflow.model.artifacts import (
    CBPE_DIR,
    ONNX_ARTIFACT,
    SHA256_TAGS,
    ArtifactIntegrityError,
    short,
    verify_sha256,
)
from streamflow.model.deployments import (
    CURRENT_SQL,
    HISTORY_SQL,
    INSERT_SQL,
    LOCK_SQL,
    Deployment,
    deployment_from_row,
    insert_params,
    lock_key,
)
from streamflow.model.registry_client import (
    apply_http_limits,
    is_not_found,
    registry_errors,
    version_by_alias,
)

log = logging.getLogger(__name__)
EXPERIMENT_NAME = "streamflow_churn"
_PROGRESS_BAR_VAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


class UnknownModelVersionError(InputError, LookupError):
    """A model version that is not registered."""


class ModelArtifactError(OperationalError, RuntimeError):
    """A registered version whose ONNX artefact is missing, cannot be read or does not run."""


class PromotionConflict(OperationalError):
    """The promotion was refused because production moved since the candidate was compared (or the
    MLflow alias and the deployed version disagree), or another promotion held the lock too long."""


class OlderModelError(InputError):
    """The candidate was trained on an older month than the deployed model."""


def configure_mlflow(settings: Settings) -> MlflowClient:
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        ensure_private_home(settings.home)
        settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    apply_http_limits(settings)
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI to the environment, which
    # would then override the settings of every later Settings object of this process
    # (another STREAMFLOW_HOME would silently write to this registry): restore it.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(settings: Settings) -> str:
    client = configure_mlflow(settings)
    with registry_errors(settings, "looking up the experiment"):
        exp = client.get_experiment_by_name(EXPERIMENT_NAME)
        if exp is not None:
            return str(exp.experiment_id)
        local = settings.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in settings.tracking_uri
        # Local store: keep artifacts under STREAMFLOW_HOME (MLflow would default to ./mlruns).
        artifact_location = settings.artifact_root if local else None
        return str(client.create_experiment(EXPERIMENT_NAME, artifact_location=artifact_location))


@dataclass(frozen=True)
class ModelVersionInfo:
    version: str
    run_id: str
    aliases: list[str]
    as_of: str | None
    metrics: dict[str, float]
    tags: dict[str, str]


def _version_info(client: MlflowClient, mv: Any) -> ModelVersionInfo:
    run = client.get_run(mv.run_id)
    return ModelVersionInfo(
        version=str(mv.version),
        run_id=mv.run_id,
        aliases=list(getattr(mv, "aliases", []) or []),
        as_of=run.data.tags.get("as_of"),
        metrics=dict(run.data.metrics),
        tags=dict(mv.tags or {}),
    )


def list_versions(settings: Settings) -> list[ModelVersionInfo]:
    """Every registered version of ``settings.model_name`` (none when the model does not exist);
    an unreachable registry raises :class:`~streamflow.model.registry_client.RegistryUnavailableError`."""
    client = configure_mlflow(settings)
    with registry_errors(settings, "listing model versions"):
        try:
            versions = client.search_model_versions(f"name='{settings.model_name}'")
        except MlflowException as exc:
            if is_not_found(exc):
                return []
            raise
        infos = [_version_info(client, client.get_model_version(settings.model_name, v.version)) for v in versions]
    return sorted(infos, key=lambda i: int(i.version))


def production_version(settings: Settings) -> ModelVersionInfo | None:
    """The version the MLflow alias points at (the registry's view); None when there is none.
    What the API serves is :func:`deployed` — they agree unless the alias was moved outside
    :func:`promote` (``streamflow status`` says so)."""
    client = configure_mlflow(settings)
    with registry_errors(settings, f"resolving {settings.model_name}@{settings.model_alias}"):
        mv = version_by_alias(client, settings.model_name, settings.model_alias)
        return None if mv is None else _version_info(client, mv)


# ---- deployment records (PostgreSQL) -----------------------------------------------------------
def _history_engine(settings: Settings) -> sa.Engine:
    from streamflow.db.engine import get_engine
    from streamflow.db.schema import migrate

    engine = get_engine(settings)
    migrate(engine)
    return engine


def _names(settings: Settings) -> dict[str, str]:
    return {"name": settings.model_name, "alias": settings.model_alias}


def deployed(settings: Settings) -> Deployment | None:
    """The deployment the API serves (latest record of ``model_name``/``model_alias``), or None."""
    with _history_engine(settings).connect() as conn:
        row = conn.exec_driver_sql(CURRENT_SQL, _names(settings)).fetchone()
    return None if row is None else deployment_from_row(row)


def deployment_history(settings: Settings) -> list[Deployment]:
    """Every deployment of ``model_name``/``model_alias``, oldest first."""
    with _history_engine(settings).connect() as conn:
        rows = conn.exec_driver_sql(HISTORY_SQL, _names(settings)).fetchall()
    return [deployment_from_row(r) for r in rows]


# ---- verified artefacts ------------------------------------------------------------------------
@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow draws a tqdm bar on stderr for every download, read from its own environment
    variable only: switch it off for the download and restore the variable as found."""
    saved = os.environ.get(_PROGRESS_BAR_VAR)
    os.environ[_PROGRESS_BAR_VAR] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(_PROGRESS_BAR_VAR, None)
        else:
            os.environ[_PROGRESS_BAR_VAR] = saved


def download_artifact(client: MlflowClient, run_id: str, path: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="streamflow-artifact-") as tmp, _no_progress_bar():
        local = client.download_artifacts(run_id, path, tmp)
        return Path(local).read_bytes()


def _artifact_paths(client: MlflowClient, run_id: str, directory: str) -> set[str]:
    try:
        return {a.path for a in client.list_artifacts(run_id, directory)}
    except MlflowException as exc:
        if is_not_found(exc):  # a missing directory is "no artefact"
            return set()
        raise


@dataclass(frozen=True)
class VerifiedVersion:
    """A registered version with the artefacts it has, each verified against its recorded sha256."""

    model_name: str
    version: str
    run_id: str
    as_of: str | None
    metrics: dict[str, float]
    run_tags: dict[str, str] = field(repr=False)
    artifacts: dict[str, bytes] = field(repr=False)  # artefact path -> verified bytes
    sha256: dict[str, str] = field(default_factory=dict)  # artefact path -> hex digest

    @property
    def onnx(self) -> bytes:
        return self.artifacts[ONNX_ARTIFACT]

    @property
    def val_metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.metrics.items() if k.startswith("val_") and math.isfinite(v)}


def recorded_sha256(run_tags: dict[str, str], version_tags: dict[str, str], path: str, what: str) -> str | None:
    """The sha256 training recorded for ``path``: the run tag and the model-version tag must
    both be there and agree (None when neither is: the artefact was never logged)."""
    tag = SHA256_TAGS[path]
    on_run, on_version = run_tags.get(tag), version_tags.get(tag)
    if on_run is None and on_version is None:
        return None
    if on_run != on_version:
        raise ArtifactIntegrityError(
            f"{what}: the run tag {tag}={short(on_run)}… and the registry tag {tag}={short(on_version)}… disagree; "
            "refused"
        )
    return on_run


def verified_version(
    settings: Settings, version: str, *, client: MlflowClient | None = None, expected: dict[str, str] | None = None
) -> VerifiedVersion:
    """Download version ``version``'s artefacts (ONNX required; CBPE calibration and trained users
    when logged) and check each against the sha256 recorded at training — and, when given, against
    ``expected`` (path → sha256, e.g. a deployment record's). Raises
    :class:`UnknownModelVersionError`, :class:`ModelArtifactError` (no ONNX artefact) or
    :class:`~streamflow.model.artifacts.ArtifactIntegrityError` (no hash recorded, mismatch)."""
    client = client or configure_mlflow(settings)
    name = settings.model_name
    with registry_errors(settings, f"reading {name} v{version}"):
        try:
            mv = client.get_model_version(name, str(version))
        except MlflowException as exc:
            if not is_not_found(exc):
                raise
            raise UnknownModelVersionError(
                f"model {name!r} has no version {version!r} in the registry at {settings.tracking_uri}"
            ) from exc
        run_id = mv.run_id
        if not run_id:
            raise ModelArtifactError(f"{name} v{mv.version} was not registered from a run: no artefacts to verify")
        run = client.get_run(run_id)
        run_tags, version_tags = dict(run.data.tags), dict(mv.tags or {})
        present = _artifact_paths(client, run_id, "onnx") | _artifact_paths(client, run_id, CBPE_DIR)
        artifacts: dict[str, bytes] = {}
        digests: dict[str, str] = {}
        for path in SHA256_TAGS:
            what = f"{name} v{mv.version} {path} (run {run_id})"
            recorded = recorded_sha256(run_tags, version_tags, path, what)
            if path not in present:
                if path == ONNX_ARTIFACT:
                    raise ModelArtifactError(f"{name} v{mv.version}: run {run_id} has no {ONNX_ARTIFACT}")
                if recorded is not None:
                    raise ArtifactIntegrityError(f"{what}: a sha256 was recorded at training but the artefact is gone")
                continue
            if recorded is None:
                raise ArtifactIntegrityError(
                    f"{what}: no sha256 recorded at training (a version logged before artefact hashes, or not by "
                    "`streamflow train`); retrain it"
                )
            data = download_artifact(client, run_id, path)
            digests[path] = verify_sha256(data, recorded, what)
            if expected is not None and path in expected and expected[path] != digests[path]:
                raise ArtifactIntegrityError(
                    f"{what}: sha256 {short(digests[path])}… is not the deployed {short(expected[path])}…; refused"
                )
            artifacts[path] = data
    return VerifiedVersion(
        model_name=name,
        version=str(mv.version),
        run_id=run_id,
        as_of=run_tags.get("as_of"),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        run_tags=run_tags,
        artifacts=artifacts,
        sha256=digests,
    )


# ---- promotion ---------------------------------------------------------------------------------
ANY_CURRENT: Final = "<any>"  # promote() without compare-and-set (an operator's explicit choice)


def _check_servable(candidate: VerifiedVersion) -> date:
    """The checks the API will make (opens, input layout, smoke test), made before publishing;
    returns the candidate's training month."""
    from streamflow.model.onnx_model import open_servable

    what = f"{candidate.model_name} v{candidate.version}"
    try:
        open_servable(candidate.onnx)
    except Exception as exc:
        first = str(exc).strip().splitlines()
        raise ModelArtifactError(
            f"{what}: {ONNX_ARTIFACT} would not load in the API ({type(exc).__name__}: {first[0] if first else ''})"
        ) from exc
    try:
        return parse_as_of(candidate.as_of or "")
    except ValueError as exc:
        raise ModelArtifactError(
            f"{what}: run {candidate.run_id} has no valid as_of tag ({candidate.as_of!r})"
        ) from exc


def _lock(conn: sa.Connection, settings: Settings) -> None:
    timeout_ms = round(settings.promote_lock_timeout_seconds * 1000)
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = {timeout_ms}")
    try:
        conn.exec_driver_sql(LOCK_SQL, {"key": lock_key(settings.model_name, settings.model_alias)})
    except sa.exc.OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
            raise PromotionConflict(
                f"another promotion of {settings.model_name}@{settings.model_alias} held the promotion lock for more "
                f"than {settings.promote_lock_timeout_seconds:g} s; not promoted"
            ) from exc
        raise


def _compare_and_set(
    settings: Settings,
    candidate: VerifiedVersion,
    current: Deployment | None,
    alias_version: str | None,
    expected_current: str | None,
    trained_on: date,
    allow_older: bool,
) -> None:
    """Raise when the candidate must not be published (see :func:`promote`)."""
    model = f"{settings.model_name}@{settings.model_alias}"
    deployed_version = current.version if current else None
    if expected_current != ANY_CURRENT:
        if deployed_version != expected_current:
            now = "nothing"
            if current is not None:
                why = current.reason if len(current.reason) <= 80 else current.reason[:77] + "..."
                at = f"{current.promoted_at:%Y-%m-%d %H:%M:%S %Z}"
                now = f"v{current.version} (deployment #{current.id} of {at}: {why})"
            was = f"v{expected_current}" if expected_current else "nothing"
            raise PromotionConflict(
                f"production moved while candidate v{candidate.version} was being trained and compared: {model} "
                f"deploys {now}, not {was}; not promoted"
            )
        if alias_version != deployed_version:
            raise PromotionConflict(
                f"the MLflow alias {model} points at {'v' + alias_version if alias_version else 'nothing'} but "
                f"{'v' + deployed_version if deployed_version else 'nothing'} is deployed (moved outside "
                "`streamflow promote`?); settle it with `streamflow promote VERSION`; not promoted"
            )
    if current is not None and not allow_older and trained_on < current.as_of:
        raise OlderModelError(
            f"candidate v{candidate.version} was trained on {trained_on}, older than the deployed v{current.version} "
            f"(trained on {current.as_of}); not promoted"
        )


def promote(
    settings: Settings,
    version: str,
    reason: str,
    *,
    expected_current: str | None = ANY_CURRENT,
    allow_older: bool = False,
) -> Deployment:
    """Publish ``version`` as ``settings.model_alias``: verify its artefacts (sha256 recorded at
    training; the ONNX loads as the API will load it), then, under a PostgreSQL advisory lock per
    (model, alias), re-read the deployed version and the MLflow alias and

    * with ``expected_current`` (a version, or None for "nothing deployed"): refuse with
      :class:`PromotionConflict` if the deployed version is not that one or the MLflow alias
      does not point at it (compare-and-set — what automated promotion uses);
    * refuse with :class:`OlderModelError` a candidate trained on an older month than the
      deployed model, unless ``allow_older`` (an operator's rollback);
    * else insert the deployment record and the alias-history row and move the MLflow alias, in one
      transaction that commits only once MLflow accepted the move.

    The previous version keeps its registration (nothing is archived); tags on both say what
    happened and why. Returns the new deployment."""
    version = str(version)
    client = configure_mlflow(settings)
    candidate = verified_version(settings, version, client=client)
    trained_on = _check_servable(candidate)
    with _history_engine(settings).begin() as conn:
        _lock(conn, settings)
        row = conn.exec_driver_sql(CURRENT_SQL, _names(settings)).fetchone()
        current = deployment_from_row(row) if row else None
        with registry_errors(settings, f"re-reading {settings.model_name}@{settings.model_alias}"):
            mv = version_by_alias(client, settings.model_name, settings.model_alias)
        alias_version = str(mv.version) if mv is not None else None
        _compare_and_set(settings, candidate, current, alias_version, expected_current, trained_on, allow_older)
        previous = current.version if current is not None else alias_version
        params = insert_params(
            model_name=settings.model_name,
            alias=settings.model_alias,
            version=version,
            run_id=candidate.run_id,
            as_of=trained_on,
            metrics=candidate.val_metrics,
            onnx_sha256=candidate.sha256[ONNX_ARTIFACT],
            artifact_sha256=candidate.sha256,
            onnx=candidate.onnx,
            previous_version=previous,
            reason=reason,
        )
        deployment_id = conn.exec_driver_sql(INSERT_SQL, params).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO model_alias_history (model_name, alias, version, previous_version, reason) "
                "VALUES (:name, :alias, :version, :previous, :reason)"
            ),
            {**_names(settings), "version": version, "previous": previous, "reason": reason},
        )
        with registry_errors(settings, f"moving {settings.model_name}@{settings.model_alias} to v{version}"):
            client.set_registered_model_alias(settings.model_name, settings.model_alias, version)
        record = deployment_from_row(conn.exec_driver_sql(CURRENT_SQL, _names(settings)).one())
    assert record.id == deployment_id
    _tag_promotion(settings, client, version, previous, reason, deployment_id)
    log.info(
        "event=model_promoted model=%s alias=%s version=%s previous=%s deployment_id=%s as_of=%s onnx_sha256=%s "
        "reason=%r",
        settings.model_name,
        settings.model_alias,
        version,
        previous,
        deployment_id,
        trained_on,
        short(record.onnx_sha256),
        reason,
    )
    return record


def _tag_promotion(
    settings: Settings, client: MlflowClient, version: str, previous: str | None, reason: str, deployment_id: int
) -> None:
    """Informative tags after the commit (the promotion stands even if MLflow refuses them)."""
    name = settings.model_name
    try:
        client.set_model_version_tag(name, version, "promoted_reason", reason)
        client.set_model_version_tag(name, version, "deployment_id", str(deployment_id))
        if previous is not None and previous != version:
            client.set_model_version_tag(name, version, "replaced_version", previous)
            client.set_model_version_tag(name, previous, "demoted_reason", f"replaced by v{version}: {reason}")
    except MlflowException as exc:
        log.warning("event=promotion_tags_failed model=%s version=%s error=%r", name, version, str(exc)[:300])


@dataclass(frozen=True)
class AliasChange:
    """One move of the alias, as recorded by :func:`promote`."""

    version: str
    previous_version: str | None
    reason: str
    set_at: datetime


def alias_history(settings: Settings) -> list[AliasChange]:
    """Every recorded move of ``settings.model_alias`` of ``settings.model_name``, oldest first.
    Moves made outside :func:`promote` (the MLflow UI, a raw client call) are not in it."""
    with _history_engine(settings).connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT version, previous_version, reason, set_at FROM model_alias_history "
                "WHERE model_name = :name AND alias = :alias ORDER BY set_at, id"
            ),
            _names(settings),
        ).all()
    return [AliasChange(str(r.version), r.previous_version, str(r.reason), r.set_at) for r in rows]
