"""One background poll loop: ``PeriodicTask(name, interval, fn)`` runs ``fn`` on a daemon
thread at once and then every ``interval`` seconds until :meth:`stop`; :meth:`wake` runs
it early. Used by the model holder (deployment records) and the feature mirror
(materializations)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicTask:
    def __init__(self, name: str, interval: float, fn: Callable[[], object], join_timeout: float = 10.0) -> None:
        self.name = name
        self.interval = interval
        self.fn = fn
        self.join_timeout = join_timeout
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stopping = False
        self._wake.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run ``fn`` now instead of at the end of the current interval."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the loop and wait (at most ``join_timeout``) for a running ``fn`` to finish."""
        self._stopping = True
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=self.join_timeout)

    def _run(self) -> None:
        while not self._stopping:
            try:
                self.fn()
            except Exception as exc:  # fn should not raise; the loop must survive it if it does
                log.error("event=poll_failed task=%s error=%r", self.name, exc, exc_info=exc)
            self._wake.wait(self.interval)
            self._wake.clear()
