"""The prediction API as a real server process over the course stack (embedded
PostgreSQL, Feast online store, MLflow registry): contract, metrics, feature-mirror
invalidation by materialization, hot reload under traffic, failed loads, database
outage (served from the mirror) and recovery, and multi-worker metrics. Every server
started here is stopped. Helpers: tests/helpers/api.py."""

from __future__ import annotations

import json
import os
import random
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from streamflow.core.data_model import ENTITY, FEATURES
from streamflow.db.engine import get_engine
from streamflow.features.dataset import coerce_feature_dtypes
from streamflow.serving.metrics import METRIC_PREFIXES
from tests.helpers.api import (
    AUTH,
    READY_TIMEOUT,
    ApiProcess,
    Traffic,
    api_env,
    predict,
    running_api,
    scrape,
    start_database,
    stop_database,
    value,
    wait_for,
)

pytestmark = pytest.mark.integration

ONLINE_AS_OF = "2024-02-29"


@pytest.fixture(scope="module")
def api(course_stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    with running_api(course_stack.env(), tmp_path_factory.mktemp("api") / "api.log") as server:
        yield server


# ---- contract ---------------------------------------------------------------------------
def test_predict_serves_online_features_and_the_production_model(
    api: ApiProcess, course_stack: Any, user_ids: list[str], production: Any
) -> None:
    from streamflow.features.store import ONLINE_FEATURE_REFS, get_feature_store

    trained = next(t for t in course_stack.trained if t.version == production.version)
    sample = random.Random(5).sample(user_ids, 40)
    online = pd.DataFrame(
        get_feature_store(course_stack.settings)
        .get_online_features(features=ONLINE_FEATURE_REFS, entity_rows=[{ENTITY: u} for u in sample])
        .to_dict()
    )
    expected_features = coerce_feature_dtypes(online).set_index(ENTITY)
    with httpx.Client() as client:
        bodies = []
        for uid in sample:
            r = predict(client, api.url, uid, features=True)
            assert r.status_code == 200, r.text
            bodies.append(r.json())
    used = coerce_feature_dtypes(pd.DataFrame([{ENTITY: b["user_id"], **b["features_used"]} for b in bodies]))
    used = used.set_index(ENTITY)[FEATURES]
    pd.testing.assert_frame_equal(used, expected_features.loc[sample, FEATURES], check_exact=False, rtol=1e-12)
    proba = trained.pipeline.predict_proba(used)[:, 1]
    got = np.array([b["churn_probability"] for b in bodies])
    assert np.abs(got - proba).max() <= 1e-5
    assert {b["model_version"] for b in bodies} == {production.version}
    assert all(b["prediction"] == int(b["churn_probability"] >= 0.5) for b in bodies)


def test_errors_batch_and_ops_endpoints(api: ApiProcess, user_ids: list[str], production: Any) -> None:
    with httpx.Client(base_url=api.url, timeout=10) as c:
        r = c.post("/predict", json={"user_id": "0000-NOBODY"})
        assert r.status_code == 404 and r.json()["user_id"] == "0000-NOBODY"
        for body in ({}, {"user_id": ""}, {"user_id": "x" * 65}, {"user_id": 5}):
            assert c.post("/predict", json=body).status_code == 422
        assert c.post("/predict", content=b"{oops").status_code == 422
        batch = c.post("/predict/batch", json={"user_ids": [*user_ids[:999], "0000-NOBODY"]})
        assert batch.status_code == 200
        assert batch.json()["count"] == 999 and batch.json()["unknown_user_ids"] == ["0000-NOBODY"]
        assert c.get("/health").json() == {"status": "ok"}
        ready = c.get("/ready").json()
        assert ready["ready"] and ready["features"]["as_of"] == ONLINE_AS_OF
        assert ready["features"]["users"] == len(user_ids)
        model = c.get("/model").json()
        assert model["version"] == production.version and model["run_id"] == production.run_id
        assert model["as_of"] == production.as_of == "2024-01-31"
        assert model["metrics"]["val_auc"] == pytest.approx(production.metrics["val_auc"])
        assert c.get("/docs").status_code == 200


def test_metrics_count_requests_and_never_name_users(api: ApiProcess, user_ids: list[str]) -> None:
    before = scrape(api.url)
    sent = random.Random(9).sample(user_ids, 30)
    with httpx.Client() as client:
        for uid in sent:
            assert predict(client, api.url, uid).status_code == 200
        for i in range(4):
            assert predict(client, api.url, f"0000-GHOST{i}").status_code == 404
        assert client.post(f"{api.url}/predict", json={"user_id": ""}).status_code == 422
        assert client.get(f"{api.url}/nope/{sent[0]}").status_code == 404
    after = scrape(api.url)
    text = httpx.get(f"{api.url}/metrics").text

    def delta(family: str, sample: str, **labels: str) -> float:
        return value(after, family, sample, **labels) - value(before, family, sample, **labels)

    req = "api_requests", "api_requests_total"
    assert delta(*req, endpoint="/predict", method="POST", status="200") == 30
    assert delta(*req, endpoint="/predict", method="POST", status="404") == 4
    assert delta(*req, endpoint="/predict", method="POST", status="422") == 1
    assert delta(*req, endpoint="other", method="GET", status="404") == 1
    hist = "api_request_latency_seconds", "api_request_latency_seconds_count"
    assert delta(*hist, endpoint="/predict", method="POST", status="200") == 30
    assert delta("api_predictions", "api_predictions_total") == 30
    assert delta("api_churn_probability", "api_churn_probability_count") == 30
    assert delta("api_feature_lookup_misses", "api_feature_lookup_misses_total") == 4
    assert delta("api_model_inference_seconds", "api_model_inference_seconds_count") == 30
    assert delta("api_feature_lookup_seconds", "api_feature_lookup_seconds_count") == 34
    assert after["api_model_info"].type == "gauge"
    assert [s.value for s in after["api_model_info"].samples] == [1.0]
    for uid in [*sent, "0000-GHOST0"]:
        assert uid not in text


# ---- the feature mirror -----------------------------------------------------------------
def test_mirror_reads_exactly_what_feast_serves(course_stack: Any, user_ids: list[str]) -> None:
    from streamflow.serving.features import FeatureMirror

    mirror = FeatureMirror(course_stack.settings)
    try:
        direct = coerce_feature_dtypes(mirror.read_online_direct()).set_index(ENTITY).sort_index()
        via_feast = coerce_feature_dtypes(mirror.read_online_feast(user_ids)).set_index(ENTITY).sort_index()
    finally:
        mirror.stop()
    via_feast = via_feast[via_feast[FEATURES].notna().any(axis=1)]
    assert len(direct) == len(user_ids)
    pd.testing.assert_frame_equal(direct[FEATURES], via_feast[FEATURES])


def _snapshot_value(settings: Any, user_id: str) -> float:
    with get_engine(settings).connect() as conn:
        return float(
            conn.execute(
                sa.text(
                    "SELECT watch_hours_30d FROM usage_agg_30d_snapshots "
                    "WHERE user_id = :u AND as_of = (SELECT max(as_of) FROM usage_agg_30d_snapshots)"
                ),
                {"u": user_id},
            ).scalar_one()
        )


def _set_snapshot_value(settings: Any, user_id: str, v: float) -> None:
    with get_engine(settings).begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE usage_agg_30d_snapshots SET watch_hours_30d = :v "
                "WHERE user_id = :u AND as_of = (SELECT max(as_of) FROM usage_agg_30d_snapshots)"
            ),
            {"u": user_id, "v": v},
        )


