"""The model supply chain's pure rules: sha256 records and checks, the trusted skops types fixed in
code, the servability checks every load makes (the API's and promote()'s), the compare-and-set
rules of promotion, the bounds of MLflow calls. Real models from the project's generator and
exporter; no service."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from typing import Any, get_args

import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from typer.testing import CliRunner

from streamflow.app.cli import app
from streamflow.core.settings import Settings
from streamflow.model.artifacts import (
    ONNX_ARTIFACT,
    SHA256_TAGS,
    ArtifactIntegrityError,
    sha256_hex,
    verify_sha256,
)
from streamflow.model.deployments import Deployment
from streamflow.model.registry_client import (
    RegistryUnavailableError,
    display_uri,
    http_limits,
    registry_errors,
)
from streamflow.serving.metrics import MODEL_LOAD_FAILURE_REASONS
from streamflow.serving.model_holder import FailureReason, build_loaded_model
from streamflow.training.pipeline import TRUSTED_SKOPS_TYPES, UntrustedModelTypesError, check_trusted_types
from streamflow.training.registry import (
    ANY_CURRENT,
    OlderModelError,
    PromotionConflict,
    VerifiedVersion,
    _compare_and_set,
    recorded_sha256,
)
from tests.helpers.models import corrupt, nan_model, without_layout

DIGEST = sha256_hex(b"model bytes")


# ---- sha256 ---------------------------------------------------------------------------------------
def test_verify_sha256_accepts_the_recorded_digest_only() -> None:
    assert verify_sha256(b"model bytes", DIGEST, "x") == DIGEST
    with pytest.raises(ArtifactIntegrityError, match=r"x: sha256 mismatch \(recorded [0-9a-f]{12}…, got"):
        verify_sha256(b"model bytes!", DIGEST, "x")
    for missing in (None, "", "abc", DIGEST.upper(), DIGEST[:-1]):
        with pytest.raises(ArtifactIntegrityError, match="no sha256 recorded"):
            verify_sha256(b"model bytes", missing, "x")


def test_recorded_sha256_needs_the_run_and_the_registry_to_agree() -> None:
    tag = SHA256_TAGS[ONNX_ARTIFACT]
    assert recorded_sha256({tag: DIGEST}, {tag: DIGEST}, ONNX_ARTIFACT, "v1") == DIGEST
    assert recorded_sha256({}, {}, ONNX_ARTIFACT, "v1") is None  # never logged
    other = sha256_hex(b"other")
    for run_tags, version_tags in (({tag: DIGEST}, {tag: other}), ({tag: DIGEST}, {}), ({}, {tag: DIGEST})):
        with pytest.raises(ArtifactIntegrityError, match=f"v1: the run tag {tag}=.* and the registry tag .* disagree"):
            recorded_sha256(run_tags, version_tags, ONNX_ARTIFACT, "v1")


# ---- trusted types, fixed in code -----------------------------------------------------------------
def test_the_fitted_pipeline_needs_only_the_trusted_types(served: Any) -> None:
    assert check_trusted_types(served.pipeline) == list(TRUSTED_SKOPS_TYPES)


def _custom_step(x: np.ndarray) -> np.ndarray:
    return x


def test_a_pipeline_needing_another_type_is_refused() -> None:
    X, y = np.random.default_rng(0).random((20, 2)), np.array([0, 1] * 10)
    pipe = Pipeline([("f", FunctionTransformer(_custom_step)), ("m", LogisticRegression())]).fit(X, y)
    with pytest.raises(UntrustedModelTypesError, match=r"outside .*TRUSTED_SKOPS_TYPES: \[.*_custom_step"):
        check_trusted_types(pipe)


# ---- what every load checks ------------------------------------------------------------------------
def _load(onnx_bytes: bytes) -> Any:
    return build_loaded_model(
        onnx_bytes, name="m", alias="production", version="1", run_id="r", as_of="2024-01-31", metrics={}
    )


def test_a_real_model_loads_with_its_digest(served: Any) -> None:
    model = build_loaded_model(
        served.onnx_bytes,
        name="m",
        alias="production",
        version="1",
        run_id="r",
        as_of="2024-01-31",
        metrics={},
        sha256=sha256_hex(served.onnx_bytes),
        deployment_id=3,
    )
    described = model.describe()
    assert described["sha256"] == sha256_hex(served.onnx_bytes) and described["deployment_id"] == 3


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (corrupt, "INVALID_PROTOBUF"),
        (without_layout, "lacks 'streamflow.input_layout' metadata"),
        (nan_model, r"smoke test returned \[nan, nan\], not two probabilities in \[0, 1\]"),
    ],
    ids=["corrupt", "without_layout", "nan"],
)
def test_unservable_models_are_refused(served: Any, make: Any, message: str) -> None:
    with pytest.raises(Exception, match=message):
        _load(make(served.onnx_bytes))


def test_failure_reasons_are_the_metric_labels() -> None:
    assert get_args(FailureReason) == MODEL_LOAD_FAILURE_REASONS


# ---- compare-and-set -------------------------------------------------------------------------------
def _deployment(version: str, as_of: date) -> Deployment:
    return Deployment(
        id=7,
        model_name="m",
        alias="production",
        version=version,
        run_id="run",
        as_of=as_of,
        metrics={},
        onnx_sha256=DIGEST,
        artifact_sha256={},
        onnx_size=10,
        previous_version=None,
        reason="an earlier promotion",
        promoted_at=datetime(2024, 3, 1, tzinfo=UTC),
    )


CANDIDATE = VerifiedVersion("m", "5", "run5", "2024-02-29", {}, {}, {})
FEB, JAN, MAR = date(2024, 2, 29), date(2024, 1, 31), date(2024, 3, 31)


def _cas(current: Deployment | None, alias: str | None, expected: str | None, allow_older: bool = False) -> None:
    _compare_and_set(Settings(model_name="m"), CANDIDATE, current, alias, expected, FEB, allow_older)


def _passes(current: Deployment | None, alias: str | None, expected: str | None) -> bool:
    try:
        _cas(current, alias, expected)
    except (PromotionConflict, OlderModelError):
        return False
    return True


def test_compare_and_set_passes_when_nothing_moved() -> None:
    assert _passes(_deployment("3", JAN), "3", "3")
    assert _passes(None, None, None)  # first model
    assert _passes(_deployment("3", FEB), "3", "3")  # same month is not older
    assert not _passes(_deployment("3", FEB), "3", "2")  # the same check, live: a moved production is refused


def test_compare_and_set_refuses_when_production_moved() -> None:
    with pytest.raises(PromotionConflict, match=r"production moved .*deploys v4 \(deployment #7 .*\), not v3"):
        _cas(_deployment("4", JAN), "4", "3")
    with pytest.raises(PromotionConflict, match=r"deploys v4 .*not nothing"):
        _cas(_deployment("4", JAN), "4", None)


def test_compare_and_set_refuses_when_the_alias_was_moved_by_hand() -> None:
    with pytest.raises(PromotionConflict, match=r"alias m@production points at v9 but v3 is deployed"):
        _cas(_deployment("3", JAN), "9", "3")
    with pytest.raises(PromotionConflict, match="points at nothing but v3 is deployed"):
        _cas(_deployment("3", JAN), None, "3")


def test_never_an_older_month_unless_asked() -> None:
    with pytest.raises(OlderModelError, match=r"trained on 2024-02-29, older than the deployed v3 .*2024-03-31"):
        _cas(_deployment("3", MAR), "3", "3")
    _cas(_deployment("3", MAR), "3", "3", allow_older=True)
    _cas(_deployment("3", MAR), "9", ANY_CURRENT, allow_older=True)  # an operator's explicit choice
    with pytest.raises(OlderModelError):
        _cas(_deployment("3", MAR), "9", ANY_CURRENT)


def test_promote_command_refuses_a_non_version_before_doing_anything(tmp_path: Any) -> None:
    result = CliRunner().invoke(app, ["promote", "latest"], env={"STREAMFLOW_HOME": str(tmp_path / "home")})
    assert result.exit_code == 2 and "VERSION must be a registered version number" in result.output
    assert not (tmp_path / "home").exists()


# ---- bounded MLflow calls --------------------------------------------------------------------------
def test_mlflow_http_limits_and_their_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("REQUEST_TIMEOUT", "REQUEST_MAX_RETRIES", "REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(f"MLFLOW_HTTP_{var}", raising=False)
    for var in ("TIMEOUT_SECONDS", "MAX_RETRIES", "BACKOFF_FACTOR"):
        monkeypatch.delenv(f"STREAMFLOW_MLFLOW_HTTP_{var}", raising=False)
    default = Settings()
    assert http_limits(default) == {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    assert default.mlflow_call_bound_seconds == 3 * 10 + (1 * 2 + 1.0)  # 3 attempts, one backoff (+ jitter)
    assert Settings(mlflow_http_timeout_seconds=2, mlflow_http_max_retries=1).mlflow_call_bound_seconds == 4
    assert Settings(mlflow_http_max_retries=0).mlflow_call_bound_seconds == 10
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")  # MLflow's own variable is honoured ...
    assert Settings().mlflow_http_timeout_seconds == 30
    monkeypatch.setenv("STREAMFLOW_MLFLOW_HTTP_TIMEOUT_SECONDS", "5")  # ... unless ours is set
    assert Settings().mlflow_http_timeout_seconds == 5


def test_registry_errors_name_the_store_without_credentials() -> None:
    settings = Settings(mlflow_tracking_uri="https://alice:s3cret@mlflow.example:5000")
    assert display_uri(settings.tracking_uri) == "https://***@mlflow.example:5000"
    with pytest.raises(RegistryUnavailableError) as info, registry_errors(settings, "reading m v1"):
        raise MlflowException("API request to https://mlflow.example failed with timeout exception\nmore")
    text = str(info.value)
    assert text.startswith("MLflow registry at https://***@mlflow.example:5000 failed while reading m v1: API request")
    assert "s3cret" not in text and "\n" not in text and "gives up after at most 33 s" in text
    with pytest.raises(MlflowException), registry_errors(settings, "x"):  # "not found" is an answer, not an outage
        raise MlflowException("no such version", error_code=RESOURCE_DOES_NOT_EXIST)


def test_deployment_rows_round_trip() -> None:
    from streamflow.model.deployments import deployment_from_row

    d = _deployment("3", JAN)
    row = (
        d.id, d.model_name, d.alias, d.version, d.run_id, d.as_of, '{"val_auc": 0.8}', d.onnx_sha256,
        {ONNX_ARTIFACT: DIGEST}, d.onnx_size, None, d.reason, d.promoted_at,
    )  # fmt: skip
    back = deployment_from_row(row)
    assert dataclasses.replace(back, metrics={}, artifact_sha256={}) == d
    assert back.metrics == {"val_auc": 0.8} and back.artifact_sha256 == {ONNX_ARTIFACT: DIGEST}
    assert back.as_dict()["as_of"] == "2024-01-31"
