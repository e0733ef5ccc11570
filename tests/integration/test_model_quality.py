"""Model-quality monitoring (issue 9) on real services: embedded PostgreSQL, Feast offline
retrieval, a real MLflow registry, ONNX scoring, Evidently.

* Course data (shared ``course_stack``; its ``streamflow_churn`` alias is never moved here): the
  2024-01-31 model's realized AUC on 2024-02-29 (stored, replaced on re-run), the version that
  served the month, ``streamflow performance``, the training artefacts (CBPE calibration on the
  ONNX model's validation probabilities, training users), and ``--retrain`` on a performance
  trigger — under its own registered-model name, so the shared alias stays where it is.
* Generated months (own stack, 10,000 users): a covariate shift with the churn model unchanged
  (CBPE within ±0.03 of realized), concept drift (drift_share 0, CBPE unchanged, the realized drop
  triggers) and a month whose labels have not arrived (deleted from ``labels_snapshots``): the
  monitor decides from drift + CBPE and exits 0.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient
from typer.testing import CliRunner

from streamflow.app.cli import app
from streamflow.app.monthly import ingest_and_publish
from streamflow.core.data_model import FEATURES, LABEL
from streamflow.core.dates import as_of_timestamp, month_as_of
from streamflow.core.settings import Settings
from streamflow.db.engine import get_engine, release_embedded
from streamflow.features.dataset import MissingLabelsError, build_point_in_time_dataset
from streamflow.model.artifacts import SHA256_TAGS
from streamflow.model.cbpe import CBPECalibration
from streamflow.monitoring.monitor import MonitorRequest, run_monitor
from streamflow.monitoring.performance import (
    load_measurements,
    measure_estimated,
    record_realized_performance,
    version_for_month,
)
from streamflow.monitoring.production_model import (
    CBPE_ARTIFACT,
    TRAINED_USERS_ARTIFACT,
    load_production_model,
)
from streamflow.seeds.drift import parse_drift_option
from streamflow.seeds.generator import generate_months
from streamflow.training.artifacts import onnx_probabilities
from streamflow.training.registry import alias_history, configure_mlflow, list_versions, production_version
from streamflow.training.train import split_dataset, train_model
from tests.helpers.stack import Stack, environment_of, make_settings

pytestmark = pytest.mark.integration

REF, CUR = "2024-01-31", "2024-02-29"
LINE_PREFIX = "[Evidently] report_html="


def run_cli(settings: Settings, *args: str) -> Any:
    with environment_of(settings):
        return CliRunner().invoke(app, list(args))


def monitor(settings: Settings, ref: str, cur: str, report_dir: Path, **kw: Any) -> tuple[dict[str, Any], list[str]]:
    lines: list[str] = []
    request = MonitorRequest.build(settings, as_of_ref=ref, as_of_cur=cur, report_dir=report_dir, **kw)
    summary = run_monitor(request, settings, emit=lines.append)
    return summary, lines


# ============================================================================ course data
def test_course_realized_auc_of_the_january_model_on_february(course_stack: Stack) -> None:
    settings = course_stack.settings
    january = course_stack.trained[0]
    choice = version_for_month(settings, CUR)
    # both months were ingested before the first model: the first version that held the alias
    assert choice.version == january.version and "first production version" in choice.reason

    result = record_realized_performance(CUR, settings)
    assert result.model_version == january.version
    auc = result.month.metrics["auc"]
    assert auc is not None and 0.45 <= auc <= 0.52, auc
    assert result.month.n == 7043 and result.validation_auc == pytest.approx(january.metrics["val_auc"])
    assert result.unseen is not None and result.unseen.n == 1761  # January's validation users
    assert result.month.metrics["actual_churn_rate"] == pytest.approx(0.2415, abs=1e-4)
    print(f"\n[figures] course: v{january.version} realized AUC on {CUR}: {auc:.4f} (unseen users "
          f"{result.unseen.metrics['auc']:.4f}), val AUC {january.metrics['val_auc']:.4f}")  # fmt: skip

    stored = {
        (g["source"], g["population"]): g for g in load_measurements(settings, as_of=CUR, model_version=january.version)
    }
    month = stored[("realized", "month")]
    assert month["metrics"]["auc"] == pytest.approx(auc)
    assert month["metrics"]["n"] == 7043
    assert sum(month["metrics"][f"calibration_bin_{i}_count"] for i in range(10)) == 7043
    metrics = {"auc", "f1", "precision", "recall", "accuracy", "brier", "predicted_churn_rate", "actual_churn_rate"}
    assert set(month["metrics"]) >= metrics

    # a re-run replaces the month's rows of that version (same rows, new computed_at)
    engine = get_engine(settings)
    count = sa.text(
        "SELECT count(*) FROM model_performance WHERE model_name = :name AND model_version = :v "
        "AND as_of = :d AND source = 'realized' AND population IN ('month', 'unseen')"
    )
    key = {"name": settings.model_name, "v": january.version, "d": date(2024, 2, 29)}
    with engine.connect() as conn:
        before = conn.execute(count, key).scalar()
    time.sleep(0.01)
    record_realized_performance(CUR, settings)
    with engine.connect() as conn:
        after = conn.execute(count, key).scalar()
    assert before == after == 2 * (10 + 30)  # month + unseen, 10 metrics + 10 bins x 3
    again = {
        (g["source"], g["population"]): g for g in load_measurements(settings, as_of=CUR, model_version=january.version)
    }
    assert again[("realized", "month")]["computed_at"] > month["computed_at"]


def test_performance_command(course_stack: Stack) -> None:
    settings = course_stack.settings
    ok = run_cli(settings, "performance", "--as-of", CUR, "--json")
    assert ok.exit_code == 0, ok.stderr
    (row,) = json.loads(ok.stdout)
    assert row["as_of"] == CUR and row["model_version"] == course_stack.trained[0].version
    assert "first production version" in row["version_reason"]
    assert 0.45 <= row["realized"]["auc"] <= 0.52 and row["realized"]["n"] == 7043
    assert len(row["calibration_bins"]) == 10

    every = run_cli(settings, "performance", "--json")
    assert every.exit_code == 0, every.stderr
    assert [r["as_of"] for r in json.loads(every.stdout)] == [REF, CUR]
    table = run_cli(settings, "performance")
    assert table.exit_code == 0 and "2024-02-29" in table.stdout and "first production version" in table.stdout

    for args, needle in (
        (("--as-of", "2023-12-31"), "no snapshot for --as-of 2023-12-31"),
        (("--as-of", "2024-02-30"), "2024-02-30"),
        (("--model-version", "999"), "has no version '999'"),
    ):
        bad = run_cli(settings, "performance", *args)
        assert bad.exit_code == 2, (args, bad.stderr)
        errors = [ln for ln in bad.stderr.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1 and needle in errors[0] and "Traceback" not in bad.stderr


def test_training_logs_the_cbpe_calibration_and_the_training_users(course_stack: Stack) -> None:
    settings = course_stack.settings
    january = course_stack.trained[0]
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    artifacts = {a.path for a in client.list_artifacts(january.run_id, "cbpe")}
    assert artifacts == {CBPE_ARTIFACT, TRAINED_USERS_ARTIFACT}
    local = Path(client.download_artifacts(january.run_id, CBPE_ARTIFACT))
    stored = CBPECalibration.from_dict(json.loads(local.read_text()))
    users = gzip.decompress(Path(client.download_artifacts(january.run_id, TRAINED_USERS_ARTIFACT)).read_bytes())

    # fitted on the validation split's probabilities of the ONNX model
    split = split_dataset(build_point_in_time_dataset(REF, settings), settings.random_seed)
    onnx = Path(client.download_artifacts(january.run_id, "onnx/model.onnx")).read_bytes()
    # the same onnxruntime thread count as training: the trees' float32 sums are ordered by thread
    proba = onnx_probabilities(onnx, split.X_val, threads=settings.score_threads)
    refit = CBPECalibration.fit(proba, split.y_val.to_numpy())
    assert stored == refit and stored.n_reference == len(split.X_val) == 1761
    sklearn_proba = january.pipeline.predict_proba(split.X_val)[:, 1]
    assert np.abs(onnx_probabilities(onnx, split.X_val) - sklearn_proba).max() < 1e-5
    assert len(users.decode().split()) == len(split.X_train) == 5282

    model = load_production_model(settings.model_copy(update={"model_alias": "no_such_alias"}))
    assert model is None


def test_retrain_on_a_performance_trigger_promotes_a_better_candidate(course_stack: Stack, tmp_path: Path) -> None:
    """The course: drift 1/14 < 0.3, the January model at chance on February → retrain on February,
    compare on February's held-out split, promote. Under its own registered-model name (same
    database and registry), so the shared stack's production alias does not move."""
    shared_before = production_version(course_stack.settings)
    settings = course_stack.settings.model_copy(update={"model_name": "quality_course_retrain", "n_estimators": 100})
    january = train_model(REF, settings, promote_if_first=True)
    assert january.promoted and january.version is not None

    summary, lines = monitor(settings, REF, CUR, tmp_path, retrain=True)

    assert summary["drift_share"] == 1 / 14 and summary["drifted_count"] == 1
    assert summary["decision"] == "RETRAINING_TRIGGERED" and summary["drift_decision"] == "NO_ACTION"
    assert summary["triggers"] == ["realized_auc_below_min", "realized_auc_drop"]
    assert summary["reasons"][0].startswith("realized AUC 0.4") and "< min_auc 0.70" in summary["reasons"][0]
    rt = summary["retrain"]
    assert rt is not None and rt["production_version"] == january.version
    assert rt["n_heldout"] == 1761  # February's seeded 25 % split
    assert rt["candidate_auc"] > rt["production_auc"] and rt["promoted"] and rt["decision"] == "PROMOTED"
    print(
        f"\n[figures] course --retrain: candidate v{rt['candidate_version']} auc={rt['candidate_auc']:.4f} vs "
        f"production v{rt['production_version']} auc={rt['production_auc']:.4f} on February's held-out rows"
    )
    assert production_version(settings).version == rt["candidate_version"]  # type: ignore[union-attr]
    assert production_version(course_stack.settings).version == shared_before.version  # type: ignore[union-attr]

    run = MlflowClient(tracking_uri=settings.tracking_uri).get_run(rt["candidate_run_id"])
    assert run.data.tags["trigger"] == "performance"
    assert run.data.tags["triggers"] == "realized_auc_below_min,realized_auc_drop"
    assert run.data.tags["retrain_trigger_reason"].startswith(f"performance {REF} vs {CUR}: realized AUC 0.4")
    assert run.data.metrics["trigger_realized_auc"] == pytest.approx(summary["performance"]["realized"]["auc"])
    assert run.data.metrics["heldout_auc_production"] == pytest.approx(rt["production_auc"])
    # every alias move went through promote(): first model, then the candidate
    assert [h.version for h in alias_history(settings)] == [january.version, rt["candidate_version"]]
    assert any(ln.startswith("[Retrain] PROMOTED: candidate auc=") for ln in lines)
    assert lines[-1].startswith(LINE_PREFIX)
    assert "-> RETRAINING_TRIGGERED drift_share=0.07 < 0.30 (target_drift=0.0239); realized AUC 0.4" in lines[-1]


