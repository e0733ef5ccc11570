"""The API's request side, no database: the ``?features=true`` option (identical on both code
paths), the request id, what the prediction log buffers for each prediction and how it drops
when full, the admin token and single-flight of ``/admin/reload``, and the overload limits
through a real uvicorn server (per client, per worker; ops endpoints never shed).

The prediction log's writer (COPY into PostgreSQL, retries, shutdown flush) is tested against
a real database in tests/integration/test_prediction_log.py and tests/faults/test_api_faults.py."""

from __future__ import annotations

import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from streamflow.core.settings import Settings, settings_json
from streamflow.serving.prediction_log import PredictionLog, RequestIds
from tests.helpers.serving import ONLINE_AS_OF, VERSION, Served, make_app, served_settings, uvicorn_in_thread

TOKEN = "unit-test-admin-token-0123456789"


def metric(text: str, family: str, sample: str, **labels: str) -> float:
    for fam in text_string_to_metric_families(text):
        if fam.name == family:
            return sum(
                s.value
                for s in fam.samples
                if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
            )
    return 0.0


@pytest.fixture(params=[True, False], ids=["fast_path", "fastapi_path"])
def client(request: pytest.FixtureRequest, served: Served) -> Iterator[TestClient]:
    with TestClient(make_app(served, fast_path=request.param), raise_server_exceptions=False) as c:
        yield c


# ---- ?features=true ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "query", ["", "?features=true", "?features=1", "?features=FALSE", "?features=no", "?features=on",
              "?features=false&features=yes", "?other=1", "?features=", "?features=maybe", "?features=2"],
)  # fmt: skip
@pytest.mark.parametrize("path", ["/predict", "/predict/batch"])
def test_features_option_is_the_same_on_both_paths(served: Served, path: str, query: str) -> None:
    uid = served.user_ids[4]
    body = {"user_id": uid} if path == "/predict" else {"user_ids": [uid, "0000-NONE"]}
    answers = []
    for fast in (True, False):
        with TestClient(make_app(served, fast_path=fast), raise_server_exceptions=False) as c:
            r = c.post(path + query, json=body)
            answers.append((r.status_code, r.json()))
    assert answers[0] == answers[1]
    status, payload = answers[0]
    asked = query in ("?features=true", "?features=1", "?features=on", "?features=false&features=yes")
    if query in ("?features=", "?features=maybe", "?features=2"):
        assert status == 422 and payload["detail"][0]["loc"] == ["query", "features"]
        return
    assert status == 200
    item = payload if path == "/predict" else payload["predictions"][0]
    assert ("features_used" in item) is asked


def test_invalid_query_and_body_are_reported_together_like_fastapi(served: Served) -> None:
    answers = []
    for fast in (True, False):
        with TestClient(make_app(served, fast_path=fast), raise_server_exceptions=False) as c:
            for raw in (b'{"user_id": ""}', b"{oops"):
                r = c.post("/predict?features=maybe", content=raw, headers={"content-type": "application/json"})
                answers.append((r.status_code, [e["loc"][0] for e in r.json()["detail"]]))
    assert answers[:2] == answers[2:]
    assert answers[0] == (422, ["query", "body"]) and answers[1] == (422, ["body"])


