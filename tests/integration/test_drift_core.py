"""Drift core on the real course CSVs (month_000 vs month_001), plus a push to a real Pushgateway.

The frames are built here exactly as ``build_point_in_time_dataset`` returns them; the course
data is read in place (STREAMFLOW_COURSE_SEEDS overrides the location) and never copied.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamflow.core.data_model import ENTITY, FEATURE_DTYPES, FEATURES, FLAG_FEATURES, LABEL, TIMESTAMP
from streamflow.monitoring.decision import Decision, format_decision_line
from streamflow.monitoring.drift import (
    DriftInputError,
    DriftReportError,
    DriftResult,
    compute_target_drift,
    extract_drifted_columns,
    run_drift_report,
    validate_frames,
)
from streamflow.monitoring.metrics_push import JOB, METRIC_NAMES, drift_metrics_registry, push_drift_metrics
from tests.helpers.course import COURSE_SEEDS

AS_OF = {"month_000": "2024-01-31", "month_001": "2024-02-29"}
REF, CUR = AS_OF["month_000"], AS_OF["month_001"]
PUSHGATEWAY_BIN = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")

pytestmark = pytest.mark.usefixtures("course_seeds")  # fails (never skips) when the course data is missing

_BOOL = {True: 1.0, False: 0.0, "True": 1.0, "False": 0.0, "true": 1.0, "false": 0.0}


def course_frame(month: str) -> pd.DataFrame:
    """The point-in-time frame of one course month: user_id, event_timestamp, FEATURES, churn_label."""
    d = COURSE_SEEDS / month
    df = pd.read_csv(d / "subscriptions.csv")
    for name in ("usage_agg_30d", "payments_agg_90d", "support_agg_90d", "labels"):
        df = df.merge(pd.read_csv(d / f"{name}.csv"), on=ENTITY, how="inner", validate="one_to_one")
    for col in FLAG_FEATURES:
        df[col] = df[col].map(_BOOL).astype("float64")
    df = df.astype(FEATURE_DTYPES)
    df[LABEL] = df[LABEL].map(_BOOL).astype("int64")
    df[TIMESTAMP] = pd.Timestamp(AS_OF[month])
    return df[[ENTITY, TIMESTAMP, *FEATURES, LABEL]].reset_index(drop=True)


@pytest.fixture(scope="module")
def ref_df() -> pd.DataFrame:
    return course_frame("month_000")


@pytest.fixture(scope="module")
def cur_df() -> pd.DataFrame:
    return course_frame("month_001")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("evidently")


@pytest.fixture(scope="module")
def result(ref_df: pd.DataFrame, cur_df: pd.DataFrame, report_dir: Path) -> DriftResult:
    t0 = time.perf_counter()
    res = run_drift_report(ref_df, cur_df, REF, CUR, threshold=0.3, report_dir=report_dir)
    print(f"\n[timing] run_drift_report on {len(ref_df)} vs {len(cur_df)} rows: {time.perf_counter() - t0:.2f}s")
    return res


# ---- the frames themselves ----------------------------------------------------------
def test_course_frame_matches_the_dataset_contract(ref_df: pd.DataFrame, cur_df: pd.DataFrame) -> None:
    for df in (ref_df, cur_df):
        assert len(df) == 7043
        assert list(df.columns) == [ENTITY, TIMESTAMP, *FEATURES, LABEL]
        assert {c: str(df[c].dtype) for c in FEATURES} == FEATURE_DTYPES
        assert str(df[LABEL].dtype) == "int64"
        assert df[ENTITY].is_unique
    assert ref_df["plan_stream_tv"].isna().any()  # nullable flags survive as NaN


# ---- numbers --------------------------------------------------------------------------
def test_target_drift(ref_df: pd.DataFrame, cur_df: pd.DataFrame) -> None:
    t = compute_target_drift(ref_df, cur_df)
    assert t.ref_rate == pytest.approx(0.2654, abs=1e-4)
    assert t.cur_rate == pytest.approx(0.2415, abs=1e-4)
    assert t.abs_diff == pytest.approx(0.0239, abs=1e-4)


def test_drift_share_over_the_14_features(result: DriftResult) -> None:
    assert result.drift_share == pytest.approx(1 / 14)
    assert result.drifted_count == 1
    assert [f.feature for f in result.drifted_features] == ["rebuffer_events_7d"]
    assert [f.feature for f in result.feature_drifts] == FEATURES  # churn_label / user_id not counted
    drifted = result.drifted_features[0]
    assert drifted.score > drifted.threshold
    assert result.target_drift == pytest.approx(0.0239, abs=1e-4)
    assert 0.0 <= result.target_value_drift < 0.1  # ValueDrift(churn_label): no drift
    assert (result.n_ref, result.n_cur) == (7043, 7043)


def test_decision_at_0_3(result: DriftResult) -> None:
    assert result.decision is Decision.NO_ACTION
    line = format_decision_line(result)
    assert line == (
        f"[Evidently] report_html={result.report_html} report_json={result.report_json} drift_share=0.07 -> "
        "NO_ACTION drift_share=0.07 < 0.30 (target_drift=0.0239)"
    )


def test_decision_at_0_05(ref_df: pd.DataFrame, cur_df: pd.DataFrame, tmp_path: Path) -> None:
    res = run_drift_report(ref_df, cur_df, REF, CUR, threshold=0.05, report_dir=tmp_path)
    assert res.decision is Decision.RETRAINING_TRIGGERED
    assert res.drift_share == pytest.approx(1 / 14)
    assert format_decision_line(res).endswith("RETRAINING_TRIGGERED drift_share=0.07 >= 0.05 (target_drift=0.0239)")
    assert json.loads(res.summary_json.read_text())["decision"] == "RETRAINING_TRIGGERED"


def test_month_against_itself(ref_df: pd.DataFrame, tmp_path: Path) -> None:
    res = run_drift_report(ref_df, ref_df.copy(), REF, REF, threshold=0.3, report_dir=tmp_path)
    assert res.drift_share == 0.0
    assert res.drifted_count == 0
    assert res.target_drift == 0.0
    assert res.decision is Decision.NO_ACTION
    assert res.report_html.name == f"drift_{REF}_vs_{REF}.html"


def test_small_sample_p_value_methods(ref_df: pd.DataFrame, cur_df: pd.DataFrame, tmp_path: Path) -> None:
    """Below 1000 rows Evidently switches to p-value tests (drift when the score is LOW): the
    per-feature verdicts must still agree with DriftedColumnsCount (checked inside run_drift_report)."""
    ref = ref_df.sample(800, random_state=1)
    cur = cur_df.sample(800, random_state=2)
    cur = cur.assign(watch_hours_30d=cur["watch_hours_30d"] * 2, net_service="DSL")
    res = run_drift_report(ref, cur, REF, CUR, threshold=0.1, report_dir=tmp_path)
    by_name = {f.feature: f for f in res.feature_drifts}
    assert by_name["watch_hours_30d"].method == "K-S p_value"
    assert by_name["watch_hours_30d"].drifted and by_name["watch_hours_30d"].score < 0.05
    assert by_name["net_service"].drifted
    assert not by_name["months_active"].drifted and by_name["months_active"].score > 0.05
    assert res.drifted_count == len(res.drifted_features) >= 2
    assert res.drift_share == pytest.approx(res.drifted_count / 14)
    assert res.decision is Decision.RETRAINING_TRIGGERED


# ---- artifacts ------------------------------------------------------------------------
def test_report_files(result: DriftResult, report_dir: Path) -> None:
    stem = f"drift_{REF}_vs_{CUR}"
    assert result.report_html == report_dir / f"{stem}.html"
    assert result.report_json == report_dir / f"{stem}.json"
    assert result.summary_json == report_dir / f"{stem}.summary.json"
    assert "<html" in result.report_html.read_text(encoding="utf-8").lower()
    evidently_json = json.loads(result.report_json.read_text(encoding="utf-8"))
    assert any(
        "DriftedColumnsCount" in (m.get("metric_name") or m.get("metric_id") or "") for m in evidently_json["metrics"]
    )
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in report_dir.iterdir()) == sorted(
        [f"{stem}.html", f"{stem}.json", f"{stem}.summary.json"]
    )


def test_summary_json(result: DriftResult) -> None:
    s = json.loads(result.summary_json.read_text(encoding="utf-8"))
    required = {
        "as_of_ref", "as_of_cur", "drift_share", "drifted_count", "drifted_features", "feature_scores",
        "target_drift", "target_ref_rate", "target_cur_rate", "target_value_drift", "decision", "threshold",
        "report_html", "report_json", "n_ref", "n_cur", "generated_at",
    }  # fmt: skip
    assert required <= s.keys()
    assert (s["as_of_ref"], s["as_of_cur"]) == (REF, CUR)
    assert s["drift_share"] == pytest.approx(1 / 14)
    assert s["drifted_count"] == 1
    assert [d["feature"] for d in s["drifted_features"]] == ["rebuffer_events_7d"]
    assert set(s["drifted_features"][0]) >= {"feature", "method", "score", "threshold"}
    assert [f["feature"] for f in s["feature_scores"]] == FEATURES
    assert s["target_drift"] == pytest.approx(0.0239, abs=1e-4)
    assert s["target_ref_rate"] == pytest.approx(0.2654, abs=1e-4)
    assert s["target_cur_rate"] == pytest.approx(0.2415, abs=1e-4)
    assert s["decision"] == "NO_ACTION"
    assert s["threshold"] == 0.3
    assert Path(s["report_html"]).is_file() and Path(s["report_json"]).is_file()
    assert (s["n_ref"], s["n_cur"]) == (7043, 7043)
    pd.Timestamp(s["generated_at"])  # parses


# ---- input validation -----------------------------------------------------------------
def test_missing_column(ref_df: pd.DataFrame, cur_df: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(DriftInputError, match="skips_7d") as exc:
        run_drift_report(ref_df, cur_df.drop(columns=["skips_7d"]), REF, CUR, 0.3, tmp_path)
    assert "missing" in str(exc.value) and CUR in str(exc.value)
    assert not any(tmp_path.iterdir())  # nothing written


def test_extra_column_on_one_side(ref_df: pd.DataFrame, cur_df: pd.DataFrame) -> None:
    with pytest.raises(DriftInputError, match=r"only in reference.*'contract_type'"):
        validate_frames(ref_df.assign(contract_type="x"), cur_df, REF, CUR)


def test_dtype_mismatch(ref_df: pd.DataFrame, cur_df: pd.DataFrame) -> None:
    bad = cur_df.assign(monthly_fee=cur_df["monthly_fee"].astype(str))
    with pytest.raises(DriftInputError, match=r"dtype mismatch for column 'monthly_fee'"):
        validate_frames(ref_df, bad, REF, CUR)


def test_flag_values_checked(ref_df: pd.DataFrame, cur_df: pd.DataFrame) -> None:
    with pytest.raises(DriftInputError, match="paperless_billing"):
        validate_frames(ref_df, cur_df.assign(paperless_billing=2.0), REF, CUR)


def test_empty_frame(ref_df: pd.DataFrame, cur_df: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(DriftInputError, match=rf"current frame for as_of={CUR} is empty"):
        run_drift_report(ref_df, cur_df.iloc[0:0], REF, CUR, 0.3, tmp_path)


def test_bad_as_of_and_threshold(ref_df: pd.DataFrame, cur_df: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(DriftInputError, match="as_of_cur"):
        validate_frames(ref_df, cur_df, REF, "2024-02-30")
    with pytest.raises(ValueError, match="threshold"):
        run_drift_report(ref_df, cur_df, REF, CUR, 1.5, tmp_path)


# ---- Prometheus -----------------------------------------------------------------------
def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _check_exposition(text: str, res: DriftResult, extra: dict[str, str]) -> None:
    samples = _samples(text)
    pair = {"as_of_ref": REF, "as_of_cur": CUR, **extra}

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset({**pair, **labels}.items()))]

    assert value("streamflow_drift_share") == pytest.approx(1 / 14)
    assert value("streamflow_drifted_features") == 1
    assert value("streamflow_target_drift") == pytest.approx(0.0239, abs=1e-4)
    assert value("streamflow_target_value_drift") == pytest.approx(res.target_value_drift)
    assert value("streamflow_drift_decision") == 0
    assert value("streamflow_drift_threshold") == 0.3
    assert value("streamflow_drift_last_run_timestamp_seconds") == pytest.approx(res.generated_at.timestamp())
    features = {dict(k[1])["feature"] for k in samples if k[0] == "streamflow_feature_drift_score"}
    assert features == set(FEATURES)
    assert value("streamflow_feature_drift_score", feature="rebuffer_events_7d") == pytest.approx(
        res.feature_scores["rebuffer_events_7d"]
    )


def test_registry_exposes_contract_metrics(result: DriftResult) -> None:
    from prometheus_client import generate_latest

    names = {f.name for f in drift_metrics_registry(result).collect()}
    assert names == set(METRIC_NAMES)
    contracts = Path(__file__).resolve().parents[2] / "docs" / "CONTRACTS.md"
    if contracts.is_file():
        text = contracts.read_text(encoding="utf-8")
        for name in METRIC_NAMES:
            assert f"| {name} |" in text
    _check_exposition(generate_latest(drift_metrics_registry(result)).decode(), result, {})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pushgateway(tmp_path: Path) -> Iterator[str]:
    if PUSHGATEWAY_BIN is None:
        pytest.fail("prometheus-pushgateway is not installed (Debian: apt-get install prometheus-pushgateway)")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "pushgateway.log").open("wb")
    proc = subprocess.Popen(
        [
            PUSHGATEWAY_BIN,
            f"--web.listen-address=127.0.0.1:{port}",
            f"--persistence.file={tmp_path / 'pushgateway.data'}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                pytest.fail(f"pushgateway exited with {proc.returncode}: {(tmp_path / 'pushgateway.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("pushgateway did not become ready in 15s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.mark.integration
def test_push_to_real_pushgateway(result: DriftResult, pushgateway: str) -> None:
    push_drift_metrics(result, pushgateway)
    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5) as r:
        text = r.read().decode()
    _check_exposition(text, result, {"job": JOB, "instance": ""})
    # grouping key is the job only: a second push (PUT) replaces the first pair's series
    push_drift_metrics(result, pushgateway.removeprefix("http://"))
    with urllib.request.urlopen(f"{pushgateway}/metrics", timeout=5) as r:
        again = _samples(r.read().decode())
    shares = [k for k in again if k[0] == "streamflow_drift_share"]
    assert len(shares) == 1


# ---- reading Evidently's output robustly ----------------------------------------------
def _drifted_columns_metric(key: str, share: float, count: float, with_type: bool) -> dict[str, object]:
    m: dict[str, object] = {
        "id": "x",
        key: "DriftedColumnsCount(drift_share=0.3)",
        "value": {"count": count, "share": share},
    }
    m["config"] = {"type": "evidently:metric_v2:DriftedColumnsCount"} if with_type else {}
    return m


@pytest.mark.parametrize("key", ["metric_name", "metric_id"])
@pytest.mark.parametrize("with_type", [True, False])
def test_extract_drifted_columns_key_variants(key: str, with_type: bool) -> None:
    summary = {"metrics": [_drifted_columns_metric(key, 2 / 14, 2.0, with_type)]}
    assert extract_drifted_columns(summary) == (pytest.approx(2 / 14), 2)


def test_extract_drifted_columns_never_defaults_to_zero() -> None:
    with pytest.raises(DriftReportError, match="DriftedColumnsCount"):
        extract_drifted_columns({"metrics": [{"metric_name": "ValueDrift(column=x)", "value": 0.1}]})
    with pytest.raises(DriftReportError, match="share/count"):
        extract_drifted_columns({"metrics": [{"metric_name": "DriftedColumnsCount()", "value": 0.5}]})
    # a preset that also counted churn_label: 1/15 is refused
    with pytest.raises(DriftReportError, match="14 features"):
        extract_drifted_columns({"metrics": [_drifted_columns_metric("metric_name", 1 / 15, 1.0, True)]})