def test_materialization_invalidates_the_mirror(api: ApiProcess, course_stack: Any, user_ids: list[str]) -> None:
    from streamflow.features.store import materialize_latest

    settings = course_stack.settings
    uid = user_ids[17]
    original = _snapshot_value(settings, uid)
    changed = 987.25

    def served_watch_hours(client: httpx.Client) -> float:
        return float(predict(client, api.url, uid, features=True).json()["features_used"]["watch_hours_30d"])

    with httpx.Client() as client:
        assert served_watch_hours(client) == pytest.approx(original)
        _set_snapshot_value(settings, uid, changed)
        try:
            # Not materialized yet: the online store (and so the API) still has the old value.
            time.sleep(1.5)
            assert served_watch_hours(client) == pytest.approx(original)
            materialize_latest(settings)
            wait_for(lambda: served_watch_hours(client) == pytest.approx(changed), 30, "the materialized value")
        finally:
            _set_snapshot_value(settings, uid, original)
            materialize_latest(settings)
        wait_for(lambda: served_watch_hours(client) == pytest.approx(original), 30, "the restored value")
    assert "event=features_loaded" in api.logs()


# ---- hot reload -------------------------------------------------------------------------
def test_reload_switches_versions_under_traffic(
    api: ApiProcess, course_stack: Any, user_ids: list[str], production: Any
) -> None:
    original = production.version
    before = scrape(api.url)
    candidate = course_stack.train(ONLINE_AS_OF)
    assert candidate.version is not None and candidate.version != original
    try:
        with Traffic(api.url, user_ids) as traffic:
            time.sleep(0.5)
            course_stack.promote(candidate.version, "test: hot reload by poll")
            wait_for(lambda: traffic.latest_version() == candidate.version, 30, "the poll to load the candidate")
            time.sleep(0.3)
            # Back again, this time through POST /admin/reload (no waiting for the poll).
            course_stack.promote(original, "test: hot reload by admin")
            r = httpx.post(f"{api.url}/admin/reload", headers=AUTH, timeout=60)
            assert r.status_code == 200 and r.json()["version"] == original
            time.sleep(0.5)
            assert traffic.latest_version() == original
    finally:
        course_stack.promote(original, "test: restore")
    statuses = Counter(s for s, _ in traffic.results)
    assert set(statuses) == {200}, statuses
    versions = [v for _, v in traffic.results]
    assert set(versions) == {original, candidate.version}
    first_new = versions.index(candidate.version)
    assert original in versions[:first_new] and original in versions[first_new:]
    after = scrape(api.url)
    loads = value(after, "api_model_loads", "api_model_loads_total") - value(
        before, "api_model_loads", "api_model_loads_total"
    )
    assert loads == 2
    info = {s.labels["model_version"]: s.value for s in after["api_model_info"].samples}
    assert info == {original: 1.0}
    assert f"event=model_loaded model={course_stack.settings.model_name}" in api.logs()


