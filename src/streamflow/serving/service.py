"""The work behind ``/predict`` and ``/predict/batch``, shared by the FastAPI endpoints and
the fast ASGI path: an online-feature lookup (the in-process mirror, or a direct lookup in the
online store), one onnxruntime call, the JSON body assembled from pre-encoded parts
(``features_used`` only when asked for), and one row per prediction handed to the prediction log
(a buffer append: no I/O on the request path). Answers are ``(status, JSON bytes)``; every call
carries a request id (the ``X-Request-ID`` header of the answer, ``request_id`` of the logged rows).

While the database is unreachable, the mirror keeps serving the last snapshot of the online store
it loaded (``/ready`` reports the outage); only a worker that never loaded one answers 503."""

from __future__ import annotations

import json
import time

import numpy as np

from streamflow.serving.features import FeatureRows, FeatureStoreUnavailable, OnlineFeatures
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
        self, metrics: ApiMetrics, holder: ModelHolder, mirror: OnlineFeatures, log: PredictionLog | None = None
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
        if not self.mirror.servable:
            raise ServiceUnavailable(self.mirror.unavailable_reason())
        return model

    def _lookup(self, user_ids: list[str]) -> FeatureRows:
        try:
            return self.mirror.lookup(user_ids)
        except FeatureStoreUnavailable as exc:
            raise ServiceUnavailable(str(exc)) from exc

    def predict_one(self, user_id: str, request_id: str, features: bool = False) -> tuple[int, bytes]:
        """(status, JSON body) for one user id (already validated); ``features``: include
        ``features_used``."""
        m = self.metrics
        t0 = time.perf_counter()
        try:
            model = self._ready_model()
            rows = self._lookup([user_id])
        except ServiceUnavailable as exc:
            return 503, error_body(exc.detail)
        if not rows.found:
            m.lookup_seconds.observe(time.perf_counter() - t0)
            m.lookup_misses.inc()
            return 404, error_body(f"unknown user_id {user_id!r}: not in the online feature store", user_id)
        t1 = time.perf_counter()
        p = round(float(model.predict(rows.strings, rows.numeric)[0]), 6)
        t2 = time.perf_counter()
        pred = 1 if p >= 0.5 else 0
        m.lookup_seconds.observe(t1 - t0)
        m.inference_seconds.observe(t2 - t1)
        m.observe_prediction(pred, p)
        if self.log is not None:
            self.log.record((request_id, time.time(), user_id, model.version, rows.as_of, p, pred))
        if features:
            body = b'{"user_id":%s,"prediction":%d,"churn_probability":%s,"model_version":%s,"features_used":%s}' % (
                json.dumps(user_id).encode(),
                pred,
                repr(p).encode(),
                model.version_json,
                rows.features_json(0),
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
        m = self.metrics
        t0 = time.perf_counter()
        try:
            model = self._ready_model()
            rows = self._lookup(user_ids)
        except ServiceUnavailable as exc:
            return 503, error_body(exc.detail)
        found_set = set(rows.found)
        found = [user_ids[i] for i in rows.found]
        unknown = [u for i, u in enumerate(user_ids) if i not in found_set]
        t1 = time.perf_counter()
        proba = model.predict(rows.strings, rows.numeric) if found else np.empty(0, dtype=np.float32)
        t2 = time.perf_counter()
        m.lookup_seconds.observe(t1 - t0)
        if found:
            m.inference_seconds.observe(t2 - t1)
        if unknown:
            m.lookup_misses.inc(len(unknown))
        parts = []
        logged: list[Row] = []
        served_at = time.time()
        version, as_of = model.version, rows.as_of
        for j, (u, raw) in enumerate(zip(found, proba.tolist(), strict=True)):
            p = round(raw, 6)
            pred = 1 if p >= 0.5 else 0
            m.observe_prediction(pred, p)
            logged.append((request_id, served_at, u, version, as_of, p, pred))
            if features:
                parts.append(
                    b'{"user_id":%s,"prediction":%d,"churn_probability":%s,"features_used":%s}'
                    % (json.dumps(u).encode(), pred, repr(p).encode(), rows.features_json(j))
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
