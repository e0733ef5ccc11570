"""The prediction API as a real server process, for integration and fault tests: start it
(``python -m streamflow.serving`` in its own session, output to a log file), wait for it, stop
it (SIGTERM, measured), drive traffic at it while recording what was served, read its metrics,
and stop / restart the embedded PostgreSQL under it."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.net import free_port

READY_TIMEOUT = 180.0
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if predicate():
                return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def api_env(base: Mapping[str, str], **settings: object) -> dict[str, str]:
    """``base`` (a stack's environment) with fast polls, INFO logs, the admin token (no reload
    cooldown), and ``settings`` as STREAMFLOW_* variables (None removes one)."""
    env = dict(base)
    env.update(
        {
            "STREAMFLOW_MODEL_POLL_SECONDS": "1",
            "STREAMFLOW_FEATURE_POLL_SECONDS": "0.5",
            "STREAMFLOW_LOG_LEVEL": "INFO",
            "STREAMFLOW_ADMIN_TOKEN": ADMIN_TOKEN,
            "STREAMFLOW_ADMIN_RELOAD_COOLDOWN_SECONDS": "0",  # tests reload back to back
        }
    )
    for key, value in settings.items():
        name = f"STREAMFLOW_{key.upper()}"
        if value is None:
            env.pop(name, None)
        else:
            env[name] = str(value)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


class ApiProcess:
    """`python -m streamflow.serving` in its own session; stop() always ends it."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        cmd = [sys.executable, "-m", "streamflow.serving", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--workers", str(workers)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"API exited with {self.proc.returncode}:\n{self.logs()[-3000:]}")
            return httpx.get(f"{self.url}/ready", timeout=2).status_code == 200

        wait_for(ready, timeout, "the API to become ready")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> tuple[int | None, float]:
        """SIGTERM; (exit code or None if it had to be killed, seconds it took to exit)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code: int | None = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        seconds = time.monotonic() - t0
        self.stop()
        return code, seconds

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


@contextlib.contextmanager
def running_api(env: Mapping[str, str], log: Path) -> Iterator[ApiProcess]:
    """An API process over ``env`` (see :func:`api_env`), ready; always stopped on the way out."""
    server = ApiProcess(api_env(env), log)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def scrape(url: str) -> dict[str, Any]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    if family not in fams:
        return 0.0
    return sum(
        s.value
        for s in fams[family].samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def predict(client: httpx.Client, url: str, user_id: str, features: bool = False) -> httpx.Response:
    return client.post(f"{url}/predict", params={"features": "true"} if features else None,
                       json={"user_id": user_id}, timeout=10)  # fmt: skip


@dataclass(frozen=True)
class Answer:
    """One /predict as the client saw it (status -1: no HTTP answer)."""

    status: int
    user_id: str
    request_id: str | None = None
    model_version: str | None = None
    probability: float | None = None
    prediction: int | None = None
    seconds: float = 0.0


class Traffic:
    """Steady /predict traffic from ``threads`` threads (keep-alive clients), recording every
    answer. ``results`` are (status, model_version) pairs, ``answers`` the whole record."""

    def __init__(self, url: str, ids: list[str], threads: int = 1, pause: float = 0.002) -> None:
        self.url, self.ids, self.pause = url, ids, pause
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    @property
    def results(self) -> list[tuple[int, str | None]]:
        return [(a.status, a.model_version) for a in self.answers]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                uid = rng.choice(self.ids)
                t0 = time.perf_counter()
                try:
                    r = predict(client, self.url, uid)
                except httpx.HTTPError:
                    self.answers.append(Answer(-1, uid, seconds=time.perf_counter() - t0))
                    if self._stop.wait(0.05):
                        return
                    continue
                seconds = time.perf_counter() - t0
                body = r.json() if r.status_code == 200 else {}
                self.answers.append(
                    Answer(
                        r.status_code,
                        uid,
                        r.headers.get("x-request-id"),
                        body.get("model_version"),
                        body.get("churn_probability"),
                        body.get("prediction"),
                        seconds,
                    )
                )
                if self.pause:
                    time.sleep(self.pause)

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)

    def latest_version(self) -> str | None:
        return self.answers[-1].model_version if self.answers else None

    def ok(self) -> list[Answer]:
        return [a for a in self.answers if a.status == 200]


def p99(seconds: list[float]) -> float:
    ordered = sorted(seconds)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# ---- the embedded PostgreSQL under a running API -------------------------------------------
def _pg(settings: Any) -> Any:
    from streamflow.db.embedded import open_server

    return open_server(settings)[0]  # this process's handle (attached by the stack fixture)


def stop_database(settings: Any) -> None:
    """Stop the embedded PostgreSQL of ``settings`` (fast shutdown: connections are cut)."""
    _pg(settings).pg_ctl("-w", "-m", "fast", "stop", timeout=30)


def start_database(settings: Any) -> None:
    server = _pg(settings)
    with server._lock:
        server.ensure_postgres_running()
