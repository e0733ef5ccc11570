"""Faults of the prediction API, through a real API process (``python -m streamflow.serving``)
over a real embedded PostgreSQL, MLflow registry and online store (generated months):

* ``/admin/reload`` abused during load: 401 / 409 as designed (404 when no token is set),
  ``/metrics`` keeps answering, the p99 of ``/predict`` stays within 3× of the same run's p99
  without abuse (measured by ``streamflow load`` in its own process);
* a forced-full prediction-log buffer: drops are counted, ``/predict`` stays 200, the rows that
  fit are all written;
* SIGTERM under load: the process exits within Docker's 10 s grace and every buffered
  prediction is in the table (1 and 2 workers);
* the database stopped while serving: predictions keep being served from the mirror, the log
  counts what it cannot write, and writes again when the database is back — every prediction
  is either written or counted as dropped.

Each case also checks what a user sees and keeps: no traceback in the API's log, the other
tables unchanged, ``streamflow status --json`` counting exactly the rows in the table."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamflow.training.train import train_model
from tests.helpers.api import (
    ADMIN_TOKEN,
    AUTH,
    READY_TIMEOUT,
    ApiProcess,
    Traffic,
    api_env,
    scrape,
    start_database,
    stop_database,
    value,
    wait_for,
)
from tests.helpers.faults import FaultHome, as_of, cli_env, make_home, rows, run_cli, status_json, table_checksums
from tests.helpers.repo import REPO

pytestmark = pytest.mark.integration

DOCKER_GRACE_SECONDS = 10.0
P99_FACTOR = 3.0
DROPPED = ("streamflow_prediction_log_dropped", "streamflow_prediction_log_dropped_total")
WRITTEN = ("streamflow_prediction_log_written", "streamflow_prediction_log_written_total")
BUFFERED = ("streamflow_prediction_log_buffered_rows", "streamflow_prediction_log_buffered_rows")


@pytest.fixture(scope="module")
def served_home(tmp_path_factory: pytest.TempPathFactory, fault_seeds: Path) -> Iterator[FaultHome]:
    """Two months ingested and published, a model trained on the first one in production."""
    for fh in make_home(tmp_path_factory.mktemp("api_faults"), fault_seeds):
        train_model(as_of(0), fh.settings, promote_if_first=True)
        yield fh


@pytest.fixture(scope="module")
def user_ids(served_home: FaultHome) -> list[str]:
    return [str(r[0]) for r in rows(served_home.settings, "SELECT user_id FROM users ORDER BY user_id")]


def start_api(fh: FaultHome, log: Path, workers: int = 1, **settings: object) -> ApiProcess:
    api = ApiProcess(api_env(cli_env(fh.home), **settings), log, workers=workers)
    try:
        api.wait_ready()
        if workers > 1:
            wait_for(
                lambda: all(
                    httpx.get(f"{api.url}/ready", headers={"connection": "close"}).status_code == 200 for _ in range(8)
                ),
                READY_TIMEOUT,
                "every worker ready",
            )
    except BaseException:
        api.stop()
        raise
    return api


def others(fh: FaultHome) -> dict[str, str]:
    """Checksums of every table but the prediction log's partitions."""
    return {k: v for k, v in table_checksums(fh.settings).items() if not k.startswith("predictions")}


def logged_ids(fh: FaultHome, request_ids: list[str]) -> Counter[str]:
    found = rows(
        fh.settings,
        "SELECT request_id::text FROM predictions WHERE request_id = ANY(%(ids)s::uuid[])",
        {"ids": request_ids},
    )
    return Counter(str(r[0]) for r in found)


def table_rows(fh: FaultHome) -> int:
    return int(rows(fh.settings, "SELECT count(*) FROM predictions")[0][0])  # type: ignore[call-overload]


def stopped_line(api: ApiProcess) -> dict[str, int]:
    """written / dropped / unflushed of every ``event=prediction_log_stopped`` line, summed."""
    total = Counter[str]()
    for line in api.logs().splitlines():
        if "event=prediction_log_stopped" in line:
            for key in ("written", "dropped", "unflushed"):
                total[key] += int(line.split(f" {key}=", 1)[1].split()[0])
    return dict(total)


def assert_clean(api: ApiProcess) -> None:
    logs = api.logs()
    assert "Traceback" not in logs, logs[-3000:]


