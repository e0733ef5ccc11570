"""The prediction API over a real (small) ONNX model and a real feature snapshot built
from generated data (``streamflow.seeds.generator``) — no database: the contract, errors,
metrics, the offline docs and a fuzz of the request body. (Integration tests repeat the
important parts on the full stack.)"""

from __future__ import annotations

import dataclasses
import json
import string
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from streamflow.core.data_model import ENTITY, FEATURES
from streamflow.serving.metrics import LATENCY_BUCKETS, PROBABILITY_BUCKETS
from streamflow.serving.model_holder import ModelHolder
from tests.helpers.serving import VERSION, Served, make_app


@pytest.fixture(params=[True, False], ids=["fast_path", "fastapi_path"])
def client(request: pytest.FixtureRequest, served: Served) -> Iterator[TestClient]:
    with TestClient(make_app(served, fast_path=request.param), raise_server_exceptions=False) as c:
        yield c


def metric_samples(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample_value(families: dict[str, Any], name: str, sample: str, **labels: str) -> float:
    fam = families[name]
    total = 0.0
    for s in fam.samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            total += s.value
    return total


# ---- contract ---------------------------------------------------------------------------
def test_predict_contract_and_probability_equals_pipeline(client: TestClient, served: Served) -> None:
    rows = served.online.sample(25, random_state=1)
    for _, row in rows.iterrows():
        r = client.post("/predict?features=true", json={"user_id": row[ENTITY]})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        body = r.json()
        assert set(body) == {"user_id", "prediction", "churn_probability", "model_version", "features_used"}
        assert "error" not in body
        assert body["user_id"] == row[ENTITY]
        assert body["model_version"] == VERSION
        assert set(body["features_used"]) == set(FEATURES)
        expected = served.pipeline.predict_proba(pd.DataFrame([row[FEATURES]]).astype(row[FEATURES].dtypes))[0, 1]
        assert abs(body["churn_probability"] - expected) <= 1e-5
        assert body["prediction"] == int(body["churn_probability"] >= 0.5)
        # features_used are exactly the model's inputs
        used = body["features_used"]
        for f in FEATURES:
            v = row[f]
            if v is None or (isinstance(v, float) and np.isnan(v)):
                assert used[f] is None
            else:
                assert used[f] == pytest.approx(v) if not isinstance(v, str) else used[f] == v


def test_users_without_plan_flags_are_scored(client: TestClient, served: Served) -> None:
    uid = served.online.loc[served.online["plan_stream_tv"].isna(), ENTITY].iloc[0]
    body = client.post("/predict", params={"features": "true"}, json={"user_id": uid}).json()
    assert body["features_used"]["plan_stream_tv"] is None
    assert 0.0 <= body["churn_probability"] <= 1.0


def test_unknown_user_is_404_naming_the_id(client: TestClient) -> None:
    r = client.post("/predict", json={"user_id": "0000-NOSUCH"})
    assert r.status_code == 404
    assert r.json()["user_id"] == "0000-NOSUCH"
    assert "0000-NOSUCH" in r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"user_id": ""},
        {"user_id": "x" * 65},
        {"user_id": 123},
        {"user_id": None},
        {"user_id": ["7590-VHVEG"]},
        {"user_id": "7590 VHVEG"},
        {"user_id": "tab\there"},
        {"user_id": "nul\x00"},
        {"user_id": "ü-umlaut"},
        {"user_id": "7590-VHVEG", "extra": 1},
        {"userid": "7590-VHVEG"},
        [],
        "7590-VHVEG",
    ],
)
def test_malformed_bodies_are_422(client: TestClient, body: Any) -> None:
    r = client.post("/predict", json=body)
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], list)


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"user_id": "a"', b"\xff\xfe", b"null"])
def test_invalid_json_is_422(client: TestClient, raw: bytes) -> None:
    r = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422


def test_64_char_id_is_accepted_as_a_lookup(client: TestClient) -> None:
    assert client.post("/predict", json={"user_id": "x" * 64}).status_code == 404