# ============================================================================ generated months
USERS = 10_000
SEED = 7
N_ESTIMATORS = 50
COVARIATE_SHIFT = "watch_hours_30d*0.6@1"  # with the churn model kept as it was (see test_cbpe)
CONCEPT_DRIFT = "concept=contract_type:Month-to-month@1"
JAN, FEB, MAR, APR = (month_as_of(date(2024, 1, 31), i).isoformat() for i in range(4))


@dataclass
class Generated:
    settings: Settings
    model_version: str


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Generated]:
    """Jan = month 0; Feb = month 1 with a covariate shift and the churn model unchanged; Mar =
    month 2 of the same months, whose labels 'have not arrived' (deleted from labels_snapshots);
    Apr = month 1 of the same population with concept drift (features untouched). A model trained
    on Jan holds the production alias."""
    root = tmp_path_factory.mktemp("quality_generated")
    settings = make_settings(root / "home", n_estimators=N_ESTIMATORS)
    t0 = time.perf_counter()
    covariate = generate_months(
        root / "covariate",
        3,
        USERS,
        SEED,
        drift=replace(parse_drift_option(COVARIATE_SHIFT), keep_churn_model=True),
    )
    concept = generate_months(root / "concept", 2, USERS, SEED, drift=parse_drift_option(CONCEPT_DRIFT))
    try:
        for month, as_of in ((covariate[0], JAN), (covariate[1], FEB), (covariate[2], MAR), (concept[1], APR)):
            ingest_and_publish(month, as_of, settings, materialize=as_of == APR)
        with get_engine(settings).begin() as conn:
            conn.execute(
                sa.text("DELETE FROM labels_snapshots WHERE as_of = :ts"), {"ts": as_of_timestamp(date(2024, 3, 31))}
            )
        trained = train_model(JAN, settings, promote_if_first=True)
        assert trained.promoted and trained.version is not None
        print(f"\n[timing] generated quality stack (4 x {USERS} users + model): {time.perf_counter() - t0:.1f}s")
        yield Generated(settings, trained.version)
    finally:
        release_embedded(settings)


