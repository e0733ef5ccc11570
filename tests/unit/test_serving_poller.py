"""PeriodicTask: runs at start, again on wake() (long before its interval), survives an
exception of its function, and stop() ends the thread."""

from __future__ import annotations

import threading

from streamflow.serving.poller import PeriodicTask

LONG = 3600.0  # an interval no test waits for
BOUND = 30.0  # upper bound for a thread to get scheduled (not a timing assertion)


def test_runs_at_start_and_on_wake_then_stops() -> None:
    calls: list[int] = []
    ran = threading.Semaphore(0)

    def fn() -> None:
        calls.append(len(calls))
        ran.release()

    task = PeriodicTask("test-poll", LONG, fn)
    task.start()
    try:
        assert ran.acquire(timeout=BOUND)
        task.wake()
        assert ran.acquire(timeout=BOUND)
        assert task.running
    finally:
        task.stop()
    assert not task.running
    assert calls == [0, 1]


def test_an_exception_does_not_end_the_loop() -> None:
    ran = threading.Semaphore(0)
    calls = 0

    def fn() -> None:
        nonlocal calls
        calls += 1
        ran.release()
        if calls == 1:
            raise RuntimeError("boom")

    task = PeriodicTask("test-poll", LONG, fn)
    task.start()
    try:
        assert ran.acquire(timeout=BOUND)
        task.wake()
        assert ran.acquire(timeout=BOUND)
    finally:
        task.stop()
    assert calls == 2


def test_stop_before_start_and_twice_is_harmless() -> None:
    task = PeriodicTask("test-poll", LONG, lambda: None)
    task.stop()
    task.start()
    task.stop()
    task.stop()
    assert not task.running