def test_failed_load_keeps_serving_the_old_model(
    api: ApiProcess, course_stack: Any, user_ids: list[str], production: Any
) -> None:
    """A registered version without an ONNX artefact is never published; a deployment record whose
    bytes are not a model (written straight into the table) is refused by the API, counted, and the
    previous model keeps serving. (The full fault matrix: tests/faults/test_model_faults.py.)"""
    import mlflow

    from streamflow.training.registry import ModelArtifactError, configure_mlflow, ensure_experiment
    from tests.helpers.models import delete_deployment, insert_deployment

    settings = course_stack.settings
    client = configure_mlflow(settings)
    with mlflow.start_run(experiment_id=ensure_experiment(settings), run_name="broken_no_onnx") as run:
        mlflow.set_tag("as_of", ONLINE_AS_OF)
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "README.txt").write_text("no model here")
            mlflow.log_artifact(str(Path(tmp) / "README.txt"), artifact_path="model")
    broken = client.create_model_version(
        settings.model_name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    try:
        with pytest.raises(ModelArtifactError, match=r"has no onnx/model\.onnx"):
            course_stack.promote(str(broken.version), "test: broken version")
    finally:
        client.delete_model_version(settings.model_name, str(broken.version))  # leave no trap for other tests
    before = scrape(api.url)
    dep_id = insert_deployment(settings, b"not an onnx model", version="999")
    try:
        with Traffic(api.url, user_ids) as traffic:
            r = httpx.post(f"{api.url}/admin/reload", headers=AUTH, timeout=60)
            assert r.status_code == 503 and f"serving version {production.version}" in r.json()["detail"]
            wait_for(
                lambda: (
                    value(scrape(api.url), "api_model_load_failures", "api_model_load_failures_total")
                    >= value(before, "api_model_load_failures", "api_model_load_failures_total") + 1
                ),
                20,
                "the load failure to be counted",
            )
    finally:
        delete_deployment(settings, dep_id)
    assert {s for s, _ in traffic.results} == {200}
    assert {v for _, v in traffic.results} == {production.version}
    assert httpx.get(f"{api.url}/model").json()["version"] == production.version
    assert "event=model_load_failed reason=invalid_model" in api.logs()


# ---- database outage --------------------------------------------------------------------
def test_database_outage_keeps_serving_from_the_mirror_then_recovers(
    api: ApiProcess, course_stack: Any, user_ids: list[str]
) -> None:
    """The mirror holds the online store's last snapshot: while the database is down,
    /predict keeps answering from it and /ready reports the outage; both recover by themselves
    when it is back. (What the prediction log does meanwhile: tests/faults/test_api_faults.py.)"""
    settings = course_stack.settings
    if settings.database_url:
        pytest.skip("external database: not ours to stop")
    uid = user_ids[3]
    with httpx.Client() as client:
        expected = predict(client, api.url, uid).json()
        stop_database(settings)
        try:
            wait_for(lambda: client.get(f"{api.url}/ready").status_code == 503, 20, "/ready to see the outage")
            assert client.get(f"{api.url}/ready").json()["features"]["reachable"] is False
            r = predict(client, api.url, uid)
            assert r.status_code == 200 and r.json() == expected
            assert client.post(f"{api.url}/predict/batch", json={"user_ids": [uid]}).status_code == 200
            assert client.get(f"{api.url}/health").status_code == 200
        finally:
            start_database(settings)
        wait_for(lambda: client.get(f"{api.url}/ready").status_code == 200, 30, "recovery after the restart")
        assert predict(client, api.url, uid).status_code == 200
    fams = scrape(api.url)
    assert value(fams, "api_requests", "api_requests_total", endpoint="/predict", status="503") == 0
    assert value(fams, "api_requests", "api_requests_total", status="500") == 0
    logs = api.logs()
    assert "event=feature_store_unreachable" in logs and "event=feature_store_reachable" in logs


# ---- several workers --------------------------------------------------------------------
def _per_pid_counts(directory: Path) -> dict[int, float]:
    from prometheus_client.mmap_dict import MmapedDict

    counts: dict[int, float] = {}
    for f in directory.glob("counter_*.db"):
        pid = int(f.stem.split("_")[1])
        total = 0.0
        for key, v, _ts, _pos in MmapedDict.read_all_values_from_file(str(f)):
            _metric, sample, labels, _help = json.loads(key)
            if (
                sample == "api_requests_total"
                and labels.get("endpoint") == "/predict"
                and labels.get("status") == "200"
            ):
                total += v
        counts[pid] = total
    return counts


def test_two_workers_metrics_add_up(course_stack: Any, user_ids: list[str], tmp_path: Path) -> None:
    from streamflow.serving.server import multiproc_dir

    server = ApiProcess(api_env(course_stack.env()), tmp_path / "api2.log", workers=2)
    directory = Path(multiproc_dir(course_stack.settings))
    try:
        server.wait_ready()
        # Each worker loads its own model and mirror: wait until both answer /ready.
        wait_for(
            lambda: all(
                httpx.get(f"{server.url}/ready", headers={"connection": "close"}).status_code == 200 for _ in range(8)
            ),
            READY_TIMEOUT,
            "both workers ready",
        )
        n = 120
        ids = random.Random(2).sample(user_ids, n)
        for uid in ids:  # a new connection per request spreads them over the workers
            r = httpx.post(f"{server.url}/predict", json={"user_id": uid}, headers={"connection": "close"})
            assert r.status_code == 200
        fams = scrape(server.url)
        assert all(name.startswith(METRIC_PREFIXES) for name in fams), sorted(fams)  # no library metrics leak in
        assert value(fams, "api_requests", "api_requests_total", endpoint="/predict", status="200") == n
        assert value(fams, "api_predictions", "api_predictions_total") == n
        assert value(fams, "api_churn_probability", "api_churn_probability_count") == n
        per_pid = _per_pid_counts(directory)
        assert sum(per_pid.values()) == n
        assert sum(1 for v in per_pid.values() if v > 0) == 2, per_pid
        info = [s for s in fams["api_model_info"].samples]
        assert len(info) == 1 and info[0].value == 1.0
        assert value(fams, "api_model_loads", "api_model_loads_total") == 2  # one per worker

        # A worker killed outright: uvicorn replaces it, its counts stay in the totals and
        # its live gauges are reaped.
        victim = next(pid for pid, v in per_pid.items() if v > 0)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(list(directory.glob("counter_*.db"))) >= 3, 60, "a replacement worker")
        wait_for(lambda: not list(directory.glob(f"gauge_livesum_{victim}.db")), 60, "the dead worker reaped")
        for uid in ids[:20]:
            r = httpx.post(f"{server.url}/predict", json={"user_id": uid}, headers={"connection": "close"})
            assert r.status_code in (200, 503)  # the replacement may still be loading
        fams = scrape(server.url)
        assert value(fams, "api_requests", "api_requests_total", endpoint="/predict") == n + 20
        assert value(fams, "api_requests_in_flight", "api_requests_in_flight") == 1  # the scrape itself
    finally:
        server.stop()
    assert not list(directory.glob("gauge_livesum_*.db")), "live gauges of stopped workers must be removed"
