"""The model supply chain under faults, through real processes (the API server, the CLI) on one
stack (embedded PostgreSQL, Feast, a local MLflow registry):

* deployments the API must refuse — corrupt ONNX, ONNX without the input layout, a model that
  outputs NaN, bytes that do not match their recorded sha256 — and no deployment at all;
* a deleted MLflow alias; artefacts tampered with in the MLflow store; versions that would not load;
* an MLflow that accepts connections and never answers (the API never talks to it; the monitor
  gives up within its stated bound);
* two concurrent ``streamflow monitor --retrain`` (same month, different months): exactly one
  promotion.

Each case asserts what a user sees (exit code, one line naming what is wrong, no traceback; the API
keeps serving the previous model and counts the failure with its reason) and what is kept
(``streamflow status --json`` and every table's checksum)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamflow.features.dataset import build_point_in_time_dataset
from streamflow.model.artifacts import CBPE_ARTIFACT, ONNX_ARTIFACT, TRAINED_USERS_ARTIFACT, sha256_hex
from streamflow.seeds.generator import generate_months
from streamflow.training.registry import (
    configure_mlflow,
    deployed,
    deployment_history,
    production_version,
    promote,
)
from streamflow.training.train import train_model
from tests.helpers.api import ApiProcess, api_env, wait_for
from tests.helpers.faults import (
    FaultHome,
    as_of,
    assert_clean_failure,
    cli_env,
    make_home,
    rows,
    run_cli,
    spawn_cli,
    status_json,
    table_checksums,
)
from tests.helpers.models import (
    artifact_file,
    corrupt,
    delete_deployment,
    insert_deployment,
    load_failures,
    nan_model,
    set_recorded_sha256,
    shuffled,
    without_layout,
)
from tests.helpers.silent_server import silent_server

pytestmark = pytest.mark.integration

USERS = 1500  # enough for a candidate to beat a shuffled-label model clearly on 375 held-out rows
MONTHS = 3
TREES = {"n_estimators": 20}
RACE_TIMEOUT = 900  # two monitors on a shared 2-core machine: a guard, not a timing assertion
HUNG_MLFLOW = {"mlflow_http_timeout_seconds": 2, "mlflow_http_max_retries": 1}  # bound: 2 × 2 s


@dataclass
class Supply:
    fh: FaultHome
    weak: str  # the production version: trained on month 0 with shuffled labels (AUC ≈ 0.5)
    spare: str  # a registered, never promoted version (month 1)
    weak_onnx: bytes

    @property
    def settings(self):  # type: ignore[no-untyped-def]
        return self.fh.settings

    @property
    def home(self) -> Path:
        return self.fh.home

    def reset(self) -> None:
        """Production back to the weak model (an operator's rollback)."""
        if deployed(self.settings).version != self.weak:  # type: ignore[union-attr]
            promote(self.settings, self.weak, "test: reset to the weak model", allow_older=True)


@pytest.fixture(scope="module")
def supply(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supply]:
    seeds = tmp_path_factory.mktemp("supply_seeds")
    generate_months(seeds, months=MONTHS, users=USERS, seed=21)
    for fh in make_home(tmp_path_factory.mktemp("supply_home"), seeds, months=MONTHS):
        fh.settings = fh.settings.model_copy(update=TREES)
        df = build_point_in_time_dataset(as_of(0), fh.settings)
        weak = train_model(as_of(0), fh.settings, promote_if_first=True, dataset=shuffled(df))
        assert weak.promoted and weak.version is not None
        spare = train_model(as_of(1), fh.settings, promote_if_first=False)
        assert spare.version is not None
        yield Supply(fh, weak.version, spare.version, artifact_file(fh.settings, weak.version).read_bytes())


@pytest.fixture(scope="module")
def hung_mlflow() -> Iterator[str]:
    with silent_server() as url:
        yield url


@pytest.fixture(scope="module")
def api(supply: Supply, hung_mlflow: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    """The API, pointed at an MLflow that never answers: it must not need it."""
    env = api_env(cli_env(supply.home), mlflow_tracking_uri=hung_mlflow)
    server = ApiProcess(env, tmp_path_factory.mktemp("supply_api") / "api.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _served(api: ApiProcess) -> dict[str, object]:
    model = httpx.get(f"{api.url}/model", timeout=10).json()
    assert isinstance(model, dict)
    return model


def _predict_version(api: ApiProcess, user_id: str) -> str:
    r = httpx.post(f"{api.url}/predict", json={"user_id": user_id}, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["model_version"])


@pytest.fixture(scope="module")
def user_id(supply: Supply) -> str:
    return str(rows(supply.settings, "SELECT user_id FROM users ORDER BY user_id LIMIT 1")[0][0])


def _no_traceback(api: ApiProcess) -> None:
    assert "Traceback" not in api.logs(), api.logs()[-3000:]


# ---- the API never needs MLflow -------------------------------------------------------------------
def test_api_serves_and_reloads_deployments_while_mlflow_never_answers(
    supply: Supply, api: ApiProcess, user_id: str
) -> None:
    assert _served(api)["version"] == supply.weak and _predict_version(api, user_id) == supply.weak
    ready = httpx.get(f"{api.url}/ready", timeout=10).json()
    assert ready["ready"] and ready["model"]["error"] is None
    try:
        promote(supply.settings, supply.spare, "test: a new deployment while MLflow is unreachable for the API")
        wait_for(lambda: _served(api)["version"] == supply.spare, 60, "the API to load the new deployment")
        assert _predict_version(api, user_id) == supply.spare
    finally:
        supply.reset()
    wait_for(lambda: _served(api)["version"] == supply.weak, 60, "the API to load the rollback")
    served, current = _served(api), deployed(supply.settings)
    assert current is not None
    assert served["sha256"] == sha256_hex(supply.weak_onnx) and served["deployment_id"] == current.id
    _no_traceback(api)


# ---- deployments the API refuses ----------------------------------------------------------------
def _flip_a_byte(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]


BAD_DEPLOYMENTS: dict[str, tuple[Callable[[bytes], bytes], bool, str, str]] = {
    # case: (bytes from the good model, keep the good model's sha256?, failure reason, message needle)
    "corrupt_onnx": (corrupt, False, "invalid_model", "InvalidProtobuf"),
    "onnx_without_layout": (without_layout, False, "invalid_model", "lacks 'streamflow.input_layout' metadata"),
    "nan_model": (nan_model, False, "invalid_model", "smoke test returned [nan, nan]"),
    "tampered_bytes": (_flip_a_byte, True, "integrity", "sha256 mismatch"),
}


def _unlogged(checksums: dict[str, str], status: dict[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """Checksums and status without the prediction log, which records this test's own predictions."""
    return (
        {t: c for t, c in checksums.items() if not t.startswith("predictions")},
        {k: v for k, v in status.items() if k != "predictions"},
    )


@pytest.mark.parametrize("case", list(BAD_DEPLOYMENTS))
def test_api_refuses_a_bad_deployment_and_keeps_serving(
    supply: Supply, api: ApiProcess, user_id: str, case: str
) -> None:
    make, keep_sha, reason, needle = BAD_DEPLOYMENTS[case]
    supply.reset()
    wait_for(lambda: _served(api)["version"] == supply.weak, 60, "the weak model to be served")
    checksums, status = _unlogged(table_checksums(supply.settings), status_json(supply.home))
    failures = load_failures(api.url, reason)
    bad = make(supply.weak_onnx)
    dep_id = insert_deployment(
        supply.settings, bad, version="900", sha256=sha256_hex(supply.weak_onnx) if keep_sha else None
    )
    try:
        wait_for(lambda: load_failures(api.url, reason) == failures + 1, 60, f"the {reason} failure to be counted")
        assert _predict_version(api, user_id) == supply.weak  # the previous model keeps serving
        ready = httpx.get(f"{api.url}/ready", timeout=10)
        body = ready.json()
        assert ready.status_code == 200 and body["model"]["version"] == supply.weak
        assert body["model"]["error"].startswith(f"{reason}: deployment #{dep_id}") and needle in body["model"]["error"]
        for _ in range(4):  # further polls do not fetch the refused deployment again
            httpx.get(f"{api.url}/ready", timeout=10)
        wait_for(lambda: _predict_version(api, user_id) == supply.weak, 5, "one more prediction")
        assert load_failures(api.url, reason) == failures + 1
    finally:
        delete_deployment(supply.settings, dep_id)
    wait_for(lambda: httpx.get(f"{api.url}/ready").json()["model"]["error"] is None, 60, "the error to clear")
    failed = [ln for ln in api.logs().splitlines() if "event=model_load_failed" in ln]
    lines = [ln for ln in failed if f"deployment_id={dep_id} " in ln]
    assert len(lines) == 1 and f"reason={reason} " in lines[0] and needle in lines[0], lines
    _no_traceback(api)
    assert _unlogged(table_checksums(supply.settings), status_json(supply.home)) == (checksums, status)


def test_no_deployment_means_not_ready(supply: Supply, tmp_path: Path, user_id: str) -> None:
    env = api_env(cli_env(supply.home), model_name="never_published")
    server = ApiProcess(env, tmp_path / "api.log")
    try:
        wait_for(lambda: httpx.get(f"{server.url}/ready").status_code == 503, 120, "the API to answer /ready")
        wait_for(lambda: httpx.get(f"{server.url}/ready").json()["model"]["error"] is not None, 60, "the model poll")
        body = httpx.get(f"{server.url}/ready").json()
        assert not body["ready"] and body["model"]["loaded"] is False
        assert "no deployment of 'never_published'@'production' published yet" in body["model"]["error"]
        r = httpx.post(f"{server.url}/predict", json={"user_id": user_id})
        assert r.status_code == 503 and "model unavailable: no deployment" in r.json()["detail"]
    finally:
        server.stop()
    assert "Traceback" not in server.logs()


# ---- the registry side ----------------------------------------------------------------------------
def test_deleted_alias_keeps_the_deployment_served_and_status_says_so(
    supply: Supply, api: ApiProcess, user_id: str
) -> None:
    supply.reset()
    wait_for(lambda: _served(api)["version"] == supply.weak, 60, "the weak model to be served")
    settings = supply.settings
    checksums = table_checksums(settings)
    served_before = _served(api)
    configure_mlflow(settings).delete_registered_model_alias(settings.model_name, settings.model_alias)
    prod = status_json(supply.home)["production"]
    assert isinstance(prod, dict)
    assert prod["alias_version"] is None and prod["deployed_version"] == supply.weak and prod["in_sync"] is False
    assert "is not set" in prod["note"] and f"streamflow promote {supply.weak}" in prod["note"]
    wait_for(lambda: _predict_version(api, user_id) == supply.weak, 10, "a prediction")
    assert _served(api)["deployment_id"] == served_before["deployment_id"]
    assert table_checksums(settings) == checksums
    # automated promotion refuses while the alias and the deployment disagree
    monitor = run_cli(_monitor_args(1, retrain=True), supply.home, **TREES)
    assert_clean_failure(monitor, 0, "[Retrain] REJECTED", "points at nothing but v" + supply.weak)
    # the operator settles it
    fixed = run_cli(["promote", supply.weak, "--reason", "test: restore the deleted alias"], supply.home)
    assert_clean_failure(fixed, 0, f"alias 'production' → v{supply.weak}")
    prod = status_json(supply.home)["production"]
    assert isinstance(prod, dict) and prod["in_sync"] is True and prod["alias_version"] == supply.weak
    assert production_version(settings).version == supply.weak  # type: ignore[union-attr]
    _no_traceback(api)


def _monitor_args(cur: int, *, retrain: bool = False) -> list[str]:
    args = ["monitor", "--ref", as_of(0), "--cur", as_of(cur), "--orchestrator", "none"]
    return [*args, "--retrain"] if retrain else args


@pytest.mark.parametrize("path", [ONNX_ARTIFACT, CBPE_ARTIFACT, TRAINED_USERS_ARTIFACT])
def test_tampered_artefact_in_the_registry_is_refused(supply: Supply, api: ApiProcess, path: str) -> None:
    supply.reset()
    settings = supply.settings
    checksums, status = table_checksums(settings), status_json(supply.home)
    file = artifact_file(settings, supply.weak, path)
    original = file.read_bytes()
    file.write_bytes(_flip_a_byte(original))
    try:
        monitor = run_cli(_monitor_args(1), supply.home, **TREES)
        assert_clean_failure(monitor, 1, f"v{supply.weak} {path}", "sha256 mismatch", "refused")
        republish = run_cli(["promote", supply.weak, "--allow-older"], supply.home)
        assert_clean_failure(republish, 1, f"v{supply.weak} {path}", "sha256 mismatch")
        assert _served(api)["version"] == supply.weak  # the API serves the verified deployment record
    finally:
        file.write_bytes(original)
    assert table_checksums(settings) == checksums
    assert status_json(supply.home) == status


UNSERVABLE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "corrupt_onnx": (corrupt, "InvalidProtobuf"),
    "onnx_without_layout": (without_layout, "lacks 'streamflow.input_layout' metadata"),
    "nan_model": (nan_model, "smoke test returned [nan, nan]"),
}


@pytest.mark.parametrize("case", list(UNSERVABLE))
def test_a_version_that_would_not_load_is_not_published(supply: Supply, case: str) -> None:
    """Consistently hashed (the recorded sha256 matches the bad bytes) but unservable: refused."""
    make, needle = UNSERVABLE[case]
    supply.reset()
    settings = supply.settings
    checksums, status = table_checksums(settings), status_json(supply.home)
    file = artifact_file(settings, supply.spare)
    original = file.read_bytes()
    bad = make(original)
    file.write_bytes(bad)
    set_recorded_sha256(settings, supply.spare, ONNX_ARTIFACT, sha256_hex(bad))
    try:
        proc = run_cli(["promote", supply.spare], supply.home)
        assert_clean_failure(proc, 1, f"v{supply.spare}: {ONNX_ARTIFACT} would not load in the API", needle)
    finally:
        file.write_bytes(original)
        set_recorded_sha256(settings, supply.spare, ONNX_ARTIFACT, sha256_hex(original))
    assert table_checksums(settings) == checksums
    assert status_json(supply.home) == status


def test_an_mlflow_that_never_answers_bounds_the_cli(supply: Supply, hung_mlflow: str) -> None:
    supply.reset()
    checksums, status = table_checksums(supply.settings), status_json(supply.home)
    hung = {"mlflow_tracking_uri": hung_mlflow, **HUNG_MLFLOW}
    needles = (f"MLflow registry at {hung_mlflow} failed while", "gives up after at most 4 s")
    monitor = run_cli(_monitor_args(1, retrain=True), supply.home, timeout=300, **TREES, **hung)
    assert_clean_failure(monitor, 1, *needles, f"reading {supply.settings.model_name} v{supply.weak}")
    assert_clean_failure(run_cli(["status"], supply.home, timeout=120, **hung), 1, *needles)
    assert_clean_failure(run_cli(["promote", supply.weak], supply.home, timeout=120, **hung), 1, *needles)
    assert table_checksums(supply.settings) == checksums
    assert status_json(supply.home) == status


# ---- two monitors retrain at once ------------------------------------------------------------------
_CANDIDATE = re.compile(r"\[Retrain\] as_of=\S+ .*candidate v(\d+) auc=")


@pytest.mark.parametrize(("cur_a", "cur_b"), [(1, 1), (1, 2)], ids=["same_month", "different_months"])
def test_two_concurrent_retrains_promote_exactly_once(
    supply: Supply, api: ApiProcess, tmp_path: Path, cur_a: int, cur_b: int
) -> None:
    supply.reset()
    settings = supply.settings
    before = len(deployment_history(settings))
    release = tmp_path / "release"
    pause = {"fault_pause_at": "before_promote", "fault_release_file": release, "fault_pause_seconds": 600}
    monitors = [spawn_cli(_monitor_args(cur, retrain=True), supply.home, **TREES, **pause) for cur in (cur_a, cur_b)]
    try:
        for m in monitors:  # both read production (v weak), trained and compared: now race
            m.wait_for_marker("FAULT_PAUSE before_promote", timeout=RACE_TIMEOUT)
        release.touch()
        results = [m.finish(timeout=RACE_TIMEOUT) for m in monitors]
    finally:
        for m in monitors:
            if m.proc.poll() is None:
                m.kill9()
    for code, out, err in results:
        assert code == 0, out + err
        assert "Traceback" not in out + err
    outputs = [out for _, out, _ in results]
    winners = [o for o in outputs if "[Retrain] PROMOTED: " in o]
    losers = [o for o in outputs if "[Retrain] REJECTED: " in o]
    assert len(winners) == 1 and len(losers) == 1, outputs
    refusal = next(ln for ln in losers[0].splitlines() if ln.startswith("[Retrain] REJECTED: "))
    assert "production moved while candidate v" in refusal and f"not v{supply.weak}; not promoted" in refusal
    winner = _CANDIDATE.search(winners[0])
    loser = _CANDIDATE.search(losers[0])
    assert winner and loser
    history = deployment_history(settings)
    assert len(history) == before + 1 and history[-1].version == winner.group(1)
    assert production_version(settings).version == winner.group(1)  # type: ignore[union-attr]
    tags = configure_mlflow(settings).get_model_version(settings.model_name, loser.group(1)).tags
    assert "production moved while candidate" in tags["rejected_reason"]
    wait_for(lambda: _served(api)["version"] == winner.group(1), 60, "the API to serve the winner")
    supply.reset()
