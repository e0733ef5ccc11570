"""The monitor command's input handling, output helpers and the course entry point, without
any service (the monitor itself runs in tests/integration/test_monitor_flow.py)."""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

from streamflow.app.cli import app
from streamflow.core.dates import DEMO_CUR_AS_OF, DEMO_REF_AS_OF
from streamflow.core.errors import ExitCode
from streamflow.core.settings import Settings
from streamflow.features.dataset import EmptySnapshotError
from streamflow.monitoring import monitor as m
from streamflow.monitoring.drift import DriftInputError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    monkeypatch.setenv("STREAMFLOW_HOME", str(home))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield home
    root.handlers[:] = handlers  # the CLI configures logging for the whole process
    root.setLevel(level)


@pytest.mark.parametrize(
    ("ref", "cur", "threshold", "needle"),
    [
        ("2024-02-30", "2024-02-29", None, "--ref must be a date YYYY-MM-DD, got '2024-02-30'"),
        ("2024-01-31", "yesterday", None, "--cur must be a date YYYY-MM-DD, got 'yesterday'"),
        ("2024-01-31", "2024-02-29", "1.5", "drift threshold must be in [0, 1], got 1.5"),
        ("2024-01-31", "2024-02-29", "nan", "drift threshold must be in [0, 1]"),
    ],
)
def test_bad_input_exits_2_before_touching_anything(
    home: Path, ref: str, cur: str, threshold: str | None, needle: str
) -> None:
    args = ["monitor", "--ref", ref, "--cur", cur] + (["--threshold", threshold] if threshold else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == ExitCode.BAD_INPUT
    assert result.stdout == ""
    err = result.stderr
    assert len(err.splitlines()) == 1  # one line, never wrapped
    assert err.startswith("error: ") and needle in err and "Traceback" not in err
    assert not home.exists()  # no database started, nothing written


def test_unknown_orchestrator_is_bad_input(home: Path) -> None:
    result = CliRunner().invoke(app, ["monitor", "--orchestrator", "airflow"])
    assert result.exit_code == ExitCode.BAD_INPUT
    assert "--orchestrator must be auto, prefect or none, got 'airflow'" in result.stderr


def test_threshold_defaults_to_settings(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, drift_threshold=0.2)
    assert m.resolve_threshold(None, s) == 0.2
    assert m.resolve_threshold(0.05, s) == 0.05
    assert m.resolve_threshold(0, s) == 0.0
    with pytest.raises(m.MonitorInputError):
        m.resolve_threshold(-0.1, s)


def test_request_resolves_every_default_from_settings(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, drift_threshold=0.2, promote_min_delta=0.01, pushgateway_url="http://gw:9091")
    r = m.MonitorRequest.build(s, as_of_ref=" 2024-01-31", as_of_cur="2024-02-29")
    assert (r.as_of_ref, r.as_of_cur, r.threshold, r.min_delta, r.retrain) == (
        "2024-01-31",
        "2024-02-29",
        0.2,
        0.01,
        False,
    )
    assert r.report_dir == s.evidently_dir and r.pushgateway_url == "http://gw:9091"
    assert (r.min_auc, r.max_auc_drop) == (0.70, 0.05)  # the policy's defaults
    strict_settings = s.model_copy(update={"min_auc": 0.8, "max_auc_drop": 0.02})
    strict = m.MonitorRequest.build(strict_settings, as_of_ref=DEMO_REF_AS_OF, as_of_cur=DEMO_CUR_AS_OF)
    assert (strict.policy.min_auc, strict.policy.max_auc_drop) == (0.8, 0.02)
    with pytest.raises(m.MonitorInputError, match="min_delta must be a finite number >= 0"):
        m.MonitorRequest.build(s, as_of_ref=DEMO_REF_AS_OF, as_of_cur=DEMO_CUR_AS_OF, min_delta=-1)


def test_normalize_as_of() -> None:
    assert m.normalize_as_of(" 2024-02-29 ", "x") == "2024-02-29"
    with pytest.raises(m.MonitorInputError, match="as_of_ref must be a date"):
        m.normalize_as_of("2023-02-29", "as_of_ref")


def test_simulated_lines_say_so_and_how_to_retrain() -> None:
    lines = m.simulated_retrain_lines("2024-01-31", "2024-02-29", 1 / 14, 0.05)
    assert "SIMULATED" in lines[0] and "drift_share=0.07 >= 0.05 triggers retraining" in lines[0]
    assert "streamflow monitor --ref 2024-01-31 --cur 2024-02-29 --threshold 0.05 --retrain" in lines[1]
    perf = m.simulated_retrain_lines("2024-01-31", "2024-02-29", 1 / 14, 0.3, ["realized AUC 0.4840 < min_auc 0.70"])
    assert perf[0].startswith("[Retrain] SIMULATED (as in the course): realized AUC 0.4840 < min_auc 0.70 triggers")
    both = m.simulated_retrain_lines("2024-01-31", "2024-02-29", 0.5, 0.3, ["realized AUC 0.4840 < min_auc 0.70"])
    assert "drift_share=0.50 >= 0.30 and realized AUC 0.4840 < min_auc 0.70 triggers" in both[0]


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
    from streamflow.flows import prefect_environment

    prefect_environment(Settings(home=REPO / ".streamflow"))
    from streamflow.flows import monitor as flow_mod

    try:
        raise exc
    except Exception:
        record = logging.LogRecord(
            "prefect.task_runs", logging.ERROR, __file__, 1, "failed: %r", (exc,), sys.exc_info()
        )
    assert flow_mod._StripInputErrorTracebacks().filter(record)
    assert (record.exc_info is None) is stripped
    assert repr(exc) in record.getMessage()
    flow_mod.quiet_input_error_tracebacks()
    flow_mod.quiet_input_error_tracebacks()
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        filters = [f for f in logging.getLogger(name).filters if isinstance(f, flow_mod._StripInputErrorTracebacks)]
        assert len(filters) == 1


def test_json_safe() -> None:
    assert m.json_safe({"a": float("nan"), "b": [1.0, Path("/x")], "c": (float("inf"),)}) == {
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
    assert entry.cli_arguments(args) == ["monitor", "--ref", "2024-01-31", "--cur", "2024-02-29"]
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
    assert entry.cli_arguments(args) == [
        *("monitor", "--ref", "2024-02-29", "--cur", "2024-03-31", "--threshold", "0.05", "--retrain", "--json")
    ]


def test_course_entry_point_bad_input(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _entry().main(["--ref", "not-a-date"]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert "error: --ref must be a date YYYY-MM-DD, got 'not-a-date'" in err and "Traceback" not in err
    assert not home.exists()