def test_covariate_shift_cbpe_within_003_of_realized(generated: Generated, tmp_path: Path) -> None:
    summary, lines = monitor(generated.settings, JAN, FEB, tmp_path)
    perf = summary["performance"]
    realized, unseen, estimated = perf["realized"]["auc"], perf["realized_unseen"]["auc"], perf["estimated"]["auc"]
    print(f"\n[figures] covariate shift: estimated AUC {estimated:.4f} (CBPE, {perf['estimated']['n']} unseen users) "
          f"vs realized {realized:.4f} (all {perf['realized']['n']}) / {unseen:.4f} (unseen); "
          f"val AUC {perf['validation_auc']:.4f}; drift_share {summary['drift_share']:.4f}")  # fmt: skip
    assert perf["estimated_population"] == "unseen" and perf["estimated"]["n"] == USERS // 4
    assert abs(estimated - unseen) <= 0.03, (estimated, unseen)
    assert abs(estimated - realized) <= 0.03, (estimated, realized)
    assert "watch_hours_30d" in [d["feature"] for d in summary["drifted_features"]]  # the shift is planted
    assert any(ln.startswith(f"[Performance] model v{generated.model_version} on {FEB}: realized AUC ") for ln in lines)
    # both sources stored
    sources = {(g["source"], g["population"]) for g in load_measurements(generated.settings, as_of=FEB)}
    assert sources == {("realized", "month"), ("realized", "unseen"), ("estimated", "unseen")}


