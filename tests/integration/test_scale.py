"""Training and monitoring at scale (issue 11), correctness only — timings live in benchmarks/.

* The snapshot dataset reader (one SQL per month) returns exactly Feast's point-in-time dataset:
  the course months (with and without labels) and users who lack a row of the month in some
  table (Feast then takes their newest earlier row).
* USERS (40,000) generated users × 2 months, month 1 with planted drift in two features, through
  the whole loop: ingest + publish, training with the bounded, subsampled forest (stated in the
  run's params), the API's model holder serving the registered ONNX artefact (equal to the
  scikit-learn pipeline on online-store features), and the monitor on a stated sample (summary
  fields, realized metrics on every row, the CBPE estimate on the unseen users).
* The scale path's answers against the unsampled / unbounded computation:
  - the monitor's sampled drift report (SAMPLE = 10,000 of 40,000 rows per month, stratified by
    label, seed 42) against Evidently on every row of both months: same method per feature, each
    score within SCORE_TOL (0.05, half the 0.1 column threshold; measured here: at most 0.027,
    skips_7d — 10,000-row samples inflate Wasserstein scores a little), the same
    per-feature verdict wherever the full score is further than SCORE_TOL from its threshold,
    drift share within the borderline features' weight and the same drift decision;
  - the bounded forest (min_samples_leaf 20, 10,000 bootstrap rows per tree) against the course's
    unbounded forest (min_samples_leaf 1, every row per tree) and the bounded forest on every row,
    same split: val AUC not below either by more than AUC_MARGIN (0.005, issue 11's margin).
The issue asks for 200,000 users here; 40,000 keeps this module inside the CI suite's budget on
2 cores (the sampling and subsampling are still exercised: the sample and the bootstrap are a
quarter of the month / training rows). The 1,000,000-user figures come from benchmarks/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import psycopg
import pytest

from streamflow.app.monthly import ingest_and_publish
from streamflow.core.data_model import ENTITY, FEATURE_REFS, FEATURES, LABEL
from streamflow.core.logging_setup import setup_logging
from streamflow.core.progress import ProgressEvent
from streamflow.core.settings import Settings
from streamflow.db.engine import libpq_url, release_embedded
from streamflow.features.dataset import (
    MissingLabelsError,
    build_point_in_time_dataset,
    build_point_in_time_dataset_feast,
    coerce_feature_dtypes,
)
from streamflow.features.store import apply_definitions, get_feature_store
from streamflow.monitoring import drift as drift_lib
from streamflow.monitoring.monitor import MonitorRequest, run_monitor
from streamflow.seeds.drift import DriftSpec, NumericDrift
from streamflow.seeds.generator import generate_months
from streamflow.serving.metrics import ApiMetrics
from streamflow.serving.model_holder import ModelHolder
from streamflow.training.registry import configure_mlflow
from streamflow.training.train import fit_pipeline
from tests.helpers.course import AS_OF
from tests.helpers.stack import Stack, make_settings

pytestmark = pytest.mark.integration
MONTHS = list(AS_OF.items())  # [("month_000", "2024-01-31"), ("month_001", "2024-02-29")]
USERS = 40_000
N_TRAIN, N_VAL = 30_000, 10_000  # the stratified 75/25 split
SAMPLE = 10_000  # the monitor's stated sample per month
BOOTSTRAP = 10_000  # max_samples: bootstrap rows per tree
SCORE_TOL = 0.05
AUC_MARGIN = 0.005
# month 1: two features shifted (Wasserstein / Jensen-Shannon well above 0.1), twelve untouched
MONTH1_DRIFT = DriftSpec({"watch_hours_30d": NumericDrift(scale=0.6), "net_service": {"Fiber optic": 0.7}})


def assert_same_dataset(fast: pd.DataFrame, feast: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(fast, feast, check_exact=True)


@pytest.mark.parametrize("as_of", [a for _, a in MONTHS])
def test_snapshot_reader_equals_feasts_point_in_time_dataset(course_stack: Stack, as_of: str) -> None:
    settings = course_stack.settings
    events: list[ProgressEvent] = []
    fast = build_point_in_time_dataset(as_of, settings, progress=events.append)
    assert settings.dataset_reader == "snapshots" and len(fast) == 7043
    assert_same_dataset(fast, build_point_in_time_dataset_feast(as_of, settings))
    assert_same_dataset(
        build_point_in_time_dataset(as_of, settings, with_labels=False),
        build_point_in_time_dataset_feast(as_of, settings, with_labels=False),
    )
    assert events[-1].done == events[-1].total == 7043
    feast_setting = settings.model_copy(update={"dataset_reader": "feast"})
    assert_same_dataset(build_point_in_time_dataset(as_of, feast_setting), fast)


@pytest.fixture(scope="module")
def small_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    setup_logging("WARNING")
    root = tmp_path_factory.mktemp("scale_small")
    generate_months(root / "seeds", months=2, users=400, seed=21)
    settings = make_settings(root / "home")
    try:
        for month, as_of in MONTHS:
            ingest_and_publish(root / "seeds" / month, as_of, settings, materialize=False)
        apply_definitions(settings)  # Feast's registry, for its offline reader
        yield settings
    finally:
        release_embedded(settings)


def test_point_in_time_fallback_and_missing_labels_match_feast(small_home: Settings) -> None:
    """Users without a February row in usage / support (data from before ingest refused partial
    users) take their January row, as Feast's point-in-time join does; a month whose labels have
    not arrived reads as features only."""
    settings = small_home
    cur = MONTHS[1][1]
    with psycopg.connect(libpq_url(settings)) as conn:
        users = [r[0] for r in conn.execute("SELECT user_id FROM users ORDER BY user_id LIMIT 9").fetchall()]
        conn.execute("DELETE FROM usage_agg_30d_snapshots WHERE as_of = %s AND user_id = ANY(%s)", (cur, users[:6]))
        conn.execute("DELETE FROM support_agg_90d_snapshots WHERE as_of = %s AND user_id = ANY(%s)", (cur, users[3:9]))
        conn.execute("DELETE FROM labels_snapshots WHERE as_of = %s", (cur,))
    fast = build_point_in_time_dataset(cur, settings, require_labels=False)
    assert_same_dataset(fast, build_point_in_time_dataset_feast(cur, settings, require_labels=False))
    assert LABEL not in fast.columns and len(fast) == 400
    jan = build_point_in_time_dataset(MONTHS[0][1], settings).set_index(ENTITY)
    moved = fast.set_index(ENTITY).loc[users[:6], "watch_hours_30d"]
    assert (moved == jan.loc[users[:6], "watch_hours_30d"]).all()
    with pytest.raises(MissingLabelsError):
        build_point_in_time_dataset(cur, settings)


@pytest.fixture(scope="module")
def scale_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    setup_logging("WARNING")
    root = tmp_path_factory.mktemp("scale")
    generate_months(root / "seeds", months=2, users=USERS, seed=5, drift=MONTH1_DRIFT)
    # the defaults, but a sample and a bootstrap smaller than the data so that both are exercised
    settings = make_settings(root / "home", monitor_sample_rows=SAMPLE, max_samples=BOOTSTRAP)
    stack = Stack(settings=settings, seeds=root / "seeds")
    try:
        for month, as_of in MONTHS:
            result = ingest_and_publish(root / "seeds" / month, as_of, settings)
            assert result.rows == dict.fromkeys(result.rows, USERS)
        stack.train(MONTHS[0][1])
        yield stack
    finally:
        release_embedded(settings)


@pytest.fixture(scope="module")
def monitored(
    scale_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, object], list[str], list[ProgressEvent]]:
    """The monitor's run (month 0 vs month 1) on the stated sample: summary, lines, progress."""
    settings = scale_stack.settings.model_copy(update={"report_dir": tmp_path_factory.mktemp("scale_reports")})
    request = MonitorRequest.build(settings, as_of_ref=MONTHS[0][1], as_of_cur=MONTHS[1][1])
    lines: list[str] = []
    events: list[ProgressEvent] = []
    summary = run_monitor(request, settings, emit=lines.append, progress=events.append)
    return summary, lines, events


