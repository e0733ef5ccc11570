"""Crashes and races of the monthly data path, through the real CLI: ``kill -9`` at a named
fault point (the process pauses there, see ``streamflow.core.faults``), two ingests at once. Each
case asserts what a user sees (exit codes, messages, ``streamflow status --json``) and what
is kept (table checksums), and that the next ``streamflow materialize`` heals a stale store."""

from __future__ import annotations

import pytest

from tests.helpers.faults import (
    FaultHome,
    as_of,
    assert_clean_failure,
    data_checksums,
    online_checksums,
    rows,
    run_cli,
    spawn_cli,
    status_json,
    table_checksums,
)

pytestmark = pytest.mark.integration

PAUSE = {"fault_pause_seconds": 600}
LEFT = "%\\_\\_sf\\_new"  # tables of an unfinished materialization


def _ingest_args(fh: FaultHome, index: int) -> list[str]:
    return ["ingest", str(fh.month(index)), "--as-of", as_of(index), "--no-progress"]


def _online(fh: FaultHome) -> dict[str, object]:
    online = status_json(fh.home)["online_store"]
    assert isinstance(online, dict)
    return online


def _leftover_tables(fh: FaultHome) -> list[str]:
    query = "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE %(p)s"
    return [str(r[0]) for r in rows(fh.settings, query, {"p": LEFT})]


def test_kill_during_copy_writes_nothing_and_releases_the_lock(fresh_home: FaultHome) -> None:
    fh = fresh_home
    status_before = status_json(fh.home)
    before = table_checksums(fh.settings)
    ingest = spawn_cli(_ingest_args(fh, 2), fh.home, fault_pause_at="during_copy", **PAUSE)
    ingest.wait_for_marker("FAULT_PAUSE during_copy")
    ingest.kill9()
    assert table_checksums(fh.settings) == before
    assert status_json(fh.home) == status_before
    # the lock died with the connection: the next ingest does not wait for it
    proc = run_cli(_ingest_args(fh, 2), fh.home, ingest_lock_timeout_seconds=30)
    assert proc.returncode == 0, proc.stderr
    online = _online(fh)
    assert online["as_of"] == as_of(2) and online["stale"] is False


def test_kill_between_commit_and_materialization_is_marked_stale_and_healed(fresh_home: FaultHome) -> None:
    fh = fresh_home
    online_before = online_checksums(fh.settings)
    ingest = spawn_cli(_ingest_args(fh, 2), fh.home, fault_pause_at="after_commit", **PAUSE)
    ingest.wait_for_marker("FAULT_PAUSE after_commit")
    ingest.kill9()
    st = status_json(fh.home)
    assert [s["as_of"] for s in st["snapshots"]] == [as_of(0), as_of(1), as_of(2)]  # type: ignore[index,union-attr]
    online = st["online_store"]
    assert isinstance(online, dict)
    assert online["stale"] is True and online["as_of"] == as_of(1)
    assert as_of(2) in str(online["reason"]) and "streamflow materialize" in str(online["reason"])
    assert online_checksums(fh.settings) == online_before  # still the previous month, whole
    healed = run_cli(["materialize", "--no-progress"], fh.home)
    assert healed.returncode == 0 and "Traceback" not in healed.stderr, healed.stderr
    online = _online(fh)
    assert online["stale"] is False and online["as_of"] == as_of(2) and online["reason"] is None
    assert online_checksums(fh.settings) != online_before


def test_flows_heal_a_stale_online_store_by_themselves(fresh_home: FaultHome) -> None:
    """What the Prefect ingest flow and the monthly schedule run first: publish_if_stale."""
    from streamflow.app.monthly import publish_if_stale

    fh = fresh_home
    ingest = spawn_cli(_ingest_args(fh, 2), fh.home, fault_pause_at="after_commit", **PAUSE)
    ingest.wait_for_marker("FAULT_PAUSE after_commit")
    ingest.kill9()
    assert _online(fh)["stale"] is True
    healed = publish_if_stale(fh.settings)
    assert healed is not None and str(healed.as_of) == as_of(2)
    assert publish_if_stale(fh.settings) is None  # fresh now: nothing to do
    online = _online(fh)
    assert online["stale"] is False and online["as_of"] == as_of(2)


