"""The work behind ``/predict`` and ``/predict/batch``, shared by the FastAPI endpoints and
the fast ASGI path: a mirror lookup, one onnxruntime call, the JSON body assembled from
pre-encoded parts (``features_used`` only when asked for), and one row per prediction handed to
the prediction log (a buffer append: no I/O on the request path). Answers are
``(status, JSON bytes)``; every call carries a request id (the ``X-Request-ID`` header of the
answer, ``request_id`` of the logged rows).

While the database is unreachable, predictions keep being served from the last snapshot of the
online store the mirror loaded (``/ready`` reports the outage); only a worker that never loaded
one answers 503."""

from __future__ import annotations

import json
import time

import numpy as np

from streamflow.serving.features import FeatureMirror
from streamflow.serving.metrics import ApiMetrics
from streamflow.serving.model_holder import LoadedModel, ModelHolder
from streamflow.serving.prediction_log import PredictionLog, RequestIds, Row

RETRY_AFTER_SECONDS = "2"  # sent with every 503: the model or the feature store is expected back
REQUEST_ID_HEADER = "X-Request-ID"


def response_headers(status: int) -> dict[str, str]:
    """Headers an API answer of ``status`` carries besides the content type (and the request id)."""
    return {"Retry-After": RETRY_AFTER_SECONDS} if status == 503 else {}


def error_body(detail: str, user_id: str | None = None) -> bytes:
    body: dict[str, str] = {"detail": detail}
    if user_id is not None:
        body["user_id"] = user_id
    return json.dumps(body).encode()


def model_unavailable(holder: ModelHolder) -> str:
    return f"model unavailable: {holder.last_error or 'loading'}"


class ServiceUnavailable(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class PredictionService:
    def __init__(
        self, metrics: ApiMetrics, holder: ModelHolder, mirror: FeatureMirror, log: PredictionLog | None = None
    ) -> None:
        self.metrics = metrics
        self.holder = holder
        self.mirror = mirror
        self.log = log  # None: the prediction log is off
        self.request_ids = RequestIds()

    def new_request_id(self) -> str:
        return self.request_ids.new()

    def _ready_model(self) -> LoadedModel:
        model = self.holder.current
        if model is None:
            raise ServiceUnavailable(model_unavailable(self.holder))
        if self.mirror.snapshot is None:
            raise ServiceUnavailable(self.mirror.unavailable_reason())
        return model

    def predict_one(self, user_id: str, request_id: str, features: bool = False) -> tuple[int, bytes]:
        """(status, JSON body) for one user id (already validated); ``features``: include
        ``features_used``."""
        try:
            model = self._ready_model()
        except ServiceUnavailable as exc:
            return 503, error_body(exc.detail)
        m = self.metrics
        t0 = time.perf_counter()
        snap = self.mirror.snapshot
        assert snap is not None
        i = snap.index.get(user_id)
        if i is None:
            m.lookup_seconds.observe(time.perf_counter() - t0)
            m.lookup_misses.inc()
            return 404, error_body(f"unknown user_id {user_id!r}: not in the online feature store", user_id)
        strings = snap.strings[i : i + 1]
        numeric = snap.numeric[i : i + 1]
        t1 = time.perf_counter()
        p = round(float(model.predict(strings, numeric)[0]), 6)
        t2 = time.perf_counter()
        pred = 1 if p >= 0.5 else 0
        m.lookup_seconds.observe(t1 - t0)
        m.inference_seconds.observe(t2 - t1)
        m.observe_prediction(pred, p)
        if self.log is not None:
            self.log.record((request_id, time.time(), user_id, model.version, snap.as_of, p, pred))
        if features:
            body = b'{"user_id":%s,"prediction":%d,"churn_probability":%s,"model_version":%s,"features_used":%s}' % (
                json.dumps(user_id).encode(),
                pred,
                repr(p).encode(),
                model.version_json,
                snap.features_json[i],
            )
        else:
            body = b'{"user_id":%s,"prediction":%d,"churn_probability":%s,"model_version":%s}' % (
                json.dumps(user_id).encode(),
                pred,
                repr(p).encode(),
                model.version_json,
            )
        return 200, body

    def predict_batch(self, user_ids: list[str], request_id: str, features: bool = False) -> tuple[int, bytes]:
        """(status, JSON body) for up to 1,000 validated ids; unknown ids are listed;
        ``features``: include each prediction's ``features_used``."""
        try:
            model = self._ready_model()
        except ServiceUnavailable as exc:
            return 503, error_body(exc.detail)
        m = self.metrics
        t0 = time.perf_counter()
        snap = self.mirror.snapshot
        assert snap is not None
        index = snap.index
        rows: list[int] = []
        found: list[str] = []
        unknown: list[str] = []
        for u in user_ids:
            i = index.get(u)
            if i is None:
                unknown.append(u)
            else:
                rows.append(i)
                found.append(u)
        idx = np.asarray(rows, dtype=np.intp)
        strings = snap.strings[idx]
        numeric = snap.numeric[idx]
        t1 = time.perf_counter()
        proba = model.predict(strings, numeric) if rows else np.empty(0, dtype=np.float32)
        t2 = time.perf_counter()
        m.lookup_seconds.observe(t1 - t0)
        if rows:
            m.inference_seconds.observe(t2 - t1)
        if unknown:
            m.lookup_misses.inc(len(unknown))
        parts = []
        logged: list[Row] = []
        served_at = time.time()
        version, as_of = model.version, snap.as_of
        for u, i, raw in zip(found, rows, proba.tolist(), strict=True):
            p = round(raw, 6)
            pred = 1 if p >= 0.5 else 0
            m.observe_prediction(pred, p)
            logged.append((request_id, served_at, u, version, as_of, p, pred))
            if features:
                parts.append(
                    b'{"user_id":%s,"prediction":%d,"churn_probability":%s,"features_used":%s}'
                    % (json.dumps(u).encode(), pred, repr(p).encode(), snap.features_json[i])
                )
            else:
                parts.append(
                    b'{"user_id":%s,"prediction":%d,"churn_probability":%s}'
                    % (json.dumps(u).encode(), pred, repr(p).encode())
                )
        if self.log is not None and logged:
            self.log.record_many(logged)
        body = b'{"model_version":%s,"count":%d,"predictions":[%s],"unknown_user_ids":%s}' % (
            model.version_json,
            len(parts),
            b",".join(parts),
            json.dumps(unknown).encode(),
        )
        return 200, body