def test_training_is_bounded_subsampled_and_stated(scale_stack: Stack) -> None:
    settings, trained = scale_stack.settings, scale_stack.trained[0]
    assert trained.version == "1" and trained.promoted
    assert len(trained.split.X_train) == N_TRAIN and len(trained.split.X_val) == N_VAL
    forest = trained.pipeline.steps[-1][1]
    assert forest.max_samples == settings.max_samples == BOOTSTRAP < N_TRAIN
    assert forest.min_samples_leaf == settings.min_samples_leaf and len(forest.estimators_) == settings.n_estimators
    configure_mlflow(settings)
    run = mlflow.get_run(trained.run_id)
    params, metrics = run.data.params, run.data.metrics
    assert params["subsampled"] == "True" and params["bootstrap_rows_per_tree"] == str(BOOTSTRAP)
    assert params["max_samples"] == str(BOOTSTRAP) and params["n_train"] == str(N_TRAIN)
    assert params["min_samples_leaf"] == str(settings.min_samples_leaf) and params["max_depth"] == "None"
    assert "bootstrap of 10,000 of the 30,000" in run.data.tags["subsampling"]
    assert metrics["val_auc"] == pytest.approx(trained.metrics["val_auc"])
    assert metrics["forest_nodes"] > 0 and 0 < metrics["onnx_bytes"] < 200e6


