"""Named fault points: a test-only hook that makes a process stop at a known place so a
fault test can kill it there deterministically (``kill -9`` during COPY, between the ingest
commit and the materialization, in the middle of a materialization).

With ``STREAMFLOW_FAULT_PAUSE_AT=<name>`` the process prints ``FAULT_PAUSE <name> pid=<pid>``
on stderr when it reaches that point and sleeps ``STREAMFLOW_FAULT_PAUSE_SECONDS``, then goes
on — or, with ``STREAMFLOW_FAULT_RELEASE_FILE=<path>``, until that file exists (at most the same
number of seconds), so that a test can hold several processes at the same point and release them
together. Unset (the default) it is a no-op. A leaf module (settings only)."""

from __future__ import annotations

import logging
import os
import sys
import time

from streamflow.core.settings import Settings

log = logging.getLogger(__name__)

FAULT_POINTS = (
    "during_copy",  # ingest: inside the transaction, after the first file was copied
    "before_commit",  # ingest: everything written, not committed yet
    "after_commit",  # ingest committed, the online store not materialized yet
    "during_materialize",  # materialization: new online tables half filled, not swapped in
    "before_swap",  # materialization: new online tables complete, not swapped in
    "during_feature_reload",  # API: the mirror's bulk-read connection is open, the read not started
    "before_promote",  # retraining: candidate trained and compared, production read, not promoted yet
)


def fault_point(name: str, settings: Settings) -> None:
    """Pause here if the settings ask for it (tests only)."""
    if settings.fault_pause_at != name:
        return
    print(f"FAULT_PAUSE {name} pid={os.getpid()}", file=sys.stderr, flush=True)
    log.warning("event=fault_pause point=%s seconds=%s", name, settings.fault_pause_seconds)
    release = settings.fault_release_file
    if release is None:
        time.sleep(settings.fault_pause_seconds)
        return
    deadline = time.monotonic() + settings.fault_pause_seconds
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
