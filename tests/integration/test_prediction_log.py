"""The prediction log on the course stack (real API processes, embedded PostgreSQL, MLflow):
every prediction served becomes one row with what was served — across a hot swap of the model
and with two workers — and the realized performance of what was served equals the metrics
recomputed by hand from those rows and the course's labels."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psycopg
import pytest

from streamflow.core.data_model import ENTITY, LABEL
from streamflow.db.engine import get_engine, libpq_url
from streamflow.monitoring.performance import calibration_bins, realized_metrics, record_realized_performance
from tests.helpers.api import AUTH, READY_TIMEOUT, ApiProcess, Traffic, api_env, running_api, scrape, value, wait_for
from tests.helpers.course import COURSE_SEEDS

pytestmark = pytest.mark.integration

ONLINE_AS_OF = "2024-02-29"


@pytest.fixture
def api(course_stack: Any, tmp_path: Path) -> Iterator[ApiProcess]:
    with running_api(course_stack.env(), tmp_path / "api.log") as server:
        yield server


def logged(settings: Any, request_ids: list[str]) -> pd.DataFrame:
    with psycopg.connect(libpq_url(settings)) as conn:
        rows = conn.execute(
            "SELECT request_id::text, served_at, user_id, model_name, model_version, as_of, churn_probability, "
            "prediction FROM predictions WHERE request_id = ANY(%s::uuid[])",
            (request_ids,),
        ).fetchall()
    columns = ["request_id", "served_at", "user_id", "model_name", "model_version", "as_of", "proba", "prediction"]
    return pd.DataFrame(rows, columns=columns)


def assert_rows_match(answers: list[Any], rows: pd.DataFrame, model_name: str) -> None:
    """One row per answer, with what the answer said."""
    assert len(rows) == len(answers) and rows["request_id"].is_unique
    got = rows.set_index("request_id")
    for a in answers:
        r = got.loc[a.request_id]
        assert (r.user_id, r.model_name, r.model_version, r.prediction) == (
            a.user_id,
            model_name,
            a.model_version,
            a.prediction,
        )
        assert r.proba == a.probability  # the served value itself, not a recomputation
        assert str(r.as_of) == ONLINE_AS_OF


def test_every_prediction_is_logged_across_a_hot_swap(
    api: ApiProcess, course_stack: Any, user_ids: list[str], production: Any
) -> None:
    settings = course_stack.settings
    original = production.version
    candidate = next((t for t in course_stack.trained if t.version != original), None) or course_stack.train(
        ONLINE_AS_OF
    )
    try:
        with Traffic(api.url, user_ids, threads=2) as traffic:
            wait_for(lambda: len(traffic.ok()) >= 50, 30, "traffic on the original model")
            course_stack.promote(candidate.version, "test: prediction log across a hot swap")
            wait_for(lambda: traffic.latest_version() == candidate.version, 30, "the poll to load the candidate")
            n = len(traffic.ok())
            wait_for(lambda: len(traffic.ok()) >= n + 50, 30, "traffic on the candidate")
            course_stack.promote(original, "test: restore")
            r = httpx.post(f"{api.url}/admin/reload", headers=AUTH, timeout=60)
            assert r.status_code == 200 and r.json()["version"] == original
            n = len(traffic.ok())
            wait_for(lambda: len(traffic.ok()) >= n + 50, 30, "traffic on the original model again")
    finally:
        course_stack.promote(original, "test: restore")
    answers = traffic.ok()
    assert len(answers) == len(traffic.answers)  # nothing failed
    assert {a.model_version for a in answers} == {original, candidate.version}
    before_stop = scrape(api.url)
    api.terminate()
    logs = api.logs()
    assert "event=prediction_log_stopped" in logs and " dropped=0 unflushed=0 " in logs, logs[-2000:]
    rows = logged(settings, [a.request_id for a in answers])
    assert_rows_match(answers, rows, settings.model_name)
    assert value(before_stop, "streamflow_prediction_log_dropped", "streamflow_prediction_log_dropped_total") == 0


def test_two_workers_log_every_prediction_once(course_stack: Any, user_ids: list[str], tmp_path: Path) -> None:
    settings = course_stack.settings
    server = ApiProcess(api_env(course_stack.env()), tmp_path / "api2.log", workers=2)
    try:
        server.wait_ready()
        wait_for(
            lambda: all(
                httpx.get(f"{server.url}/ready", headers={"connection": "close"}).status_code == 200 for _ in range(8)
            ),
            READY_TIMEOUT,
            "both workers ready",
        )
        ids = random.Random(3).sample(user_ids, 120)
        answers = []
        for uid in ids:  # a new connection per request spreads them over the workers
            r = httpx.post(f"{server.url}/predict", json={"user_id": uid}, headers={"connection": "close"})
            assert r.status_code == 200
            body = r.json()
            answers.append((r.headers["x-request-id"], uid, body["churn_probability"]))
        batch = httpx.post(f"{server.url}/predict/batch", json={"user_ids": ids[:10]}, headers={"connection": "close"})
        assert batch.status_code == 200
    finally:
        server.stop()
    rows = logged(settings, [a[0] for a in answers])
    assert len(rows) == 120 and rows["request_id"].is_unique
    assert dict(zip(rows["request_id"], rows["proba"], strict=True)) == {a[0]: a[2] for a in answers}
    prefixes = {rid.rsplit("-", 2)[0] for rid in rows["request_id"]}  # one random prefix per worker
    assert len(prefixes) == 2, prefixes
    batch_rows = logged(settings, [batch.headers["x-request-id"]])
    assert sorted(batch_rows["user_id"]) == sorted(ids[:10])


def test_served_performance_equals_metrics_recomputed_from_the_logged_rows(course_stack: Any) -> None:
    """Runs after the tests above (and any other API test of the session): whatever the log holds
    for 2024-02-29, recomputed here from the raw rows and the course's labels file."""
    settings = course_stack.settings
    with psycopg.connect(libpq_url(settings)) as conn:
        raw = pd.DataFrame(
            conn.execute(
                "SELECT model_version, user_id, served_at, request_id::text, churn_probability FROM predictions "
                "WHERE model_name = %s AND as_of = %s",
                (settings.model_name, ONLINE_AS_OF),
            ).fetchall(),
            columns=["model_version", ENTITY, "served_at", "request_id", "churn_probability"],
        )
    assert len(raw) > 0, "the API tests above logged predictions"
    labels = pd.read_csv(COURSE_SEEDS / "month_001" / "labels.csv")
    labels[LABEL] = labels[LABEL].astype(str).str.lower().eq("true").astype(int)
    latest = raw.sort_values(["served_at", "request_id"]).drop_duplicates(["model_version", ENTITY], keep="last")
    joined = latest.merge(labels[[ENTITY, LABEL]], on=ENTITY, how="inner")

    result = record_realized_performance(ONLINE_AS_OF, settings)
    assert {m.as_of for m in result.served} <= {ONLINE_AS_OF}  # nothing was served with January's features
    served = {m.model_version: m for m in result.served}
    assert set(served) == set(joined["model_version"])
    for version, group in joined.groupby("model_version"):
        y, p = group[LABEL].to_numpy(), group["churn_probability"].to_numpy()
        m = served[str(version)]
        assert m.population == "served" and m.source == "realized"
        assert m.n == len(group)
        expected = realized_metrics(y, p)
        for k, v in expected.items():
            assert m.metrics[k] == (pytest.approx(v, rel=1e-12) if v is not None else None), k
        assert [b.count for b in m.calibration_bins] == [b.count for b in calibration_bins(y, p)]
    # stored next to the month's realized measurement, and shown by the CLI's JSON
    from streamflow.monitoring.performance import load_measurements

    stored = {(g["model_version"], g["population"]): g for g in load_measurements(settings, as_of=ONLINE_AS_OF)}
    for version, m in served.items():
        assert stored[(version, "served")]["metrics"]["n"] == m.n
        assert stored[(version, "served")]["metrics"]["auc"] == pytest.approx(m.metrics["auc"])
    assert result.as_dict()["served"] == [
        {"as_of": ONLINE_AS_OF, "model_version": v, "metrics": m.flat()} for v, m in sorted(served.items())
    ]
    assert np.isfinite([m.metrics["brier"] for m in served.values()]).all()