def test_bounded_forest_auc_is_within_the_margin_of_unbounded_and_unsubsampled(scale_stack: Stack) -> None:
    """Same split, same seed: the bounded, subsampled forest's val AUC is not below the course's
    unbounded forest's, nor the bounded forest's on every row, by more than AUC_MARGIN."""
    settings, trained = scale_stack.settings, scale_stack.trained[0]
    bounded = trained.metrics["val_auc"]
    others = {
        "course (min_samples_leaf=1, every row)": {"min_samples_leaf": 1, "max_samples": None},
        "bounded, every row": {"max_samples": None},
    }
    aucs = {}
    for name, update in others.items():
        _, metrics, _ = fit_pipeline(trained.split, settings.model_copy(update=update))
        aucs[name] = metrics["val_auc"]
    print(
        f"val AUC at {USERS:,} users: bounded+subsampled {bounded:.4f}, "
        + ", ".join(f"{k} {v:.4f}" for k, v in aucs.items())
    )
    for name, auc in aucs.items():
        assert bounded >= auc - AUC_MARGIN, (name, bounded, auc)
    assert bounded > 0.75


def test_the_api_serves_the_trained_model(scale_stack: Stack) -> None:
    """The API's model holder loads the production ONNX artefact; on the online store's features
    (month 1) it gives the scikit-learn pipeline's probabilities."""
    settings, trained = scale_stack.settings, scale_stack.trained[0]
    holder = ModelHolder(settings, ApiMetrics())
    holder.check(force=True)
    assert holder.current is not None and holder.current.version == trained.version
    month1 = pd.read_csv(scale_stack.seeds / MONTHS[1][0] / "users.csv", usecols=[ENTITY], dtype=str)
    users = month1[ENTITY].sample(300, random_state=3).tolist()
    response = get_feature_store(settings).get_online_features(
        features=FEATURE_REFS, entity_rows=[{ENTITY: u} for u in users]
    )
    online = coerce_feature_dtypes(pd.DataFrame(response.to_dict()))[[ENTITY, *FEATURES]]
    month1 = build_point_in_time_dataset(MONTHS[1][1], settings).set_index(ENTITY).loc[users, FEATURES]
    pd.testing.assert_frame_equal(online.set_index(ENTITY), month1, check_exact=True)
    served = holder.current.onnx.predict_proba(online[FEATURES])
    expected = trained.pipeline.predict_proba(online[FEATURES])[:, 1]
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-5)