def test_concept_drift_is_invisible_to_drift_and_cbpe_but_realized_auc_triggers(
    generated: Generated, tmp_path: Path
) -> None:
    settings = generated.settings
    summary, lines = monitor(settings, JAN, APR, tmp_path)
    perf = summary["performance"]
    model = load_production_model(settings)
    assert model is not None
    month0, _ = measure_estimated(model, build_point_in_time_dataset(JAN, settings), JAN)
    assert month0 is not None and month0.population == "unseen"  # January's unseen users = the validation split
    est0, est = month0.metrics["auc"], perf["estimated"]["auc"]
    realized = perf["realized"]["auc"]
    print(f"\n[figures] concept drift: drift_share {summary['drift_share']}; CBPE {est0:.4f} (month 0) -> {est:.4f}; "
          f"realized AUC {realized:.4f} vs val AUC {perf['validation_auc']:.4f}")  # fmt: skip
    assert summary["drift_share"] == 0.0 and summary["drifted_features"] == []
    assert abs(est - est0) <= 0.03, (est0, est)  # CBPE cannot see it
    assert abs(est - perf["validation_auc"]) <= 0.03
    assert realized < perf["validation_auc"] - 0.2  # the realized metric does
    assert summary["decision"] == "RETRAINING_TRIGGERED" and summary["drift_decision"] == "NO_ACTION"
    assert summary["triggers"] == ["realized_auc_below_min", "realized_auc_drop"]
    assert all("realized AUC" in r for r in summary["reasons"])
    assert summary["prediction_drift"]["drifted"] is False  # same features, same scores distribution
    assert "[Retrain] SIMULATED (as in the course): realized AUC" in "\n".join(lines)