# ---- retention --------------------------------------------------------------------------
def test_prune_drops_whole_old_days_through_the_cli(tmp_path: Path) -> None:
    """A bare home (migrations only): predictions on five days, pruned through the real CLI."""
    import json
    from datetime import UTC, datetime, timedelta

    from streamflow.core.settings import Settings
    from streamflow.db.engine import release_embedded
    from streamflow.db.schema import migrate
    from tests.helpers.faults import assert_clean_failure, run_cli, status_json

    settings = Settings(home=tmp_path / "home")
    try:
        migrate(get_engine(settings))
        today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
        ages = {0: 3, 1: 2, 29: 4, 30: 5, 45: 6}  # days ago → rows
        with psycopg.connect(libpq_url(settings)) as conn:
            for age, n in ages.items():
                day = today - timedelta(days=age)
                conn.execute("SELECT streamflow_prediction_partition(%s)", (day.date(),))
                for i in range(n):
                    conn.execute(
                        "INSERT INTO predictions VALUES (gen_random_uuid(), %s, %s, 'm', '1', NULL, 0.5, 1)",
                        (day, f"u{age}-{i}"),
                    )
        assert status_json(settings.home)["predictions"]["rows"] == sum(ages.values())  # type: ignore[index]

        dry = run_cli(["predictions", "prune", "--older-than", "30", "--dry-run", "--json"], settings.home)
        assert dry.returncode == 0, dry.stderr
        report = json.loads(dry.stdout)
        assert report["rows"] == 6 and [p["rows"] for p in report["partitions"]] == [6]  # only the day 45 days ago
        assert status_json(settings.home)["predictions"]["rows"] == sum(ages.values())  # type: ignore[index]

        done = run_cli(["predictions", "prune", "--older-than", "29"], settings.home)
        assert done.returncode == 0 and "deleted 11 predictions" in done.stdout, done.stdout + done.stderr
        st = status_json(settings.home)["predictions"]
        assert st["rows"] == 3 + 2 + 4  # type: ignore[index]
        assert st["by_model_version"] == {"m:1": 9}  # type: ignore[index]
        with psycopg.connect(libpq_url(settings)) as conn:
            partitions = conn.execute(
                "SELECT count(*) FROM pg_class WHERE relname LIKE 'predictions_p%' AND relkind = 'r'"
            ).fetchone()
        assert partitions == (3,)

        assert_clean_failure(run_cli(["predictions", "prune", "--older-than", "-1"], settings.home), 2, "--older-than")
        assert_clean_failure(run_cli(["predictions", "prune"], settings.home), 2, "Missing option '--older-than'")
        assert status_json(settings.home)["predictions"]["rows"] == 9  # type: ignore[index]
    finally:
        release_embedded(settings)


