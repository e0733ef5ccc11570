"""``monitor --engine spark`` on generated months with planted drift gives the single-machine
monitor's answer (issue 12, the second data set besides the course months in test_spark_monitor.py).

Two months of ``GEN_USERS`` users are generated (drift planted in month 1: watch hours x0.6, Fiber
optic share 0.7), ingested into a fresh embedded PostgreSQL home, a model is trained on month 0, and
both engines compare month 0 with month 1 (local: Feast/PostgreSQL; Spark: the generated CSVs, with
the shared local[2] session). ``spark_exact_max_values`` is lowered to ``EXACT_MAX`` so the
high-cardinality numeric columns (watch_hours_30d — a planted one —, avg_session_mins_7d,
monthly_fee and the prediction) are scored from bins, the rest from exact value counts.

Asserted: the same drifted set (containing the planted columns), drift share and decision; a binned
column's score within 0.01 of Evidently's (the binning approximation: normed Wasserstein from
``spark_drift_bins`` bin counts, docs/scale.md), an exact column's within 1e-9 (the identical
statistic); realized AUC and the other realized metrics within 1e-9."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from streamflow.app.monthly import ingest_and_publish
from streamflow.core.dates import month_as_of
from streamflow.db.engine import release_embedded
from streamflow.monitoring.monitor import MonitorRequest, run_monitor
from streamflow.seeds.drift import parse_drift_option
from streamflow.seeds.generator import generate_months
from streamflow.spark.monitor import SparkInputs, run_spark_monitor
from streamflow.training.train import train_model
from tests.helpers.stack import make_settings

pytestmark = pytest.mark.integration

REF, CUR = month_as_of(date(2024, 1, 31), 0), month_as_of(date(2024, 1, 31), 1)
PLANTED = "watch_hours_30d*0.6,net_service=Fiber optic:0.7@1"
PLANTED_COLUMNS = {"net_service", "watch_hours_30d"}
GEN_USERS = 10_000
GEN_SEED = 11
EXACT_MAX = 1_000  # below the ~9,800 distinct watch hours / session minutes, above months_active & co.
BINNED_TOL = 0.01  # the stated binning approximation
EXACT_TOL = 1e-9


@pytest.fixture(scope="module")
def planted_both(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("spark_planted")
    settings = make_settings(
        root / "home", n_estimators=40, spark_exact_max_values=EXACT_MAX, lake_path=str(root / "lake")
    )
    t0 = time.perf_counter()
    months = generate_months(root / "seeds", 2, GEN_USERS, GEN_SEED, drift=parse_drift_option(PLANTED))
    try:
        for i, month in enumerate(months):
            ingest_and_publish(month, month_as_of(date(2024, 1, 31), i), settings)
        trained = train_model(str(REF), settings, promote_if_first=True)
        assert trained.promoted
        t_stack = time.perf_counter() - t0
        out: dict[str, Any] = {}
        for engine in ("local", "spark"):
            s = settings.model_copy(update={"report_dir": root / engine, "pushgateway_url": None})
            request = MonitorRequest.build(s, as_of_ref=str(REF), as_of_cur=str(CUR), report_dir=root / engine)
            lines: list[str] = []
            t1 = time.perf_counter()
            if engine == "local":
                summary = run_monitor(request, s, emit=lines.append)
            else:
                summary = run_spark_monitor(request, SparkInputs(str(months[0]), str(months[1])), s, emit=lines.append)
            out[engine] = {"summary": summary, "lines": lines, "seconds": time.perf_counter() - t1}
        print(
            f"\n[timing] planted months (2 x {GEN_USERS} users) ingested + model: {t_stack:.1f}s; "
            f"local monitor {out['local']['seconds']:.1f}s; spark monitor {out['spark']['seconds']:.1f}s"
        )
        yield out
    finally:
        release_embedded(settings)


def _methods(summary: dict[str, Any]) -> dict[str, str]:
    """column -> "exact" | "binned", from the Spark engine's per-column scores file."""
    scores = json.loads(Path(summary["engine"]["scores_json"]).read_text())
    return {c["column"]: c["statistic"] for c in scores}


