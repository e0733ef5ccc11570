"""The API's online features without a database: the columnar snapshot (lookups, model inputs,
features_used), assembling views, backoff, staleness and what it does to /ready."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from fastapi.testclient import TestClient

from streamflow.core.data_model import ENTITY, FEATURE_DTYPES, FEATURES
from streamflow.model.onnx_layout import MISSING_STRING
from streamflow.model.onnx_model import MIRROR_NUMERIC, MIRROR_STRINGS
from streamflow.serving.features import (
    FeatureMirror,
    Materialization,
    _arrow_ids,
    _ViewColumns,
    assemble,
    build_snapshot,
    rows_from_values,
)
from tests.helpers.serving import Served, make_app


def reference_json(row: pd.Series) -> bytes:
    """features_used as the API encoded it before the columnar mirror (json.dumps per user)."""

    def value(v: Any, dtype: str) -> Any:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return None
        return int(v) if dtype == "int64" else float(v) if dtype == "float64" else str(v)

    return json.dumps({f: value(row[f], FEATURE_DTYPES[f]) for f in FEATURES}, separators=(",", ":")).encode()


def test_snapshot_serves_every_user_as_before(served: Served) -> None:
    snap = served.snapshot
    online = served.online.set_index(ENTITY)
    ids = list(online.index)
    assert len(snap) == len(ids) and snap.nbytes < 200 * len(ids)
    rows = snap.rows(ids)
    assert rows.found == list(range(len(ids)))
    for j, u in enumerate(ids):
        assert rows.features_json(j) == reference_json(online.loc[u])
    strings = online[MIRROR_STRINGS].astype(object).where(online[MIRROR_STRINGS].notna(), MISSING_STRING)
    assert (rows.strings == strings.to_numpy(dtype=object)).all()
    expected = online[MIRROR_NUMERIC].to_numpy(dtype=np.float32, na_value=np.nan)
    np.testing.assert_array_equal(rows.numeric, expected)
    assert rows.numeric.dtype == np.float32


def test_lookups_of_unknown_long_and_repeated_ids(served: Served) -> None:
    snap = served.snapshot
    known = served.user_ids[:3]
    asked = [known[0], "0000-NOBODY", known[1], "x" * 64, known[0], "", "~" * 65, known[2]]
    rows = snap.rows(asked)
    assert rows.found == [0, 2, 4, 7]
    assert rows.features_json(0) == rows.features_json(2)
    assert snap.rows(["0000-NOBODY"]).found == [] and snap.rows([known[1]]).found == [0]
    assert snap.position(known[2]) >= 0 and snap.position(known[2] + "X") == -1


def test_snapshot_leaves_out_users_without_features_and_keeps_missing_values_null() -> None:
    frame = pd.DataFrame({ENTITY: ["b", "a", "c"], **{f: [None, None, None] for f in FEATURES}})
    frame.loc[1, "monthly_fee"] = 29.85
    frame.loc[2, "net_service"] = "DSL"
    frame.loc[2, "paperless_billing"] = True
    snap = build_snapshot(frame, as_of=date(2024, 2, 29))
    assert snap.ids.tolist() == [b"a", b"c"]
    body = json.loads(snap.rows(["c"]).features_json(0))
    assert body["net_service"] == "DSL" and body["paperless_billing"] == 1.0 and body["months_active"] is None
    assert json.loads(snap.rows(["a"]).features_json(0))["net_service"] is None
    assert snap.rows(["a"]).strings[0, 0] == MISSING_STRING


def test_direct_lookup_rows_encode_like_the_mirror(served: Served) -> None:
    online = served.online.set_index(ENTITY)
    ids = served.user_ids[:50]
    values = [{f: (None if pd.isna(online.loc[u, f]) else online.loc[u, f]) for f in FEATURES} for u in ids]
    direct = rows_from_values(list(range(len(ids))), values)
    mirror = served.snapshot.rows(ids)
    for j in range(len(ids)):
        assert direct.features_json(j) == mirror.features_json(j)
    np.testing.assert_array_equal(direct.numeric, mirror.numeric)
    assert (direct.strings == mirror.strings).all()


def _view(ids: list[str], fee: list[float]) -> _ViewColumns:
    return _ViewColumns(_arrow_ids(pa.array(ids)), {}, {"monthly_fee": np.array(fee)})


def test_views_with_different_users_are_assembled_on_their_union() -> None:
    ids_a = _arrow_ids(pa.array(["a", "bb", "ccc"]))
    assert ids_a.tolist() == [b"a", b"bb", b"ccc"]
    codes = np.array([0, -1, 1], dtype=np.int32)
    profile = _ViewColumns(ids_a, {"net_service": (codes, np.array(["DSL", "Fiber", MISSING_STRING], dtype=object))},
                           {"monthly_fee": np.array([1.0, 2.0, 3.0])})  # fmt: skip
    usage = _ViewColumns(_arrow_ids(pa.array(["bb", "d"])), {}, {"watch_hours_30d": np.array([5.0, 6.0])})
    ids, codes_out, cats, numeric = assemble([profile, usage])
    assert ids.tolist() == [b"a", b"bb", b"ccc", b"d"]
    fee, watch = MIRROR_NUMERIC.index("monthly_fee"), MIRROR_NUMERIC.index("watch_hours_30d")
    np.testing.assert_array_equal(numeric[:, fee], [1.0, 2.0, 3.0, np.nan])
    np.testing.assert_array_equal(numeric[:, watch], [np.nan, 5.0, np.nan, 6.0])
    assert codes_out[:, 0].tolist() == [0, -1, 1, -1] and cats[0][-1] == MISSING_STRING
    same_ids, *_ = assemble([_view(["a", "b"], [1.0, 2.0]), _view(["a", "b"], [3.0, 4.0])])
    assert same_ids.tolist() == [b"a", b"b"]


def _mirror_serving(served: Served, **settings: Any) -> FeatureMirror:
    mirror = FeatureMirror(served.settings.model_copy(update=settings))
    mirror.snapshot = served.snapshot
    mirror.db_ok = True
    return mirror


def test_backoff_grows_exponentially_with_jitter_up_to_its_cap(served: Served) -> None:
    mirror = _mirror_serving(served, feature_poll_seconds=2.0, feature_reload_backoff_max_seconds=60.0)
    for failures, full in ((1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0), (6, 60.0), (20, 60.0)):
        mirror.reload_failures = failures
        delays = [mirror._backoff() for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays), failures
        assert max(delays) - min(delays) > 0  # jittered


def test_stale_snapshot_is_reported_and_ready_until_the_limit(served: Served) -> None:
    served_at = served.snapshot.materialized_at
    assert served_at is not None
    newer = Materialization(materialized_at=datetime.now(UTC) - timedelta(minutes=10), as_of=date(2024, 3, 31))
    mirror = _mirror_serving(served)
    mirror.latest = Materialization(materialized_at=served_at, as_of=served.snapshot.as_of)
    assert mirror.stale() == (False, None)
    mirror.latest = newer
    mirror.reload_failures, mirror.last_error = 3, "OperationalError: terminating connection"
    stale, reason = mirror.stale()
    assert stale and reason is not None and "failed 3 time(s)" in reason and "terminating connection" in reason
    assert "2024-02-29" in reason and mirror.unready_reason() is None
    assert 500 < mirror.stale_seconds() < 700
    strict = _mirror_serving(served, feature_max_stale_seconds=300.0)
    strict.latest, strict.reload_failures, strict.last_error = newer, 1, "boom"
    assert "STREAMFLOW_FEATURE_MAX_STALE_SECONDS" in (strict.unready_reason() or "")
    behind = Materialization(materialized_at=served_at, as_of=served.snapshot.as_of, online_store_stale=True,
                             online_store_reason="ingestion #3 is newer")  # fmt: skip
    mirror.latest, mirror.reload_failures = behind, 0
    assert mirror.stale() == (True, "online store: ingestion #3 is newer")


def test_ready_reports_staleness_and_503s_past_the_limit(served: Served) -> None:
    newer = Materialization(materialized_at=datetime.now(UTC) - timedelta(hours=2), as_of=date(2024, 3, 31))
    app = make_app(served)
    mirror = app.state.mirror
    mirror.latest, mirror.reload_failures, mirror.last_error = newer, 2, "OperationalError: server closed"
    with TestClient(app) as c:
        r = c.get("/ready")
        assert r.status_code == 200
        features = r.json()["features"]
        assert features["stale"] is True and "server closed" in features["stale_reason"]
        assert features["users"] == len(served.user_ids) and features["as_of"] == "2024-02-29"
        assert features["reload_failures"] == 2 and features["mode"] == "mirror"
        assert c.post("/predict", json={"user_id": served.user_ids[0]}).status_code == 200
        mirror.settings = mirror.settings.model_copy(update={"feature_max_stale_seconds": 3600.0})
        r = c.get("/ready")
        assert r.status_code == 503 and r.json()["features"]["stale"] is True