def test_batch(client: TestClient, served: Served) -> None:
    ids = [*served.user_ids[:5], "0000-NOPE", served.user_ids[0]]
    r = client.post("/predict/batch?features=true", json={"user_ids": ids})
    assert r.status_code == 200
    body = r.json()
    assert body["model_version"] == VERSION
    assert body["unknown_user_ids"] == ["0000-NOPE"]
    assert body["count"] == 6
    assert [p["user_id"] for p in body["predictions"]] == [*served.user_ids[:5], served.user_ids[0]]
    single = client.post("/predict?features=true", json={"user_id": served.user_ids[3]}).json()
    assert body["predictions"][3]["churn_probability"] == single["churn_probability"]
    assert body["predictions"][3]["features_used"] == single["features_used"]
    plain = client.post("/predict/batch", json={"user_ids": ids}).json()
    assert all(set(p) == {"user_id", "prediction", "churn_probability"} for p in plain["predictions"])
    assert [p["churn_probability"] for p in plain["predictions"]] == [
        p["churn_probability"] for p in body["predictions"]
    ]


def test_batch_limits(client: TestClient, served: Served) -> None:
    ids = (served.user_ids * 2)[:1000]
    r = client.post("/predict/batch", json={"user_ids": ids})
    assert r.status_code == 200 and r.json()["count"] == 1000
    assert client.post("/predict/batch", json={"user_ids": [*ids, ids[0]]}).status_code == 422
    assert client.post("/predict/batch", json={"user_ids": []}).status_code == 422
    assert client.post("/predict/batch", json={"user_ids": ["ok", ""]}).status_code == 422
    r = client.post("/predict/batch", json={"user_ids": ["0000-A", "0000-B"]})
    assert r.status_code == 200 and r.json() == {
        "model_version": VERSION,
        "count": 0,
        "predictions": [],
        "unknown_user_ids": ["0000-A", "0000-B"],
    }


def test_oversized_body_is_rejected_without_5xx(client: TestClient) -> None:
    r = client.post("/predict", content=b'{"user_id": "' + b"a" * 300_000 + b'"}')
    assert r.status_code in (413, 422)


def test_database_outage_keeps_serving_the_loaded_features(served: Served) -> None:
    """The mirror holds the online store's last snapshot: a database outage does not stop
    predictions (``/ready`` reports it)."""
    with TestClient(make_app(served, db_ok=False), raise_server_exceptions=False) as c:
        r = c.post("/predict", json={"user_id": served.user_ids[0]})
        assert r.status_code == 200, r.text
        assert c.post("/predict/batch", json={"user_ids": served.user_ids[:2]}).status_code == 200
        ready = c.get("/ready")
        assert ready.status_code == 503 and ready.json()["features"]["reachable"] is False
        assert c.get("/health").status_code == 200


def test_503_when_features_never_loaded_and_store_unreachable(served: Served) -> None:
    with TestClient(make_app(served, db_ok=False, with_features=False), raise_server_exceptions=False) as c:
        r = c.post("/predict", json={"user_id": served.user_ids[0]})
        assert r.status_code == 503
        assert "feature store unreachable" in r.json()["detail"]
        assert r.headers.get("retry-after")
        assert c.post("/predict/batch", json={"user_ids": served.user_ids[:2]}).status_code == 503


def test_503_when_no_model(served: Served) -> None:
    with TestClient(make_app(served, with_model=False), raise_server_exceptions=False) as c:
        r = c.post("/predict", json={"user_id": served.user_ids[0]})
        assert r.status_code == 503 and "model unavailable" in r.json()["detail"]
        assert c.get("/model").status_code == 503
        assert c.get("/ready").status_code == 503