def test_month_without_labels_decides_from_drift_and_cbpe(generated: Generated, tmp_path: Path) -> None:
    settings = generated.settings.model_copy(update={"report_dir": tmp_path})
    with pytest.raises(MissingLabelsError, match=f"as_of={MAR}"):
        build_point_in_time_dataset(MAR, settings)
    features_only = build_point_in_time_dataset(MAR, settings, require_labels=False)
    assert LABEL not in features_only.columns and list(features_only.columns[2:]) == FEATURES

    result = run_cli(settings, "monitor", "--ref", JAN, "--cur", MAR, "--orchestrator", "none", "--json")
    assert result.exit_code == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["target_drift"] is None and summary["target_cur_rate"] is None
    assert summary["target_drift_note"] == f"no labels for as_of={MAR} yet: no target drift"
    perf = summary["performance"]
    assert perf["realized"] is None and perf["notes"]["realized"] == f"no labels for as_of={MAR} yet"
    assert perf["estimated"]["auc"] is not None and perf["estimated"]["n"] == USERS // 4
    drift_rule = summary["drift_share"] >= summary["threshold"]
    cbpe_rule = perf["validation_auc"] - perf["estimated"]["auc"] >= 0.05
    assert summary["decision"] == ("RETRAINING_TRIGGERED" if drift_rule or cbpe_rule else "NO_ACTION")
    assert not {"realized_auc_below_min", "realized_auc_drop"} & set(summary["triggers"])
    err = result.stderr
    assert f"[Dataset] as_of={MAR} rows={USERS} churn_rate=n/a (no labels yet)" in err
    assert "[Target drift] n/a: the current month has no labels yet" in err
    assert f"realized AUC n/a (no labels for as_of={MAR} yet)" in err
    last = [ln for ln in err.splitlines() if ln.startswith(LINE_PREFIX)][-1]
    assert "(target_drift=NaN)" in last and "Traceback" not in err
    on_disk = json.loads(Path(summary["report_json"]).with_suffix(".summary.json").read_text())
    assert on_disk["decision"] == summary["decision"] and on_disk["performance"]["realized"] is None

    no_labels = run_cli(settings, "performance", "--as-of", MAR)
    assert no_labels.exit_code == 2 and f"as_of={MAR} has no labels yet" in no_labels.stderr


def test_month_without_labels_cbpe_trigger_cannot_retrain_yet(generated: Generated, tmp_path: Path) -> None:
    """A stricter max_auc_drop makes the estimate trigger; --retrain says why nothing is trained."""
    settings = generated.settings.model_copy(update={"max_auc_drop": 0.001})
    versions_before = [v.version for v in list_versions(settings)]
    summary, lines = monitor(settings, JAN, MAR, tmp_path, retrain=True)
    assert summary["performance"]["validation_auc"] - summary["performance"]["estimated"]["auc"] >= 0.001
    assert summary["decision"] == "RETRAINING_TRIGGERED"
    assert "estimated_auc_drop" in summary["triggers"]
    assert any(r.startswith("estimated AUC (CBPE, no labels yet) ") for r in summary["reasons"])
    assert summary["retrain"] is None
    assert any(ln.startswith(f"[Retrain] not possible: as_of={MAR} has no labels yet") for ln in lines)
    assert [v.version for v in list_versions(settings)] == versions_before
    assert production_version(settings).version == generated.model_version  # type: ignore[union-attr]


def test_old_model_without_calibration_gives_a_null_estimate_with_a_reason(
    generated: Generated, tmp_path: Path
) -> None:
    """A version trained before the CBPE artefacts existed (its run has none): null, never a crash."""
    settings = generated.settings.model_copy(update={"model_name": "quality_old_model"})
    trained = train_model(JAN, settings, promote_if_first=True)
    client = configure_mlflow(settings)
    repo_root = Path(client.get_run(trained.run_id).info.artifact_uri.removeprefix("file://"))
    for name in ("calibration.json", "trained_user_ids.txt.gz"):
        (repo_root / "cbpe" / name).unlink()  # what a run from before this change looks like
    for path in (CBPE_ARTIFACT, TRAINED_USERS_ARTIFACT):  # ... whose hashes were never recorded either
        client.delete_tag(trained.run_id, SHA256_TAGS[path])
        client.delete_model_version_tag(settings.model_name, str(trained.version), SHA256_TAGS[path])
    summary, lines = monitor(settings, JAN, FEB, tmp_path)
    perf = summary["performance"]
    assert perf["estimated"] is None and "has no cbpe/calibration.json" in perf["notes"]["estimated"]
    assert perf["realized"]["auc"] is not None and perf["realized_unseen"] is None
    assert any("estimated AUC n/a (v" in ln for ln in lines)
