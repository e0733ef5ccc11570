"""The online store on Redis (Feast's Redis online store, a real redis-server) and the API's
direct lookups (PostgreSQL and Redis): the Redis bulk writer writes exactly the keys, fields and
bytes Feast's own Redis materialization writes; Feast's reader, the API's mirror and its direct
lookups all return every user's latest snapshot; the API serves the same answers in mirror and
direct mode."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import redis

from streamflow.app.monthly import ingest_and_publish
from streamflow.core.data_model import ENTITY, FEATURE_REFS
from streamflow.core.logging_setup import setup_logging
from streamflow.core.settings import Settings
from streamflow.db.engine import release_embedded
from streamflow.features.store import get_feature_store, materialize_online, repo_config_dict
from streamflow.seeds.generator import generate_months
from streamflow.serving.app import create_app
from streamflow.serving.features import DirectLookup, FeatureMirror, fetch_redis
from tests.helpers.online import assert_frames_equal, latest_snapshot_frame, values_frame
from tests.helpers.serving import uvicorn_in_thread
from tests.helpers.stack import Stack, course_months_stack, make_settings

pytestmark = pytest.mark.integration


def dump_redis(url: str) -> dict[bytes, dict[bytes, bytes]]:
    client = redis.Redis.from_url(url)
    try:
        return {k: client.hgetall(k) for k in client.scan_iter(count=10_000)}
    finally:
        client.close()


def flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture(scope="module")
def redis_stack(tmp_path_factory: pytest.TempPathFactory, course_seeds: Path, redis_url: str) -> Iterator[Stack]:
    """Both course months ingested with the online store on Redis; a small model in production."""
    flush(redis_url)
    home = tmp_path_factory.mktemp("redis_home")
    with course_months_stack(home, course_seeds, online_store="redis", redis_url=redis_url, n_estimators=30) as stack:
        yield stack


def test_feature_store_yaml_points_feast_at_redis(redis_stack: Stack) -> None:
    s = redis_stack.settings
    port = s.redis_url.rsplit(":", 1)[1].split("/")[0]
    assert repo_config_dict(s)["online_store"] == {"type": "redis", "connection_string": f"127.0.0.1:{port},db=0"}
    secret = s.model_copy(update={"redis_url": "rediss://user:p%40ss@cache.internal:6380/2"})
    assert repo_config_dict(secret)["online_store"]["connection_string"] == (  # type: ignore[index]
        "cache.internal:6380,db=2,username=user,password=p@ss,ssl=true"
    )


def test_redis_bulk_writer_writes_the_bytes_feast_writes(redis_stack: Stack) -> None:
    s = redis_stack.settings
    bulk = dump_redis(s.redis_url)
    assert len(bulk) == 7043 and all(len(fields) == 14 + 4 for fields in bulk.values())
    flush(s.redis_url)
    materialize_online(s.model_copy(update={"materialize_writer": "feast"}))
    feast = dump_redis(s.redis_url)
    assert feast == bulk
    flush(s.redis_url)
    result = materialize_online(s)
    assert result.writer == "redis-bulk" and result.rows == 7043 * 14
    assert dump_redis(s.redis_url) == bulk


def test_every_reader_returns_every_users_latest_snapshot_from_redis(redis_stack: Stack) -> None:
    s = redis_stack.settings
    expected = latest_snapshot_frame(s)
    assert len(expected) == 7043
    store = get_feature_store(s)
    users = expected[ENTITY].tolist()
    via_feast = pd.DataFrame(
        store.get_online_features(features=FEATURE_REFS, entity_rows=[{ENTITY: u} for u in users]).to_dict()
    )
    assert_frames_equal(via_feast, expected)
    mirror = FeatureMirror(s)
    try:
        assert_frames_equal(mirror.read_online_direct(), expected)
    finally:
        mirror.stop()
    client = redis.Redis.from_url(s.redis_url)
    try:
        found = fetch_redis(client, s, [*users, "0000-NOBODY"])
    finally:
        client.close()
    assert "0000-NOBODY" not in found and len(found) == 7043
    assert_frames_equal(values_frame(found), expected)


def test_redis_writer_equals_feasts_reader_for_a_sample_of_a_larger_month(tmp_path: Path, redis_url: str) -> None:
    """30,000 generated users, two months: Feast's get_online_features on Redis for a sample."""
    setup_logging("WARNING")
    redis_url = redis_url.rsplit("/", 1)[0] + "/1"  # a database of its own: the module's stack keeps db 0
    flush(redis_url)
    seeds = tmp_path / "seeds"
    generate_months(seeds, months=2, users=30_000, seed=4)
    settings = make_settings(tmp_path / "home", online_store="redis", redis_url=redis_url)
    try:
        for i, as_of in enumerate(("2024-01-31", "2024-02-29")):
            result = ingest_and_publish(seeds / f"month_{i:03d}", as_of, settings)
            assert result.materialization is not None and result.materialization.rows == 30_000 * 14
        expected = latest_snapshot_frame(settings)
        sample = expected.sample(1500, random_state=3).reset_index(drop=True)
        got = pd.DataFrame(
            get_feature_store(settings)
            .get_online_features(features=FEATURE_REFS, entity_rows=[{ENTITY: u} for u in sample[ENTITY]])
            .to_dict()
        )
        assert_frames_equal(got, sample)
    finally:
        release_embedded(settings)
        flush(redis_url)


