"""Fault tests: each case drives the real CLI in a subprocess against a real (embedded)
PostgreSQL under a temporary STREAMFLOW_HOME and asserts what a user sees — the exit code, a
message naming what is wrong, no traceback — and what a user keeps: ``streamflow status --json``
and a checksum of every table unchanged (or healed).

Shared helpers, meant for reuse by other fault suites:

* :func:`run_cli` / :func:`spawn_cli` — the CLI in a subprocess with a given home (and, for
  crash tests, a fault point where it pauses, see ``streamflow.core.faults``);
* :func:`table_checksums` — md5 over every row of every table in the public schema;
* :func:`status_json` — ``streamflow status --json`` parsed;
* :func:`assert_clean_failure` — exit code + needles + no traceback.
"""

from __future__ import annotations

import codecs
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from streamflow.app.monthly import ingest_and_publish
from streamflow.core.data_model import SOURCE_TABLES
from streamflow.core.dates import month_as_of
from streamflow.core.logging_setup import setup_logging
from streamflow.core.settings import Settings
from streamflow.db.engine import libpq_url, release_embedded

FIRST_AS_OF = "2024-01-31"
USERS = 300
MONTHS = 4
CLI_TIMEOUT = 240


def as_of(index: int) -> str:
    from datetime import date

    return month_as_of(date(2024, 1, 31), index).isoformat()


# ---- subprocess helpers ----------------------------------------------------------------------
def cli_env(home: Path, **settings: object) -> dict[str, str]:
    """Environment of a CLI subprocess using ``home``; ``settings`` become STREAMFLOW_* variables."""
    env = dict(os.environ)
    env["STREAMFLOW_HOME"] = str(home)
    env.setdefault("STREAMFLOW_LOG_LEVEL", "WARNING")
    env.pop("MLFLOW_TRACKING_URI", None)
    for key, value in settings.items():
        env[f"STREAMFLOW_{key.upper()}"] = str(value)
    return env


def run_cli(
    args: Sequence[str], home: Path, timeout: float = CLI_TIMEOUT, **settings: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamflow", *args],
        env=cli_env(home, **settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@dataclass
class Spawned:
    proc: subprocess.Popen[str]
    stderr_seen: list[str]
    scanned: int = 0  # characters of stderr_seen already searched for a marker

    def wait_for_marker(self, marker: str, timeout: float = CLI_TIMEOUT) -> None:
        """Read stderr until ``marker`` appears (the fault point was reached).

        Reads the pipe's file descriptor itself: a buffered ``readline()`` after ``select()`` can
        pull the marker into Python's buffer together with an earlier line, where ``select()``
        never reports it again (the wait then lasts until the paused process writes more)."""
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        deadline = time.monotonic() + timeout
        while True:
            seen = "".join(self.stderr_seen)
            found = seen.find(marker, self.scanned)
            if found >= 0:
                self.scanned = found + len(marker)
                return
            self.scanned = max(0, len(seen) - len(marker))
            if time.monotonic() >= deadline:
                raise AssertionError(f"{marker!r} not seen in {timeout} s:\n{seen}")
            ready, _, _ = select.select([fd], [], [], 1.0)
            chunk = os.read(fd, 65536) if ready else b""
            if chunk:
                self.stderr_seen.append(decoder.decode(chunk))
            elif self.proc.poll() is not None and not ready:
                raise AssertionError(f"process exited ({self.proc.returncode}) before {marker!r}:\n{seen}")
            elif ready:  # end of file: the process closed stderr (it is exiting)
                self.proc.wait(timeout=30)
                raise AssertionError(f"process exited ({self.proc.returncode}) before {marker!r}:\n{seen}")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def finish(self, timeout: float = CLI_TIMEOUT) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, "".join(self.stderr_seen) + err


def spawn_cli(args: Sequence[str], home: Path, **settings: object) -> Spawned:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamflow", *args],
        env=cli_env(home, **settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    return Spawned(proc=proc, stderr_seen=[])


def assert_clean_failure(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """Exit ``code``, every needle in the message, no traceback."""
    text = proc.stdout + proc.stderr
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}:\n{text}"
    assert "Traceback" not in text, text
    flat = " ".join(text.split())  # the console wraps long lines
    for needle in needles:
        assert needle in flat, f"{needle!r} not in:\n{text}"


def status_json(home: Path) -> dict[str, object]:
    proc = run_cli(["status", "--json"], home)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


# ---- database helpers ------------------------------------------------------------------------
def table_checksums(settings: Settings, *, exclude: Sequence[str] = ()) -> dict[str, str]:
    """md5 over every row (as text, sorted) of every table of the public schema (leaf tables:
    partitions hold the rows of their partitioned parent): "byte-for-byte unchanged", checkable."""
    with psycopg.connect(libpq_url(settings)) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY c.relname"
            ).fetchall()
        ]
        out = {}
        for name in names:
            if name in exclude:
                continue
            row = conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM \"{name}\" x"
            ).fetchone()
            out[name] = f"{row[0]}:{row[1]}" if row else ""
        return out


def data_checksums(settings: Settings) -> dict[str, str]:
    """Checksums of the data tables only — live tables, snapshot partitions and the online store —
    not Feast's registry nor the ingestion / materialization logs (a successful run appends to those)."""
    snapshots = tuple(t.snapshot_table for t in SOURCE_TABLES if t.snapshot_table)
    live = {t.name for t in SOURCE_TABLES}
    return {
        k: v
        for k, v in table_checksums(settings).items()
        if k in live or k.startswith(snapshots) or k.startswith(f"{settings.feast_project}_")
    }


def online_checksums(settings: Settings) -> dict[str, str]:
    return {k: v for k, v in table_checksums(settings).items() if k.startswith(f"{settings.feast_project}_")}


# ---- the month fixture -----------------------------------------------------------------------
@dataclass
class FaultHome:
    settings: Settings
    seeds: Path

    @property
    def home(self) -> Path:
        return self.settings.home

    def month(self, index: int) -> Path:
        return self.seeds / f"month_{index:03d}"


def make_home(tmp_path: Path, seeds: Path, months: int = 2) -> Iterator[FaultHome]:
    """A home with months 0..months-1 ingested and published (in-process: this process keeps
    the embedded PostgreSQL up for the subprocesses)."""
    setup_logging("WARNING")
    settings = Settings(home=tmp_path / "home")  # type: ignore[call-arg]
    fh = FaultHome(settings=settings, seeds=seeds)
    try:
        for i in range(months):
            ingest_and_publish(fh.month(i), as_of(i), settings)
        yield fh
    finally:
        release_embedded(settings)


def rows(settings: Settings, query: str, params: Mapping[str, object] | None = None) -> list[tuple[object, ...]]:
    with psycopg.connect(libpq_url(settings)) as conn:
        return conn.execute(query, params or {}).fetchall()  # type: ignore[arg-type]
