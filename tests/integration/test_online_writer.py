"""The bulk online-store writer writes exactly what Feast's own materialization writes — every
byte of every row — and Feast's reader (``get_online_features``) and the API's reader return
each user's latest snapshot from it. Course data (all 7,043 users), edge values of every
encoder, users absent from the newest month, and a 200,000-user month pair."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
from psycopg import sql

from streamflow.app.monthly import ingest_and_publish
from streamflow.core.data_model import ENTITY, FEATURE_REFS, FEATURE_VIEWS, FLAG_FEATURES, FLOAT_FEATURES, INT_FEATURES
from streamflow.core.logging_setup import setup_logging
from streamflow.core.settings import Settings
from streamflow.db.engine import libpq_url, release_embedded
from streamflow.features.online_state import online_store_state
from streamflow.features.online_writer import _value_expr, entity_key_expr, online_table
from streamflow.features.store import get_feature_store, materialize_online
from streamflow.seeds.generator import generate_months
from streamflow.serving.features import FeatureMirror
from tests.helpers.course import AS_OF
from tests.helpers.online import assert_frames_equal, latest_snapshot_frame
from tests.helpers.stack import make_settings

pytestmark = pytest.mark.integration

ONLINE_COLUMNS = "entity_key, feature_name, value, value_text, vector_value, event_ts, created_ts"


def dump_online(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(libpq_url(settings)) as conn:
        return {
            view: conn.execute(
                sql.SQL("SELECT " + ONLINE_COLUMNS + " FROM {} ORDER BY entity_key, feature_name").format(
                    sql.Identifier(online_table(settings, view))
                )
            ).fetchall()
            for view in FEATURE_VIEWS
        }


def truncate_online(settings: Settings) -> None:
    with psycopg.connect(libpq_url(settings)) as conn:
        for view in FEATURE_VIEWS:
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(online_table(settings, view))))


def feast_writes(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """What Feast's own materialize writes into empty online tables."""
    truncate_online(settings)
    materialize_online(settings.model_copy(update={"materialize_writer": "feast"}))
    return dump_online(settings)


@pytest.fixture(scope="module")
def course_home(tmp_path_factory: pytest.TempPathFactory, course_seeds: Path) -> Iterator[Settings]:
    setup_logging("WARNING")
    settings = make_settings(tmp_path_factory.mktemp("writer_home"))
    try:
        for month, as_of in AS_OF.items():
            ingest_and_publish(course_seeds / month, as_of, settings)
        yield settings
    finally:
        release_embedded(settings)


def test_bulk_writer_writes_the_bytes_feast_writes(course_home: Settings) -> None:
    bulk = dump_online(course_home)
    assert {v: len(r) for v, r in bulk.items()} == {v: 7043 * len(f) for v, (_, f) in FEATURE_VIEWS.items()}
    feast = feast_writes(course_home)
    for view in FEATURE_VIEWS:
        assert bulk[view] == feast[view], view
    materialize_online(course_home)  # back to the bulk writer's tables
    assert dump_online(course_home) == bulk


def test_feast_and_api_readers_return_every_users_latest_snapshot(course_home: Settings) -> None:
    expected = latest_snapshot_frame(course_home)
    assert len(expected) == 7043
    store = get_feature_store(course_home)
    got = pd.DataFrame(
        store.get_online_features(features=FEATURE_REFS, entity_rows=[{ENTITY: u} for u in expected[ENTITY]]).to_dict()
    )
    assert_frames_equal(got, expected)
    assert_frames_equal(FeatureMirror(course_home).read_online_direct(), expected)
    state = online_store_state(course_home)
    assert state.as_of == "2024-02-29" and state.stale is False and state.writer == "bulk"


EDGE_INTS = [0, 1, 127, 128, 255, 300, 16383, 16384, 2**21 - 1, 2**21, 2**31, 2**62, -1, -(2**40), None]
EDGE_FLOATS = [0.0, -0.0, 1.0, 29.85, 0.1 + 0.2, 1e-5, 1.5e-7, 123456.789, 1e15, 1234567890123456.8, 9.99e15,
               1e16, 1.5e17, 5e-324, 1.7976931348623157e308, -2.5, None]  # fmt: skip
EDGE_BOOLS = [True, False, None]
EDGE_STRINGS = ["", "DSL", "Fiber optic", "é", "日本語", "x" * 127, "y" * 128, "z" * 20000, None]
EDGE_IDS = ["7590-VHVEG", "é-1", "a" * 300, "x"]


