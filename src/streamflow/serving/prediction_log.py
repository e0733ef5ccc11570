"""The prediction log: every prediction served by ``/predict`` and ``/predict/batch``, written
to PostgreSQL (table ``predictions``, migration 011) off the request path.

A request only appends a tuple to an in-process buffer (one uncontended lock, no I/O). A
background thread (:class:`PredictionLog`, one per worker process, started by the app's
lifespan) takes everything buffered every ``prediction_log_flush_seconds`` and writes it with
one ``COPY`` in one transaction, formatted and sent in chunks of ``prediction_log_copy_chunk_rows``
with the GIL handed back between two chunks (the serving thread waits for at most one chunk's
work, not the whole flush's). The buffer is bounded: it holds at most
``prediction_log_buffer_rows`` rows, counting those being written; a row that does not fit is
dropped and counted (``streamflow_prediction_log_dropped_total{reason="buffer_full"}``), so a
slow or stopped database never slows a request down and never grows the process. A failed
write is retried with exponential backoff (from the flush interval, doubling, at most
``prediction_log_retry_max_seconds``); after ``prediction_log_retries`` retries the batch is
dropped and counted (``reason="write_failed"``). At shutdown the buffer is flushed within
``prediction_log_shutdown_seconds``; what cannot be written by then is counted
(``reason="shutdown"``). Every prediction therefore ends up either in the table or in the
dropped counter: ``written + dropped = predictions served`` (per worker).

Daily partitions of ``predictions`` are created on demand (``streamflow_prediction_partition``)
before the first COPY of a day's rows. ``served_at`` is the wall-clock time (UTC) at which the
prediction was computed; ``as_of`` is the as-of date of the online features the model received.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from streamflow.core.settings import Settings
from streamflow.db.predictions import COLUMNS, TABLE
from streamflow.serving.metrics import ApiMetrics

log = logging.getLogger(__name__)

# (request_id, served_at as epoch seconds, user_id, model_version, feature as_of, probability, prediction)
Row = tuple[str, float, str, str, date | None, float, int]
DROP_BUFFER_FULL = "buffer_full"
DROP_WRITE_FAILED = "write_failed"
DROP_SHUTDOWN = "shutdown"
STOP_POLL_SECONDS = 0.05  # between two attempts while shutting down


class RequestIds:
    """Request ids, unique across worker processes and restarts without coordination: a random
    64-bit prefix per instance (one per worker) and a counter, formatted as an RFC 9562 UUID
    (version 8, "custom"). ~0.3 µs each; thread-safe (``itertools.count`` is atomic)."""

    def __init__(self) -> None:
        r = secrets.randbits(64)
        self._prefix = f"{r >> 32:08x}-{(r >> 16) & 0xFFFF:04x}-{0x8000 | (r & 0x0FFF):04x}-"
        self._next = itertools.count(secrets.randbits(20)).__next__

    def new(self) -> str:
        n = self._next()
        return f"{self._prefix}{0x8000 | ((n >> 48) & 0x3FFF):04x}-{n & 0xFFFFFFFFFFFF:012x}"


class _Database:
    """The writer's connection (psycopg, one per worker) and the partitions it knows exist."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._conninfo: str | None = None
        self._conn: Any = None
        self._days: set[date] = set()

    def _connect(self) -> Any:
        import psycopg

        if self._conninfo is None:
            # Resolved once, like the feature mirror: for the embedded PostgreSQL this attaches
            # to (or starts) it; afterwards the API only connects, it never restarts a database.
            from streamflow.db.engine import libpq_url

            self._conninfo = libpq_url(self.settings)
        if self._conn is None or self._conn.closed:
            timeout = self.settings.prediction_log_db_timeout_seconds
            self._conn = psycopg.connect(
                self._conninfo,
                connect_timeout=max(1, round(timeout)),
                options=f"-c statement_timeout={int(timeout * 1000)}",
                application_name="streamflow-prediction-log",
            )
            self._days.clear()
            exists = self._conn.execute("SELECT to_regclass('public.predictions') IS NOT NULL").fetchone()[0]
            self._conn.commit()
            if not exists:  # a database older than the prediction log: apply the migrations once
                from streamflow.db.engine import get_engine
                from streamflow.db.schema import migrate

                migrate(get_engine(self.settings))
        return self._conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._days.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def write(self, rows: Sequence[Row], model_name: str) -> None:
        """One transaction: create missing day partitions, COPY the rows. Raises on failure (the
        connection is then closed: the next attempt starts afresh)."""
        try:
            conn = self._connect()
            served = [datetime.fromtimestamp(r[1], UTC) for r in rows]
            days = {ts.date() for ts in served} - self._days
            with conn.transaction():
                for day in sorted(days):
                    conn.execute("SELECT streamflow_prediction_partition(%s)", (day,))
                with conn.cursor() as cur:
                    columns = ", ".join(COLUMNS)
                    chunk = self.settings.prediction_log_copy_chunk_rows
                    with cur.copy(f"COPY {TABLE} ({columns}) FROM STDIN") as copy:
                        for start in range(0, len(rows), chunk):
                            end = start + chunk
                            for r, ts in zip(rows[start:end], served[start:end], strict=True):
                                copy.write_row((r[0], ts, r[2], model_name, r[3], r[4], r[5], r[6]))
                            time.sleep(0)  # hand the GIL to the serving thread between two chunks
            self._days |= days
        except BaseException:
            self.close()
            raise