def test_openapi_documents_the_option_and_the_request_id(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/predict", "/predict/batch"):
        op = spec["paths"][path]["post"]
        (param,) = op["parameters"]
        assert param["name"] == "features" and param["in"] == "query" and param["required"] is False
        assert param["schema"]["type"] == "boolean" and param["schema"]["default"] is False
        assert "X-Request-ID" in op["responses"]["200"]["headers"]
    single = spec["components"]["schemas"]["PredictResponse"]
    assert "features_used" not in single["required"]
    assert "default" not in single["properties"]["features_used"]


# ---- request id -----------------------------------------------------------------------
def test_every_answer_of_the_service_carries_a_unique_request_id(client: TestClient, served: Served) -> None:
    seen = set()
    for r in (
        client.post("/predict", json={"user_id": served.user_ids[0]}),
        client.post("/predict", json={"user_id": served.user_ids[0]}),
        client.post("/predict", json={"user_id": "0000-NOBODY"}),
        client.post("/predict/batch", json={"user_ids": served.user_ids[:3]}),
    ):
        rid = r.headers["x-request-id"]
        assert uuid.UUID(rid).version == 8
        seen.add(rid)
    assert len(seen) == 4


def test_request_ids_are_unique_across_instances_and_threads() -> None:
    import threading

    gens = [RequestIds() for _ in range(4)]  # like four workers
    out: list[list[str]] = [[] for _ in range(8)]

    def draw(i: int) -> None:
        out[i] = [gens[i % 4].new() for _ in range(5000)]

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [x for chunk in out for x in chunk]
    assert len(set(ids)) == len(ids) == 40_000
    assert {uuid.UUID(x).variant for x in ids} == {uuid.RFC_4122}


# ---- what the prediction log records ----------------------------------------------------
def _rows(c: TestClient) -> list[Any]:
    log: PredictionLog = c.app.state.service.log  # type: ignore[attr-defined]
    return list(log._rows)


def test_each_served_prediction_is_buffered_once_with_what_was_served(client: TestClient, served: Served) -> None:
    r1 = client.post("/predict", json={"user_id": served.user_ids[1]})
    r404 = client.post("/predict", json={"user_id": "0000-NOBODY"})
    rb = client.post("/predict/batch", json={"user_ids": [served.user_ids[2], "0000-X", served.user_ids[2]]})
    assert (r1.status_code, r404.status_code, rb.status_code) == (200, 404, 200)
    rows = _rows(client)
    assert len(rows) == 3  # the unknown ids are not predictions
    rid, served_at, user, version, as_of, proba, pred = rows[0]
    assert (rid, user, version, as_of) == (r1.headers["x-request-id"], served.user_ids[1], VERSION, ONLINE_AS_OF)
    assert (proba, pred) == (r1.json()["churn_probability"], r1.json()["prediction"])
    assert abs(served_at - time.time()) < 60
    batch = rows[1:]
    assert {r[0] for r in batch} == {rb.headers["x-request-id"]}
    assert [(r[2], r[5], r[6]) for r in batch] == [
        (p["user_id"], p["churn_probability"], p["prediction"]) for p in rb.json()["predictions"]
    ]


def test_a_full_buffer_drops_and_counts_while_predictions_keep_being_served(served: Served) -> None:
    app = make_app(served, prediction_log_buffer_rows=5)
    with TestClient(app) as c:
        for uid in served.user_ids[:8]:
            assert c.post("/predict", json={"user_id": uid}).status_code == 200
        assert c.post("/predict/batch", json={"user_ids": served.user_ids[:10]}).status_code == 200
        text = c.get("/metrics").text
        assert len(_rows(c)) == 5
    assert metric(text, "streamflow_prediction_log_dropped", "streamflow_prediction_log_dropped_total",
                  reason="buffer_full") == 3 + 10  # fmt: skip
    assert metric(text, "streamflow_prediction_log_written", "streamflow_prediction_log_written_total") == 0


def test_the_log_can_be_turned_off(served: Served) -> None:
    app = make_app(served, prediction_log_enabled=False)
    assert app.state.service.log is None
    with TestClient(app) as c:
        r = c.post("/predict", json={"user_id": served.user_ids[0]})
        assert r.status_code == 200 and r.headers["x-request-id"]
        assert "streamflow_prediction_log_dropped_total{" not in c.get("/metrics").text


# ---- /admin/reload -------------------------------------------------------------------------
def test_admin_token_is_validated() -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        Settings(admin_token="short")
    assert Settings(admin_token="  ").admin_token is None  # an empty variable leaves it off
    s = Settings(admin_token=TOKEN)
    assert TOKEN not in repr(s) and TOKEN not in s.model_dump_json()
    assert Settings.model_validate_json(settings_json(s)).admin_token.get_secret_value() == TOKEN  # type: ignore[union-attr]


def test_admin_reload_requires_the_token_is_single_flight_and_cooled_down(served: Served) -> None:
    app = make_app(served, admin_token=TOKEN)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert "/admin/reload" in c.get("/openapi.json").json()["paths"]
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN}x"}):  # fmt: skip
            r = c.post("/admin/reload", headers=headers)
            assert r.status_code == 401, headers
            assert r.headers["www-authenticate"] == "Bearer" and TOKEN not in r.text
        gate = app.state.admin
        gate.busy = True  # a reload in progress
        r = c.post("/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 409 and "already running" in r.json()["detail"]
        gate.busy = False
        gate.last_reload_done = time.monotonic()  # one just finished: the cooldown applies
        r = c.post("/admin/reload", headers={"Authorization": f"bearer {TOKEN}"})
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 5
        assert "reloaded less than 5 s ago" in r.json()["detail"]
        fam = c.get("/metrics").text
    assert metric(fam, "api_requests", "api_requests_total", endpoint="/admin/reload", status="401") == 5
    assert metric(fam, "api_requests", "api_requests_total", endpoint="/admin/reload", status="409") == 1
    assert metric(fam, "api_requests", "api_requests_total", endpoint="/admin/reload", status="429") == 1


# ---- overload: the limits of a real uvicorn server ------------------------------------------
def _in_flight(c: httpx.Client) -> float:
    text = c.get("/metrics").text  # /metrics is never shed
    return metric(text, "api_requests_in_flight", "api_requests_in_flight") - 1  # minus this scrape


@contextlib.contextmanager
def _held_request(c: httpx.Client) -> Iterator[socket.socket]:
    """A /predict whose body never finishes arriving: in progress until the socket closes.
    ``c`` (a keep-alive client of the same server) watches for the server to be inside it."""
    parts = urlsplit(str(c.base_url))
    before = _in_flight(c)
    sock = socket.create_connection((parts.hostname, parts.port))
    try:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            b'{"user_id": '
        )
        deadline = time.monotonic() + 30
        while _in_flight(c) < before + 1:  # the server is inside the request, waiting for its body
            assert time.monotonic() < deadline, "the held request never started"
            time.sleep(0.02)
        yield sock
    finally:
        sock.close()