def test_ops_endpoints(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert ready.json()["features"]["as_of"] == "2024-02-29"
    model = client.get("/model").json()
    assert model["version"] == VERSION and model["as_of"] == "2024-01-31" and model["run_id"] == "unit-run"
    assert model["metrics"] == {"val_auc": 0.8}
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/predict"]["post"]
    assert {"200", "404", "422", "503"} <= set(post["responses"])
    schema_ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert spec["components"]["schemas"][schema_ref]["examples"] == [{"user_id": "7590-VHVEG"}]
    assert "/predict/batch" in spec["paths"]
    assert "/admin/reload" not in spec["paths"]  # no admin token: the endpoint is off
    assert client.post("/admin/reload").status_code == 404


def test_unhandled_error_is_json_500_without_traceback(served: Served) -> None:
    app = make_app(served)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/boom")
        assert r.status_code == 500
        assert r.json() == {"detail": "internal server error"}
        assert "Traceback" not in r.text and "secret" not in r.text
        fam = metric_samples(c.get("/metrics").text)
        assert sample_value(fam, "api_requests", "api_requests_total", endpoint="/boom", status="500") == 1


# ---- metrics ----------------------------------------------------------------------------
def test_metrics_names_types_labels_and_counts(client: TestClient, served: Served) -> None:
    ok_ids = served.user_ids[10:22]
    for uid in ok_ids:
        assert client.post("/predict", json={"user_id": uid}).status_code == 200
    for i in range(3):
        assert client.post("/predict", json={"user_id": f"9999-MISS{i}"}).status_code == 404
    for _ in range(2):
        assert client.post("/predict", json={"user_id": ""}).status_code == 422
    assert client.get("/no/such/route").status_code == 404
    assert client.post("/predict/batch", json={"user_ids": [ok_ids[0], "9999-MISSB"]}).status_code == 200

    text = client.get("/metrics").text
    fam = metric_samples(text)
    expected_types = {
        "api_requests": "counter",
        "api_request_latency_seconds": "histogram",
        "api_requests_in_flight": "gauge",
        "api_predictions": "counter",
        "api_churn_probability": "histogram",
        "api_feature_lookup_misses": "counter",
        "api_feature_lookup_seconds": "histogram",
        "api_model_inference_seconds": "histogram",
        "api_model_info": "gauge",
        "api_model_loads": "counter",
        "api_model_load_failures": "counter",
        "api_requests_shed": "counter",
        "streamflow_prediction_log_dropped": "counter",
        "streamflow_prediction_log_written": "counter",
        "streamflow_prediction_log_flush_seconds": "histogram",
        "streamflow_prediction_log_buffered_rows": "gauge",
    }
    for name, kind in expected_types.items():
        assert fam[name].type == kind, name

    def count(endpoint: str, status: str) -> float:
        return sample_value(fam, "api_requests", "api_requests_total", endpoint=endpoint, method="POST", status=status)

    assert count("/predict", "200") == len(ok_ids)
    assert count("/predict", "404") == 3
    assert count("/predict", "422") == 2
    assert count("/predict/batch", "200") == 1
    assert sample_value(fam, "api_requests", "api_requests_total", endpoint="other", status="404") == 1
    lat_count = sample_value(
        fam, "api_request_latency_seconds", "api_request_latency_seconds_count", endpoint="/predict", status="200"
    )
    assert lat_count == len(ok_ids)
    for s in fam["api_requests"].samples:
        assert set(s.labels) == {"endpoint", "method", "status"}
        assert s.labels["endpoint"] in {"/predict", "/predict/batch", "/metrics", "other"}

    buckets = sorted(
        {
            float(s.labels["le"])
            for s in fam["api_request_latency_seconds"].samples
            if s.name.endswith("_bucket") and s.labels["le"] != "+Inf"
        }
    )
    assert buckets == list(LATENCY_BUCKETS)
    prob_buckets = sorted(
        {float(s.labels["le"]) for s in fam["api_churn_probability"].samples if s.labels.get("le", "+Inf") != "+Inf"}
    )
    assert prob_buckets == pytest.approx(list(PROBABILITY_BUCKETS))

    n_pred = len(ok_ids) + 1
    assert sample_value(fam, "api_predictions", "api_predictions_total") == n_pred
    assert {s.labels["prediction"] for s in fam["api_predictions"].samples if s.name == "api_predictions_total"} == {
        "0",
        "1",
    }
    assert sample_value(fam, "api_churn_probability", "api_churn_probability_count") == n_pred
    assert sample_value(fam, "api_feature_lookup_misses", "api_feature_lookup_misses_total") == 4
    assert sample_value(fam, "api_model_inference_seconds", "api_model_inference_seconds_count") == len(ok_ids) + 1
    assert sample_value(fam, "api_feature_lookup_seconds", "api_feature_lookup_seconds_count") == len(ok_ids) + 3 + 1
    info = [s for s in fam["api_model_info"].samples]
    assert len(info) == 1 and info[0].value == 1
    assert info[0].labels == {
        "model_name": served.settings.model_name,
        "model_version": VERSION,
        "as_of": "2024-01-31",
        "run_id": "unit-run",
    }
    assert sample_value(fam, "api_model_loads", "api_model_loads_total") == 1
    assert sample_value(fam, "api_requests_in_flight", "api_requests_in_flight") == 1  # this scrape
    for uid in [*ok_ids, "9999-MISS0", "9999-MISSB"]:
        assert uid not in text


def test_model_swap_updates_model_info(served: Served) -> None:
    app = make_app(served)
    holder: ModelHolder = app.state.holder
    with TestClient(app) as c:
        holder.install(dataclasses.replace(served.model, version="8", run_id="unit-run-2", as_of="2024-02-29"))
        assert c.post("/predict", json={"user_id": served.user_ids[0]}).json()["model_version"] == "8"
        assert c.get("/model").json()["version"] == "8"
        fam = metric_samples(c.get("/metrics").text)
    versions = {s.labels["model_version"]: (s.labels["as_of"], s.value) for s in fam["api_model_info"].samples}
    assert versions == {"8": ("2024-02-29", 1.0)}
    assert sample_value(fam, "api_model_loads", "api_model_loads_total") == 2


# ---- fuzzing ----------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=12,
)
user_ids = st.text(max_size=80) | st.text(alphabet=string.printable, min_size=1, max_size=70)
bodies = (
    json_values
    | st.fixed_dictionaries({"user_id": user_ids | json_values})
    | st.fixed_dictionaries({"user_ids": st.lists(user_ids, max_size=20) | json_values})
)