class PredictionLog:
    """The bounded buffer (hot path: :meth:`record`, :meth:`record_many`) and its writer thread."""

    def __init__(self, settings: Settings, metrics: ApiMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.capacity = settings.prediction_log_buffer_rows
        self._db = _Database(settings)
        self._lock = threading.Lock()
        self._rows: list[Row] = []
        self._taken = 0  # rows taken by the writer and not yet written or dropped
        self._wake = threading.Event()
        self._stopping = False
        self._deadline = 0.0
        self._thread: threading.Thread | None = None
        self._dropped_full = metrics.log_dropped.labels(reason=DROP_BUFFER_FULL)
        self._dropped_write = metrics.log_dropped.labels(reason=DROP_WRITE_FAILED)
        self._dropped_shutdown = metrics.log_dropped.labels(reason=DROP_SHUTDOWN)
        self._flush_ok = metrics.log_flush_seconds.labels(outcome="ok")
        self._flush_error = metrics.log_flush_seconds.labels(outcome="error")
        self.written = 0  # rows written by this process (also in the metrics)
        self.dropped = 0
        self.last_error: str | None = None

    # hot path ------------------------------------------------------------------------------
    def record(self, row: Row) -> None:
        """Buffer one prediction, or drop and count it when the buffer is full. Never blocks on I/O."""
        with self._lock:
            if len(self._rows) + self._taken < self.capacity:
                self._rows.append(row)
                return
            self.dropped += 1
        self._dropped_full.inc()

    def record_many(self, rows: list[Row]) -> None:
        """Buffer the predictions of a batch; those that do not fit are dropped and counted."""
        with self._lock:
            room = self.capacity - len(self._rows) - self._taken
            if room >= len(rows):
                self._rows.extend(rows)
                return
            if room > 0:
                self._rows.extend(rows[:room])
            lost = len(rows) - max(room, 0)
            self.dropped += lost
        self._dropped_full.inc(lost)

    @property
    def buffered(self) -> int:
        """Rows not written yet (waiting, or in the write being attempted)."""
        with self._lock:
            return len(self._rows) + self._taken

    # writer thread -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        log.info(
            "event=prediction_log_started pid=%d buffer_rows=%d flush_seconds=%s",
            os.getpid(),
            self.capacity,
            self.settings.prediction_log_flush_seconds,
        )

    def stop(self, timeout: float | None = None) -> None:
        """Flush what is buffered (at most ``timeout``, default ``prediction_log_shutdown_seconds``)
        and stop the writer; what could not be written is counted as dropped."""
        timeout = self.settings.prediction_log_shutdown_seconds if timeout is None else timeout
        thread = self._thread
        if thread is None:
            return
        self._deadline = time.monotonic() + timeout
        self._stopping = True
        self._wake.set()
        thread.join(timeout + 0.5)
        self._thread = None
        unflushed = 0
        if thread.is_alive():  # stuck in a write the database does not answer: give up on it
            with self._lock:
                unflushed = len(self._rows) + self._taken
                self._rows, self._taken = [], 0
                self.dropped += unflushed
            if unflushed:
                self._dropped_shutdown.inc(unflushed)
        else:
            self._db.close()
        log.info(
            "event=prediction_log_stopped pid=%d written=%d dropped=%d unflushed=%d last_error=%r",
            os.getpid(),
            self.written,
            self.dropped,
            unflushed,
            self.last_error,
        )

    def _take(self, batch: list[Row]) -> list[Row]:
        """The batch to write: the one being retried, or everything buffered now."""
        if batch:
            return batch
        with self._lock:
            batch, self._rows = self._rows, []
            self._taken = len(batch)
        return batch

    def _settle(self, n: int) -> None:
        with self._lock:
            self._taken = max(0, self._taken - n)

    def _run(self) -> None:
        interval = self.settings.prediction_log_flush_seconds
        longest = self.settings.prediction_log_retry_max_seconds
        batch: list[Row] = []
        failures = 0  # consecutive failed attempts (the backoff)
        attempts = 0  # failed attempts of the current batch
        while True:
            if not self._stopping:
                delay = interval if failures == 0 else min(interval * 2 ** min(failures, 30), longest)
                self._wake.wait(delay)
                self._wake.clear()
            stopping = self._stopping
            if stopping and time.monotonic() >= self._deadline:
                self._give_up()
                return
            batch = self._take(batch)
            if batch:
                if self._attempt(batch):
                    self._settle(len(batch))
                    batch, failures, attempts = [], 0, 0
                else:
                    failures += 1
                    attempts += 1
                    if attempts > self.settings.prediction_log_retries and not stopping:
                        self._dropped_write.inc(len(batch))
                        with self._lock:
                            self.dropped += len(batch)
                        log.warning(
                            "event=prediction_log_dropped reason=%s rows=%d attempts=%d error=%r",
                            DROP_WRITE_FAILED,
                            len(batch),
                            attempts,
                            self.last_error,
                        )
                        self._settle(len(batch))
                        batch, attempts = [], 0
                    elif stopping:
                        time.sleep(STOP_POLL_SECONDS)
            self.metrics.log_buffered.set(self.buffered)
            if stopping and not batch and self.buffered == 0:
                return

    def _attempt(self, batch: list[Row]) -> bool:
        t0 = time.perf_counter()
        try:
            self._db.write(batch, self.settings.model_name)
        except Exception as exc:
            self._flush_error.observe(time.perf_counter() - t0)
            msg = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            if msg != self.last_error:
                log.warning("event=prediction_log_write_failed rows=%d error=%r", len(batch), msg)
            self.last_error = msg
            return False
        self._flush_ok.observe(time.perf_counter() - t0)
        self.metrics.log_written.inc(len(batch))
        self.written += len(batch)
        if self.last_error is not None:
            log.info("event=prediction_log_write_recovered rows=%d", len(batch))
            self.last_error = None
        return True

    def _give_up(self) -> None:
        with self._lock:
            lost = len(self._rows) + self._taken
            self._rows, self._taken = [], 0
            self.dropped += lost
        if lost:
            self._dropped_shutdown.inc(lost)
            log.warning("event=prediction_log_dropped reason=%s rows=%d error=%r", DROP_SHUTDOWN, lost, self.last_error)