def test_per_client_limit_sheds_with_503_and_retry_after(served: Served) -> None:
    settings = served_settings(served, api_max_requests_per_client=2)
    app = make_app(served, api_max_requests_per_client=2)
    uid = served.user_ids[0]
    with uvicorn_in_thread(app, settings=settings) as url, httpx.Client(base_url=url, timeout=10) as c:
        with _held_request(c), _held_request(c):
            r = c.post("/predict", json={"user_id": uid})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.json() == {"detail": "too many concurrent requests from this client; retry later"}
            assert c.get("/health").status_code == 200 and c.get("/ready").status_code == 200
            text = c.get("/metrics").text
        deadline = time.monotonic() + 10  # released (the server notices the closed sockets): served again
        while (r := c.post("/predict", json={"user_id": uid})).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.status_code == 200
    assert metric(text, "api_requests_shed", "api_requests_shed_total", limit="client") == 1
    assert metric(text, "api_requests", "api_requests_total", endpoint="/predict", status="503") == 1


def test_worker_limit_sheds_with_503_and_retry_after_but_never_the_ops_endpoints(served: Served) -> None:
    # 4 = the watching client + two held requests + the one that is shed
    settings = served_settings(served, api_limit_concurrency=4, api_max_requests_per_client=None)
    app = make_app(served, api_limit_concurrency=4, api_max_requests_per_client=None)
    with (
        uvicorn_in_thread(app, settings=settings) as url,
        httpx.Client(base_url=url, timeout=10) as c,
        _held_request(c),
        _held_request(c),
        httpx.Client(base_url=url, timeout=10) as other,
    ):
        r = other.post("/predict/batch", json={"user_ids": served.user_ids[:3]})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json() == {"detail": "server overloaded; retry later"}
        assert r.headers["connection"] == "close"
        assert other.get("/ready").status_code == 200 and other.get("/health").status_code == 200
        text = c.get("/metrics").text
    assert metric(text, "api_requests_shed", "api_requests_shed_total", limit="server") == 1
    assert metric(text, "api_requests", "api_requests_total", endpoint="/predict/batch", status="503") == 1


def test_admin_token_placeholder_is_refused() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        Settings(admin_token="change-me-admin-token-0123")
