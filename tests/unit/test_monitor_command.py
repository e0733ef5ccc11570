"""The monitor command's input handling, output helpers and the course entry point, without
any service (the flow itself runs in tests/integration/test_monitor_flow.py)."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

os.environ.setdefault("PREFECT_HOME", str(Path(tempfile.gettempdir()) / f"streamflow-test-prefect-{os.getuid()}"))

import pytest

from streamflow.features.dataset import EmptySnapshotError
from streamflow.flows import monitor as m
from streamflow.monitoring.drift import DriftInputError
from streamflow.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("ref", "cur", "threshold", "needle"),
    [
        ("2024-02-30", "2024-02-29", None, "--ref must be a date YYYY-MM-DD, got '2024-02-30'"),
        ("2024-01-31", "yesterday", None, "--cur must be a date YYYY-MM-DD, got 'yesterday'"),
        ("2024-01-31", "2024-02-29", 1.5, "drift threshold must be in [0, 1], got 1.5"),
        ("2024-01-31", "2024-02-29", float("nan"), "drift threshold must be in [0, 1]"),
    ],
)
def test_bad_input_exits_2_before_touching_anything(
    settings: Settings, capsys: pytest.CaptureFixture[str], ref: str, cur: str, threshold: float | None, needle: str
) -> None:
    assert m.monitor_command(ref, cur, threshold, False, False, settings) == m.EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and needle in err and "Traceback" not in err
    assert not settings.home.exists()  # no database started, nothing written


def test_threshold_defaults_to_settings(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, drift_threshold=0.2)  # type: ignore[call-arg]
    assert m.resolve_threshold(None, s) == 0.2
    assert m.resolve_threshold(0.05, s) == 0.05
    assert m.resolve_threshold(0, s) == 0.0
    with pytest.raises(m.MonitorInputError):
        m.resolve_threshold(-0.1, s)


def test_normalize_as_of() -> None:
    assert m.normalize_as_of(" 2024-02-29 ", "x") == "2024-02-29"
    with pytest.raises(m.MonitorInputError, match="as_of_ref must be a date"):
        m.normalize_as_of("2023-02-29", "as_of_ref")


def test_simulated_lines_say_so_and_how_to_retrain() -> None:
    lines = m.simulated_retrain_lines("2024-01-31", "2024-02-29", 1 / 14, 0.05)
    assert "SIMULATED" in lines[0] and "drift_share=0.07 >= 0.05" in lines[0]
    assert "streamflow monitor --ref 2024-01-31 --cur 2024-02-29 --threshold 0.05 --retrain" in lines[1]


@pytest.mark.parametrize(
    ("exc", "stripped"),
    [
        (EmptySnapshotError("no snapshot found for as_of=2023-12-31"), True),
        (DriftInputError("cannot compare drift inputs: ..."), True),
        (m.MonitorInputError("bad date"), True),
        (RuntimeError("a real bug"), False),
    ],
)
def test_prefect_failure_logs_keep_tracebacks_only_for_bugs(exc: Exception, stripped: bool) -> None:
    try:
        raise exc
    except Exception:
        record = logging.LogRecord(
            "prefect.task_runs", logging.ERROR, __file__, 1, "failed: %r", (exc,), sys.exc_info()
        )
    assert m._StripExpectedTracebacks().filter(record)
    assert (record.exc_info is None) is stripped
    assert repr(exc) in record.getMessage()


def test_filters_installed_once() -> None:
    m._quiet_expected_errors()
    m._quiet_expected_errors()
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        filters = [f for f in logging.getLogger(name).filters if isinstance(f, m._StripExpectedTracebacks)]
        assert len(filters) == 1


def test_using_settings_is_scoped(settings: Settings) -> None:
    before = m.current_settings()
    with m.using_settings(settings):
        assert m.current_settings() is settings
    assert m.current_settings() is before


def test_json_safe() -> None:
    assert m._json_safe({"a": float("nan"), "b": [1.0, Path("/x")], "c": (float("inf"),)}) == {
        "a": None,
        "b": [1.0, "/x"],
        "c": [None],
    }


def _entry() -> ModuleType:
    path = REPO / "services" / "prefect" / "monitor_flow.py"
    spec = importlib.util.spec_from_file_location("course_monitor_flow", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_course_entry_point_arguments() -> None:
    entry = _entry()
    args = entry.parse_args([])
    assert (args.ref, args.cur, args.threshold, args.retrain, args.json) == (
        "2024-01-31",
        "2024-02-29",
        None,
        False,
        False,
    )
    args = entry.parse_args(
        ["--ref", "2024-02-29", "--cur", "2024-03-31", "--threshold", "0.05", "--retrain", "--json"]
    )
    assert (args.ref, args.cur, args.threshold, args.retrain, args.json) == (
        "2024-02-29",
        "2024-03-31",
        0.05,
        True,
        True,
    )
    assert (entry.AS_OF_REF_DEFAULT, entry.AS_OF_CUR_DEFAULT) == (m.AS_OF_REF_DEFAULT, m.AS_OF_CUR_DEFAULT)


def test_course_entry_point_bad_input(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAMFLOW_HOME", str(tmp_path / "home"))
    from streamflow.settings import get_settings

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    get_settings.cache_clear()
    try:
        assert _entry().main(["--ref", "not-a-date"]) == m.EXIT_BAD_INPUT
    finally:
        get_settings.cache_clear()
        root.handlers[:] = handlers  # main() configures logging for the whole process
        root.setLevel(level)