def test_encoders_match_feast_on_edge_values(course_home: Settings) -> None:
    """Every SQL encoder against Feast's Python encoding (ValueProto bytes, value_text, entity key v3)."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.infra.online_stores.helpers import extract_text_and_num
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    def proto(kind: str, v: Any) -> Value:
        return Value() if v is None else Value(**{kind: v})

    cases = (
        [(INT_FEATURES[0], "bigint", v, proto("int64_val", v)) for v in EDGE_INTS]
        + [(FLOAT_FEATURES[0], "float8", v, proto("double_val", v)) for v in EDGE_FLOATS]
        + [(FLAG_FEATURES[0], "boolean", v, proto("bool_val", v)) for v in EDGE_BOOLS]
        + [("net_service", "text", v, proto("string_val", v)) for v in EDGE_STRINGS]
    )
    with psycopg.connect(libpq_url(course_home)) as conn:
        conn.execute("SET extra_float_digits = 1")
        for feature, pgtype, v, expected in cases:
            value, text, _ = _value_expr(feature, sql.SQL("%(v)s::" + pgtype))  # type: ignore[operator]
            row = conn.execute(sql.SQL("SELECT {}, {}").format(value, text), {"v": v}).fetchone()
            assert row is not None
            assert bytes(row[0]) == expected.SerializeToString(), (feature, v)
            assert row[1] == extract_text_and_num(expected, False)[0], (feature, v, row[1])
        for uid in EDGE_IDS:
            key = EntityKey(join_keys=[ENTITY], entity_values=[Value(string_val=uid)])
            query = sql.SQL("SELECT {}").format(entity_key_expr(sql.SQL("%(u)s::text")))
            row = conn.execute(query, {"u": uid}).fetchone()
            assert row is not None and bytes(row[0]) == serialize_entity_key(key, 3), uid


def test_users_absent_from_the_newest_month_keep_their_last_month(tmp_path: Path) -> None:
    """Months 0 and 1 where 25 users of month 0 are missing from month 1 (all six files): the
    online store serves them their month-0 rows — as Feast's writer does."""
    setup_logging("WARNING")
    seeds = tmp_path / "seeds"
    generate_months(seeds, months=2, users=400, seed=5)
    gone = set(pd.read_csv(seeds / "month_001" / "users.csv", dtype=str)["user_id"].sample(25, random_state=1))
    for path in (seeds / "month_001").iterdir():
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        df[~df["user_id"].isin(gone)].to_csv(path, index=False)
    settings = make_settings(tmp_path / "home")
    try:
        ingest_and_publish(seeds / "month_000", "2024-01-31", settings)
        ingest_and_publish(seeds / "month_001", "2024-02-29", settings)
        bulk = dump_online(settings)
        assert len(bulk["payments_agg_90d_fv"]) == 400
        assert bulk == feast_writes(settings)
        expected = latest_snapshot_frame(settings)
        got = FeatureMirror(settings).read_online_direct()
        assert_frames_equal(got, expected)
    finally:
        release_embedded(settings)


def test_scale_200k_users_two_months(tmp_path: Path) -> None:
    """200,000 users × 2 months through the monthly path: counts, the bulk writer equal to Feast's
    reader for a sample, the API's reader serving every user's last-month values. Correctness only."""
    setup_logging("WARNING")
    seeds = tmp_path / "seeds"
    generate_months(seeds, months=2, users=200_000, seed=3)
    settings = make_settings(tmp_path / "home")
    try:
        for i, as_of in enumerate(("2024-01-31", "2024-02-29")):
            result = ingest_and_publish(seeds / f"month_{i:03d}", as_of, settings)
            assert result.rows == dict.fromkeys(result.rows, 200_000)
            assert result.materialization is not None and result.materialization.rows == 200_000 * 14
        state = online_store_state(settings)
        assert state.as_of == "2024-02-29" and not state.stale
        expected = latest_snapshot_frame(settings)
        assert len(expected) == 200_000
        sample = expected.sample(2000, random_state=7).reset_index(drop=True)
        store = get_feature_store(settings)
        got = pd.DataFrame(
            store.get_online_features(
                features=FEATURE_REFS, entity_rows=[{ENTITY: u} for u in sample[ENTITY]]
            ).to_dict()
        )
        assert_frames_equal(got, sample)
        served = FeatureMirror(settings).read_online_direct()
        assert len(served) == 200_000
        month1 = pd.read_csv(seeds / "month_001" / "usage_agg_30d.csv", dtype={"user_id": str})
        merged = served[[ENTITY, "watch_hours_30d"]].merge(month1[[ENTITY, "watch_hours_30d"]], on=ENTITY)
        assert len(merged) == 200_000
        assert (merged["watch_hours_30d_x"] == merged["watch_hours_30d_y"]).all()
    finally:
        release_embedded(settings)