@pytest.fixture(scope="module")
def fuzz_client(served: Served) -> Iterator[TestClient]:
    with TestClient(make_app(served), raise_server_exceptions=False) as c:
        yield c


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, batch=st.booleans())
def test_fuzz_json_bodies_never_5xx(fuzz_client: TestClient, body: Any, batch: bool) -> None:
    r = fuzz_client.post("/predict/batch" if batch else "/predict", json=body)
    assert r.status_code < 500, (body, r.status_code, r.text)
    assert r.status_code in (200, 404, 422)
    payload = r.json()
    if r.status_code == 200:
        assert "error" not in payload and "detail" not in payload


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200), batch=st.booleans())
def test_fuzz_raw_bytes_never_5xx(fuzz_client: TestClient, raw: bytes, batch: bool) -> None:
    r = fuzz_client.post("/predict/batch" if batch else "/predict", content=raw)
    assert r.status_code < 500, (raw, r.status_code)


def test_known_ids_after_fuzz(fuzz_client: TestClient, served: Served) -> None:
    text = fuzz_client.get("/metrics").text
    assert 'status="500"' not in text
    assert json.loads(fuzz_client.post("/predict", json={"user_id": served.user_ids[0]}).text)["user_id"]


# ---- offline docs -----------------------------------------------------------------------
def test_docs_page_loads_its_assets_from_the_app(client: TestClient) -> None:
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "/openapi.json" in html
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"):
        assert f"/static-offline-docs/{asset}" in html
        served = client.get(f"/static-offline-docs/{asset}")
        assert served.status_code == 200 and len(served.content) > 1_000


def test_redoc_is_not_served(client: TestClient) -> None:
    """ReDoc's bundle fetches its logo from a CDN: /docs is the one documentation page."""
    assert client.get("/redoc").status_code == 404


def test_features_used_model_is_derived_from_the_schema() -> None:
    from streamflow.core.data_model import FEATURE_DTYPES
    from streamflow.serving.schemas import EXAMPLE_FEATURES, FeaturesUsed

    assert list(FeaturesUsed.model_fields) == FEATURES
    assert list(EXAMPLE_FEATURES) == FEATURES
    FeaturesUsed.model_validate(EXAMPLE_FEATURES)
    FeaturesUsed.model_validate(dict.fromkeys(FEATURES))  # every feature may be missing
    for f in FEATURES:
        json_type = FeaturesUsed.model_json_schema()["properties"][f]["anyOf"][0]["type"]
        assert json_type == {"int64": "integer", "float64": "number", "object": "string"}[FEATURE_DTYPES[f]]