def test_kill_during_materialization_keeps_the_previous_month_whole(fresh_home: FaultHome) -> None:
    fh = fresh_home
    online_before = online_checksums(fh.settings)
    ingest = spawn_cli(_ingest_args(fh, 2), fh.home, fault_pause_at="during_materialize", **PAUSE)
    ingest.wait_for_marker("FAULT_PAUSE during_materialize")
    ingest.kill9()
    # readers see the previous month, all of it (the new tables were never swapped in)
    assert online_checksums(fh.settings) == online_before
    online = _online(fh)
    assert online["stale"] is True and online["as_of"] == as_of(1)
    healed = run_cli(["materialize", "--no-progress"], fh.home)
    assert healed.returncode == 0, healed.stderr
    assert _online(fh)["as_of"] == as_of(2)
    assert _leftover_tables(fh) == []  # the half-built tables of the killed run were dropped


def test_same_month_twice_waits_then_is_idempotent(fresh_home: FaultHome) -> None:
    fh = fresh_home
    first = spawn_cli(_ingest_args(fh, 2), fh.home, fault_pause_at="before_commit", fault_pause_seconds=8)
    first.wait_for_marker("FAULT_PAUSE before_commit")
    second = run_cli(_ingest_args(fh, 2), fh.home, ingest_lock_timeout_seconds=120)
    code, _, err = first.finish()
    assert code == 0, err
    assert second.returncode == 0, second.stderr
    after_both = data_checksums(fh.settings)
    again = run_cli(_ingest_args(fh, 2), fh.home)
    assert again.returncode == 0, again.stderr
    assert data_checksums(fh.settings) == after_both
    assert [
        r[0] for r in rows(fh.settings, "SELECT count(*) FROM ingestions WHERE as_of = %(d)s", {"d": as_of(2)})
    ] == [3]


def test_second_ingest_gives_up_clearly_after_the_lock_timeout(fresh_home: FaultHome) -> None:
    fh = fresh_home
    before = table_checksums(fh.settings)
    first = spawn_cli(_ingest_args(fh, 2), fh.home, fault_pause_at="before_commit", **PAUSE)
    first.wait_for_marker("FAULT_PAUSE before_commit")
    try:
        second = run_cli(_ingest_args(fh, 3), fh.home, ingest_lock_timeout_seconds=2)
        assert_clean_failure(second, 2, "another ingest", "month_002", as_of(2), "is running", "waiting 2 s")
    finally:
        first.kill9()
    assert table_checksums(fh.settings) == before


def test_older_month_committed_last_keeps_the_newer_live_rows(fresh_home: FaultHome) -> None:
    """Two months at once: month 3 commits first, month 2 waits for the lock and commits after it.
    Snapshots hold both; live tables (and the online store) hold the newest month, 3."""
    fh = fresh_home
    newer = spawn_cli(_ingest_args(fh, 3), fh.home, fault_pause_at="before_commit", fault_pause_seconds=8)
    newer.wait_for_marker("FAULT_PAUSE before_commit")
    older = run_cli(_ingest_args(fh, 2), fh.home, ingest_lock_timeout_seconds=120)
    code, _, err = newer.finish()
    assert code == 0, err
    assert older.returncode == 0, older.stderr
    assert "Traceback" not in older.stderr + err
    live = rows(fh.settings, "SELECT DISTINCT as_of::text FROM subscriptions")
    assert live == [(as_of(3),)]
    st = status_json(fh.home)
    assert [s["as_of"] for s in st["snapshots"]] == [as_of(i) for i in range(4)]  # type: ignore[index,union-attr]
    online = st["online_store"]
    assert isinstance(online, dict) and online["as_of"] == as_of(3) and online["stale"] is False
    # the online store serves month 3's values (decoded as the API decodes them), not the last committed month's
    from streamflow.serving.features import FeatureMirror

    online_values = FeatureMirror(fh.settings).read_online_direct().set_index("user_id")["watch_hours_30d"]
    query = "SELECT user_id, watch_hours_30d FROM usage_agg_30d_snapshots WHERE as_of::date = %(d)s::date"
    month3 = dict(rows(fh.settings, query, {"d": as_of(3)}))
    assert len(online_values) == len(month3) == 300
    assert all(online_values[u] == v for u, v in month3.items())