def test_planted_same_drift_answer(planted_both: dict[str, Any]) -> None:
    local, spark = planted_both["local"]["summary"], planted_both["spark"]["summary"]
    assert spark["engine"]["master"] == "local[2]"
    for key in ("n_ref", "n_cur", "n_features", "drifted_count", "target_value_drift_method", "drift_decision"):
        assert spark[key] == local[key], key
    drifted = [f["feature"] for f in spark["drifted_features"]]
    assert drifted == [f["feature"] for f in local["drifted_features"]]
    assert set(drifted) >= PLANTED_COLUMNS
    assert spark["drift_share"] == pytest.approx(local["drift_share"], abs=1e-12)

    statistic = _methods(spark)
    binned = {c for c, how in statistic.items() if how == "binned"}
    # the binned path is exercised, on a planted column among others; low-cardinality ones stay exact
    assert {"watch_hours_30d", "avg_session_mins_7d"} <= binned
    assert {"months_active", "rebuffer_events_7d", "net_service"} <= {c for c, h in statistic.items() if h == "exact"}
    gaps: dict[str, float] = {"binned": 0.0, "exact": 0.0}
    for mine, theirs in zip(spark["feature_scores"], local["feature_scores"], strict=True):
        name = mine["feature"]
        assert (name, mine["method"], mine["threshold"], mine["drifted"]) == (
            theirs["feature"], theirs["method"], theirs["threshold"], theirs["drifted"]
        )  # fmt: skip
        how = statistic[name]
        tol = BINNED_TOL if how == "binned" else EXACT_TOL
        gap = abs(mine["score"] - theirs["score"])
        gaps[how] = max(gaps[how], gap)
        assert gap <= tol, (name, how, mine["score"], theirs["score"])
    print(
        f"\n[gaps] drifted {drifted}, decision {spark['decision']}; binned columns {sorted(binned)}; max per-feature "
        f"score gap: binned {gaps['binned']:.3g}, exact {gaps['exact']:.3g}"
    )
    for key in ("target_drift", "target_ref_rate", "target_cur_rate", "target_value_drift"):
        assert spark[key] == pytest.approx(local[key], abs=EXACT_TOL), key


def test_planted_same_prediction_drift(planted_both: dict[str, Any]) -> None:
    spark_summary = planted_both["spark"]["summary"]
    local, spark = planted_both["local"]["summary"]["prediction_drift"], spark_summary["prediction_drift"]
    assert local is not None and spark is not None
    for key in ("column", "method", "threshold", "drifted", "population", "n_ref", "n_cur", "model_version"):
        assert spark[key] == local[key], key
    tol = BINNED_TOL if _methods(spark_summary)[spark["column"]] == "binned" else EXACT_TOL
    assert spark["score"] == pytest.approx(local["score"], abs=tol)
    print(f"\n[gaps] prediction drift score gap: {abs(spark['score'] - local['score']):.3g} (tolerance {tol:g})")
    for key in ("ref_mean", "cur_mean"):
        assert spark[key] == pytest.approx(local[key], abs=EXACT_TOL), key


def test_planted_same_performance_and_decision(planted_both: dict[str, Any]) -> None:
    local, spark = planted_both["local"]["summary"], planted_both["spark"]["summary"]
    lp, sp = local["performance"], spark["performance"]
    assert sp["realized"]["n"] == lp["realized"]["n"] == GEN_USERS
    assert sp["realized"]["auc"] == pytest.approx(lp["realized"]["auc"], abs=EXACT_TOL)
    print(f"\n[gaps] realized AUC gap: {abs(sp['realized']['auc'] - lp['realized']['auc']):.3g}")
    for block in ("realized", "realized_unseen"):
        for key, value in lp[block].items():
            assert sp[block][key] == pytest.approx(value, abs=EXACT_TOL), (block, key)
    for key in ("decision", "reasons", "triggers", "policy"):
        assert spark[key] == local[key], key