def _answers(url: str, users: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    with httpx.Client(base_url=url, timeout=20) as c:
        singles = []
        for u in users:
            r = c.post("/predict?features=true", json={"user_id": u})  # features_used compared too
            assert r.status_code == 200, r.text
            singles.append(r.json())
        assert c.post("/predict", json={"user_id": "0000-NOBODY"}).status_code == 404
        batch = c.post("/predict/batch?features=true", json={"user_ids": [*users[:50], "0000-NOBODY"]})
        assert batch.status_code == 200
        return singles, batch.json()


def _serve(settings: Settings) -> Any:
    return uvicorn_in_thread(create_app(settings))


def _wait_ready(url: str) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/ready", timeout=5)
        if r.status_code == 200:
            return dict(r.json())
        time.sleep(0.2)
    raise AssertionError(f"not ready: {r.text}")


@pytest.mark.parametrize("store", ["postgres", "redis"])
def test_api_direct_lookups_answer_as_the_mirror(store: str, request: pytest.FixtureRequest) -> None:
    stack: Stack = request.getfixturevalue("course_stack" if store == "postgres" else "redis_stack")
    users = random.Random(11).sample(latest_snapshot_frame(stack.settings)[ENTITY].tolist(), 120)
    answers = {}
    for mode in ("mirror", "direct"):
        settings = stack.settings.model_copy(update={"online_lookup": mode, "feature_poll_seconds": 0.5})
        with _serve(settings) as url:
            ready = _wait_ready(url)
            assert ready["features"]["mode"] == mode and ready["features"]["store"] == store
            assert ready["features"]["as_of"] == "2024-02-29" and ready["features"]["stale"] is False
            answers[mode] = _answers(url, users)
    assert answers["direct"] == answers["mirror"]
    _singles, batch = answers["direct"]
    assert batch["count"] == 50 and batch["unknown_user_ids"] == ["0000-NOBODY"]


def test_direct_lookup_reports_an_unreachable_store(course_stack: Stack) -> None:
    lookup = DirectLookup(course_stack.settings.model_copy(update={"online_lookup": "direct"}))
    try:
        assert lookup.check() is False and lookup.available
        assert lookup.lookup(["0000-NOBODY"]).found == []
    finally:
        lookup.stop()
    broken = DirectLookup(
        course_stack.settings.model_copy(update={"online_store": "redis", "redis_url": "redis://127.0.0.1:1/0"})
    )
    try:
        from streamflow.serving.features import FeatureStoreUnavailable

        with pytest.raises(FeatureStoreUnavailable, match="online store lookup failed"):
            broken.lookup(["7590-VHVEG"])
    finally:
        broken.stop()