def test_a_flush_written_in_chunks_keeps_every_row_and_the_partitions(tmp_path: Path) -> None:
    """A bare home, a chunk of 3 rows: 10 rows over two days, flushed at stop, are all in the
    table (one COPY sent in four chunks, both day partitions created), counted as written."""
    from datetime import UTC, date, datetime, timedelta

    from streamflow.core.settings import Settings
    from streamflow.db.engine import release_embedded
    from streamflow.db.schema import migrate
    from streamflow.serving.metrics import ApiMetrics
    from streamflow.serving.prediction_log import PredictionLog, RequestIds

    settings = Settings(home=tmp_path / "home", prediction_log_copy_chunk_rows=3, prediction_log_flush_seconds=60)
    try:
        migrate(get_engine(settings))
        plog = PredictionLog(settings, ApiMetrics())
        plog.start()
        ids = RequestIds()
        now = datetime.now(UTC).timestamp()
        rows = [
            (ids.new(), now - (86_400 if i % 2 else 0), f"u{i}", "1", date(2024, 2, 29), i / 10, i % 2)
            for i in range(10)
        ]
        plog.record_many(rows[:4])
        for r in rows[4:]:
            plog.record(r)
        plog.stop()
        assert (plog.written, plog.dropped, plog.buffered) == (10, 0, 0)
        got = logged(settings, [r[0] for r in rows])
        assert sorted(got["user_id"]) == sorted(r[2] for r in rows)
        assert sorted(got["proba"]) == sorted(r[5] for r in rows)
        days = {d.date() for d in got["served_at"].dt.tz_convert(UTC)}
        today = datetime.fromtimestamp(now, UTC).date()
        assert days == {today, today - timedelta(days=1)}
    finally:
        release_embedded(settings)