def test_monitor_summary_states_the_sample(scale_stack: Stack, monitored: tuple) -> None:
    settings = scale_stack.settings
    summary, lines, events = monitored
    assert summary["n_ref"] == summary["n_cur"] == USERS
    sample = summary["sample"]
    assert sample["limit"] == SAMPLE and sample["seed"] == settings.monitor_sample_seed and sample["sampled"]
    for side in ("reference", "current"):
        assert sample[side] == {"rows": SAMPLE, "of": USERS, "method": f"stratified by {LABEL}"}
    assert any(line.startswith(f"[Sample] Evidently compares sample of {SAMPLE:,} of {USERS:,}") for line in lines)
    assert len(summary["feature_scores"]) == 14 and 0.0 <= summary["drift_share"] <= 1.0
    assert summary["decision"] in ("NO_ACTION", "RETRAINING_TRIGGERED")
    # target drift and realized metrics: every row of both months
    ref = build_point_in_time_dataset(MONTHS[0][1], settings)
    cur = build_point_in_time_dataset(MONTHS[1][1], settings)
    assert summary["target_ref_rate"] == pytest.approx(ref[LABEL].mean(), abs=1e-12)
    assert summary["target_cur_rate"] == pytest.approx(cur[LABEL].mean(), abs=1e-12)
    perf = summary["performance"]
    assert perf["model_version"] == "1" and perf["realized"]["n"] == USERS
    assert 0.7 < perf["realized"]["auc"] < 1.0
    # month 1 has month 0's users: the unseen ones are month 0's validation users
    assert perf["realized_unseen"]["n"] == perf["estimated"]["n"] == N_VAL
    assert perf["estimated_population"] == "unseen"
    pred = summary["prediction_drift"]
    assert pred["population"] == "unseen" and 0 < pred["n_ref"] < SAMPLE and 0 < pred["n_cur"] < SAMPLE
    # the summary file states the sample (Evidently's saved HTML/JSON do not keep the run's name
    # and metadata, where drift.py puts the sample's description: not asserted here)
    summary_file = Path(summary["report_json"]).with_suffix(".summary.json")
    assert json.loads(summary_file.read_text())["sample"] == sample
    scored = [e for e in events if e.task == "score current month"]
    assert scored[-1].done == scored[-1].total == USERS


def test_sampled_drift_agrees_with_every_row(scale_stack: Stack, monitored: tuple, tmp_path: Path) -> None:
    """The monitor's drift on its stated sample against Evidently on every row of both months."""
    settings = scale_stack.settings
    summary = monitored[0]
    ref = build_point_in_time_dataset(MONTHS[0][1], settings)
    cur = build_point_in_time_dataset(MONTHS[1][1], settings)
    full = drift_lib.run_drift_report(ref, cur, MONTHS[0][1], MONTHS[1][1], summary["policy"]["threshold"], tmp_path)
    assert full.sample is None and full.n_ref == full.n_cur == USERS
    sampled = {f["feature"]: f for f in summary["feature_scores"]}
    borderline = 0
    diffs = {}
    for f in full.feature_drifts:
        s = sampled[f.feature]
        assert s["method"] == f.method and s["threshold"] == f.threshold, f.feature
        diffs[f.feature] = abs(s["score"] - f.score)
        assert diffs[f.feature] <= SCORE_TOL, (f.feature, s["score"], f.score)
        if abs(f.score - f.threshold) > SCORE_TOL:
            assert s["drifted"] == f.drifted, (f.feature, s["score"], f.score)
        else:
            borderline += 1
    print(f"sampled vs full drift scores: max |diff| {max(diffs.values()):.4f} ({max(diffs, key=diffs.get)})")
    # the planted drift is found either way; the untouched features are not drifted
    assert {f.feature for f in full.drifted_features} >= {"watch_hours_30d", "net_service"}
    assert summary["drift_share"] == pytest.approx(full.drift_share, abs=borderline / 14 + 1e-12)
    if abs(full.drift_share - full.threshold) > borderline / 14:
        assert summary["drift_decision"] == full.decision.value
    assert summary["target_drift"] == pytest.approx(full.target.abs_diff, abs=1e-12)
