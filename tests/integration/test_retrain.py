"""Real retraining (``retrain_and_maybe_promote``) on its own stack: a generated month ingested
into a real PostgreSQL + Feast, real MLflow runs and registry.

Deterministic: the month, the split (``settings.random_seed``) and the forests are seeded. The
"weak" production model is trained on the same month with shuffled labels (AUC ≈ 0.5 on the real
held-out rows); the candidate is trained on the real labels (AUC ≈ 0.8). Each test uses its own
registered-model name, so tests are independent and never touch the shared ``course_stack``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from streamflow.app.monthly import ingest_and_publish
from streamflow.core.data_model import LABEL
from streamflow.core.settings import Settings
from streamflow.db.engine import release_embedded
from streamflow.features.dataset import build_point_in_time_dataset
from streamflow.monitoring.retrain import retrain_and_maybe_promote
from streamflow.seeds.generator import generate_months
from streamflow.training.registry import list_versions, production_version, promote
from streamflow.training.train import split_dataset, train_model
from tests.helpers.stack import make_settings

pytestmark = pytest.mark.integration

AS_OF = "2024-01-31"
USERS = 4000


@dataclass
class RetrainStack:
    settings: Settings
    dataset: pd.DataFrame

    def for_model(self, name: str, **overrides: object) -> Settings:
        return self.settings.model_copy(update={"model_name": name, **overrides})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RetrainStack]:
    root = tmp_path_factory.mktemp("retrain")
    settings = make_settings(root / "home", n_estimators=40)
    t0 = time.perf_counter()
    (month,) = generate_months(root / "seeds", 1, USERS, seed=11)
    try:
        ingest_and_publish(month, AS_OF, settings)
        dataset = build_point_in_time_dataset(AS_OF, settings)
        print(f"\n[timing] retrain stack ({USERS} users): {time.perf_counter() - t0:.1f}s")
        yield RetrainStack(settings, dataset)
    finally:
        release_embedded(settings)


def shuffled(df: pd.DataFrame) -> pd.DataFrame:
    """Same rows, labels permuted: a model trained on it has learned nothing."""
    rng = np.random.default_rng(0)
    return df.assign(**{LABEL: rng.permutation(df[LABEL].to_numpy())})


def client(settings: Settings) -> MlflowClient:
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def test_no_production_model_promotes_the_candidate(stack: RetrainStack) -> None:
    settings = stack.for_model("churn_fresh")
    assert production_version(settings) is None
    out = retrain_and_maybe_promote(AS_OF, settings, reason="test: empty registry", dataset=stack.dataset)
    assert out.promoted and out.production_version is None and out.production_auc is None and out.delta is None
    assert production_version(settings).version == out.candidate_version  # type: ignore[union-attr]
    assert "no production model" in out.reason
    assert out.lines()[-1].startswith("[Retrain] PROMOTED: no production model")


def test_promotes_a_clearly_better_candidate(stack: RetrainStack) -> None:
    settings = stack.for_model("churn_better")
    weak = train_model(AS_OF, settings, promote_if_first=False, dataset=shuffled(stack.dataset))
    assert weak.version is not None
    promote(settings, weak.version, "test: deliberately weak model (shuffled labels)")

    out = retrain_and_maybe_promote(
        AS_OF, settings, min_delta=0.05, reason="test drift", drift_share=0.5, dataset=stack.dataset
    )

    # both scored on the same held-out rows: the seeded 25 % split of the month
    split = split_dataset(stack.dataset, settings.random_seed)
    assert out.n_heldout == len(split.X_val) == USERS // 4
    assert out.production_version == weak.version
    assert out.production_auc is not None and out.production_auc < 0.6
    assert out.candidate_auc > 0.75
    assert out.delta == pytest.approx(out.candidate_auc - out.production_auc)
    assert out.promoted and out.decision == "PROMOTED"

    # the alias moved; the weak version still exists (nothing archived) and says why it was replaced
    assert production_version(settings).version == out.candidate_version  # type: ignore[union-attr]
    versions = {v.version: v for v in list_versions(settings)}
    assert set(versions) == {weak.version, out.candidate_version}
    c = client(settings)
    assert c.get_model_version(settings.model_name, weak.version).current_stage in ("None", None)
    assert "replaced by v" in versions[weak.version].tags["demoted_reason"]
    assert versions[out.candidate_version].tags["promoted_reason"].startswith("test drift: candidate auc=")
    assert versions[out.candidate_version].tags["trigger"] == "drift"
    assert "rejected_reason" not in versions[out.candidate_version].tags

    # the comparison is recorded on the candidate run
    run = c.get_run(out.candidate_run_id)
    tags, metrics = run.data.tags, run.data.metrics
    assert (tags["trigger"], tags["as_of"], tags["retrain_decision"]) == ("drift", AS_OF, "PROMOTED")
    assert float(tags["drift_share"]) == 0.5
    assert tags["compared_with_version"] == weak.version
    assert tags["retrain_trigger_reason"] == "test drift"
    assert metrics["heldout_auc_candidate"] == pytest.approx(out.candidate_auc)
    assert metrics["heldout_auc_production"] == pytest.approx(out.production_auc)
    assert metrics["heldout_auc_delta"] == pytest.approx(out.delta)
    assert metrics["promote_min_delta"] == 0.05
    # and the run logged the full model as any training does (sklearn + ONNX)
    artifacts = {a.path for a in c.list_artifacts(out.candidate_run_id)}
    assert "onnx" in artifacts and "feature_schema.json" in artifacts


def test_refuses_a_candidate_that_does_not_beat_production_by_min_delta(stack: RetrainStack) -> None:
    # min_delta from the settings (STREAMFLOW_PROMOTE_MIN_DELTA) when not given
    settings = stack.for_model("churn_refused", promote_min_delta=0.5)
    strong = train_model(AS_OF, settings, promote_if_first=True, dataset=stack.dataset)
    assert strong.promoted and strong.version is not None

    out = retrain_and_maybe_promote(AS_OF, settings, reason="test drift", dataset=stack.dataset)

    assert not out.promoted and out.decision == "REJECTED"
    assert out.min_delta == 0.5
    assert out.production_version == strong.version
    assert out.production_auc is not None and out.production_auc > 0.75
    assert out.delta is not None and out.delta < 0.5
    assert production_version(settings).version == strong.version  # type: ignore[union-attr]  # alias unchanged
    c = client(settings)
    mv = c.get_model_version(settings.model_name, out.candidate_version)
    assert "does not beat production" in mv.tags["rejected_reason"] and "min_delta=0.5000" in mv.tags["rejected_reason"]
    assert "promoted_reason" not in mv.tags
    run = c.get_run(out.candidate_run_id)
    assert run.data.tags["retrain_decision"] == "REJECTED"
    assert run.data.tags["rejected_reason"] == mv.tags["rejected_reason"]
    assert out.lines()[-1].startswith("[Retrain] REJECTED: candidate auc=")
    assert "delta=" in out.lines()[0]