# ---- /admin/reload abuse ----------------------------------------------------------------------
def _load(fh: FaultHome, url: str, seconds: float) -> dict[str, Any]:
    proc = run_cli(
        ["load", "--url", url, "--duration", str(seconds), "--requests", "1000000", "--concurrency", "4",
         "--rps", "150", "--json"],
        fh.home,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_admin_reload_abuse_during_load(served_home: FaultHome, tmp_path: Path) -> None:
    fh = served_home
    before = others(fh)
    api = start_api(fh, tmp_path / "api.log", admin_reload_cooldown_seconds=2)
    try:
        baseline, abused, abuse = [], [], []
        for _ in range(2):  # interleaved: the machine's load changes over minutes
            baseline.append(_load(fh, api.url, 5))
            abuser = subprocess.Popen(
                [sys.executable, "-m", "tests.helpers.abuse", api.url, "--token", ADMIN_TOKEN, "--seconds", "12"],
                cwd=REPO,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                abused.append(_load(fh, api.url, 5))
            finally:
                out, _ = abuser.communicate(timeout=120)
            abuse.append(json.loads(out.strip().splitlines()[-1]))
        fams = scrape(api.url)
    finally:
        code, seconds = api.terminate()
    admin = sum((Counter(a["admin"]) for a in abuse), Counter[str]())
    metrics_calls = sum((Counter(a["metrics"]) for a in abuse), Counter[str]())
    assert set(admin) <= {"200", "401", "409", "429"}, admin
    assert admin["401"] > 0 and admin["409"] > 0 and admin["429"] > 0 and admin["200"] > 0, admin
    assert set(metrics_calls) == {"200"}, metrics_calls  # /metrics answered every round
    for summary in baseline + abused:
        assert summary["ok"] == summary["requests"] and summary["errors"] == {}, summary
    p99_base = max(s["p99_ms"] for s in baseline)
    p99_abused = max(s["p99_ms"] for s in abused)
    assert p99_abused <= P99_FACTOR * p99_base, (
        f"p99 under abuse {p99_abused:.2f} ms vs {p99_base:.2f} ms without "
        f"(baseline {[s['p99_ms'] for s in baseline]}, abused {[s['p99_ms'] for s in abused]})"
    )
    assert value(fams, "api_requests", "api_requests_total", endpoint="/admin/reload", status="409") == admin["409"]
    assert value(fams, "api_model_loads", "api_model_loads_total") >= 1 + admin["200"]  # forced reloads really ran
    assert seconds < DOCKER_GRACE_SECONDS and code is not None
    assert_clean(api)
    assert others(fh) == before


# ---- a full buffer ------------------------------------------------------------------------
def test_a_full_buffer_counts_drops_while_predict_stays_200(
    served_home: FaultHome, user_ids: list[str], tmp_path: Path
) -> None:
    fh = served_home
    before = others(fh)
    # Nothing is written before shutdown (flush every hour): the buffer of 50 rows fills up.
    api = start_api(fh, tmp_path / "api.log", prediction_log_buffer_rows=50, prediction_log_flush_seconds=3600,
                    admin_token=None)  # fmt: skip
    answers = []
    try:
        with httpx.Client(base_url=api.url, timeout=10) as c:
            for uid in user_ids[:80]:
                r = c.post("/predict", json={"user_id": uid})
                assert r.status_code == 200
                answers.append(r.headers["x-request-id"])
            batch = c.post("/predict/batch", json={"user_ids": user_ids[:20]})
            assert batch.status_code == 200 and batch.json()["count"] == 20
            assert c.post("/admin/reload", headers=AUTH).status_code == 404  # no token set: the endpoint is off
        fams = scrape(api.url)
    finally:
        code, seconds = api.terminate()
    assert value(fams, *DROPPED, reason="buffer_full") == 80 + 20 - 50
    assert value(fams, *WRITTEN) == 0
    assert seconds < DOCKER_GRACE_SECONDS and code is not None
    assert stopped_line(api) == {"written": 50, "dropped": 50, "unflushed": 0}
    kept = logged_ids(fh, answers)
    assert kept == Counter(answers[:50])  # the first 50 fit, the rest were dropped
    assert logged_ids(fh, [batch.headers["x-request-id"]]) == Counter()
    assert_clean(api)
    assert others(fh) == before
    assert status_json(fh.home)["predictions"]["rows"] == table_rows(fh)  # type: ignore[index]


# ---- SIGTERM under load --------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_exits_in_time_with_every_prediction_written(
    served_home: FaultHome, user_ids: list[str], tmp_path: Path, workers: int
) -> None:
    fh = served_home
    before = others(fh)
    # A 30 s flush interval: at SIGTERM everything served is still buffered, only the shutdown flush writes it.
    api = start_api(fh, tmp_path / "api.log", workers=workers, prediction_log_flush_seconds=30)
    with Traffic(api.url, user_ids, threads=4, pause=0) as traffic:
        wait_for(lambda: len(traffic.ok()) >= 1500, 60, "load on the API")
        assert value(scrape(api.url), *WRITTEN) == 0  # all of it is in the buffer
        code, seconds = api.terminate()
    served = traffic.ok()
    assert seconds < DOCKER_GRACE_SECONDS, f"exit took {seconds:.1f} s"
    assert code is not None
    ids = [a.request_id for a in served if a.request_id]
    assert len(ids) == len(served) >= 1500
    found = logged_ids(fh, ids)
    assert found == Counter(ids), f"{len(set(ids) - set(found))} of {len(ids)} served predictions not in the table"
    line = stopped_line(api)
    assert line["dropped"] == 0 and line["unflushed"] == 0 and line["written"] >= len(ids), line
    assert api.logs().count("event=prediction_log_stopped") == workers
    assert_clean(api)
    assert others(fh) == before


# ---- the database stopped while serving ---------------------------------------------------------
def test_database_stopped_while_serving(served_home: FaultHome, user_ids: list[str], tmp_path: Path) -> None:
    fh = served_home
    settings = fh.settings
    before = others(fh)
    rows_before = table_rows(fh)
    api = start_api(fh, tmp_path / "api.log", prediction_log_flush_seconds=0.2, prediction_log_retries=1,
                    prediction_log_retry_max_seconds=0.5, prediction_log_buffer_rows=200)  # fmt: skip
    answers: list[tuple[str, int]] = []  # (request id, phase: 0 before, 1 during, 2 after the outage)

    def serve(c: httpx.Client, n: int, phase: int) -> None:
        for uid in user_ids[:n]:
            r = c.post("/predict", json={"user_id": uid})
            assert r.status_code == 200, (phase, r.status_code, r.text)
            answers.append((r.headers["x-request-id"], phase))

    try:
        with httpx.Client(base_url=api.url, timeout=10) as c:
            serve(c, 50, 0)
            wait_for(lambda: value(scrape(api.url), *WRITTEN) == 50, 30, "the first rows written")
            stop_database(settings)
            try:
                wait_for(lambda: c.get("/ready").status_code == 503, 30, "/ready to see the outage")
                for _ in range(3):  # served from the mirror; the log cannot write them
                    serve(c, 150, 1)
                wait_for(lambda: value(scrape(api.url), *DROPPED) > 0, 60, "the log to count what it cannot write")
                during = scrape(api.url)
                assert c.get("/health").status_code == 200
            finally:
                start_database(settings)
            wait_for(lambda: c.get("/ready").status_code == 200, 60, "/ready after the database is back")
            # the rows buffered during the outage are written first (after at most one backoff);
            # until then the full buffer still drops new rows: that is the contract, not a loss
            wait_for(lambda: value(scrape(api.url), *BUFFERED) == 0, 60, "the outage backlog to be written")
            written = value(scrape(api.url), *WRITTEN)
            serve(c, 100, 2)
            wait_for(lambda: value(scrape(api.url), *WRITTEN) >= written + 100, 60, "writes to resume")
            after = scrape(api.url)
    finally:
        code, seconds = api.terminate()
    assert seconds < DOCKER_GRACE_SECONDS and code is not None
    dropped = value(after, *DROPPED)
    assert value(during, *DROPPED, reason="write_failed") + value(during, *DROPPED, reason="buffer_full") > 0
    # every prediction is either written or counted as dropped
    line = stopped_line(api)
    assert line["written"] + line["dropped"] == len(answers) == 50 + 450 + 100, line
    assert line["dropped"] == dropped and line["unflushed"] == 0
    found = logged_ids(fh, [rid for rid, _ in answers])
    assert sum(found.values()) == line["written"] and set(found.values()) <= {1}
    for rid, phase in answers:
        if phase != 1:
            assert found[rid] == 1, f"a prediction served {'before' if phase == 0 else 'after'} the outage is missing"
    logs = api.logs()
    assert "event=prediction_log_write_failed" in logs and "event=prediction_log_write_recovered" in logs
    assert_clean(api)
    assert others(fh) == before
    assert table_rows(fh) == rows_before + line["written"]
    assert status_json(fh.home)["predictions"]["rows"] == table_rows(fh)  # type: ignore[index]
