"""Foundation on the real course data: ingestion, snapshots, labels per month, the
point-in-time dataset, training/registry, bad input and idempotence."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from streamflow.app.monthly import ingest_and_publish
from streamflow.app.status import system_status
from streamflow.core.data_model import FEATURE_DTYPES, FEATURES, SNAPSHOT_TABLES, SOURCE_TABLES
from streamflow.db.engine import get_engine
from streamflow.features.dataset import EmptySnapshotError, build_point_in_time_dataset
from streamflow.ingest.validation import ValidationError
from streamflow.training.registry import configure_mlflow, production_version
from tests.helpers.stack import Stack

pytestmark = pytest.mark.integration

ALL_TABLES = [t.name for t in SOURCE_TABLES] + list(SNAPSHOT_TABLES) + ["ingestions", "feature_materializations"]


def table_fingerprints(stack: Stack) -> dict[str, str]:
    """md5 over every row of every table: 'byte-for-byte unchanged' made checkable."""
    with get_engine(stack.settings).connect() as conn:
        return {
            t: conn.execute(
                sa.text(f"SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} x")
            ).scalar_one()
            for t in ALL_TABLES
        }


def test_every_snapshot_table_has_all_users_per_month(course_stack: Stack) -> None:
    st = system_status(course_stack.settings)
    assert [s["as_of"] for s in st["snapshots"]] == ["2024-01-31", "2024-02-29"]
    for snap in st["snapshots"]:
        assert snap["tables"] == {t: 7043 for t in SNAPSHOT_TABLES}
    rates = {s["as_of"]: s["churn_rate"] for s in st["snapshots"]}
    assert rates == {"2024-01-31": 0.2654, "2024-02-29": 0.2415}


def test_point_in_time_dataset_keeps_each_months_values(course_stack: Stack) -> None:
    ref = build_point_in_time_dataset("2024-01-31", course_stack.settings)
    cur = build_point_in_time_dataset("2024-02-29", course_stack.settings)
    for df in (ref, cur):
        assert len(df) == 7043
        assert list(df.columns) == ["user_id", "event_timestamp", *FEATURES, "churn_label"]
        assert {c: str(df[c].dtype) for c in FEATURES} == FEATURE_DTYPES
        assert df["user_id"].is_unique
    assert ref["churn_label"].mean() == pytest.approx(0.2654, abs=1e-4)
    assert cur["churn_label"].mean() == pytest.approx(0.2415, abs=1e-4)
    assert ref["rebuffer_events_7d"].mean() != pytest.approx(cur["rebuffer_events_7d"].mean(), abs=0.05)
    # Values equal the month's own CSV (a point-in-time join, not the latest month).
    csv = pd.read_csv(course_stack.seeds / "month_000" / "usage_agg_30d.csv").set_index("user_id")
    joined = ref.set_index("user_id")["rebuffer_events_7d"]
    assert (joined == csv.loc[joined.index, "rebuffer_events_7d"]).all()
    # Null streaming-plan flags survive as NaN for the "No" net service users.
    no_net = ref["net_service"] == "No"
    assert no_net.sum() > 1000
    assert ref.loc[no_net, "plan_stream_tv"].isna().all()
    assert ref.loc[~no_net, "plan_stream_tv"].notna().all()


def test_unknown_month_is_a_clear_error(course_stack: Stack) -> None:
    with pytest.raises(EmptySnapshotError, match=r"as_of=2023-12-31.*2024-01-31, 2024-02-29"):
        build_point_in_time_dataset("2023-12-31", course_stack.settings)


def test_training_registers_production_model_that_scores_null_flags(course_stack: Stack) -> None:
    first = course_stack.trained[0]
    assert first.metrics["val_auc"] >= 0.80
    prod = production_version(course_stack.settings)
    assert prod is not None and prod.version == first.version and prod.as_of == "2024-01-31"
    assert prod.metrics["val_auc"] == pytest.approx(first.metrics["val_auc"])
    # The logged scikit-learn model loads with the trusted types fixed in code (never with a list
    # read from the model) and records exactly that list; nothing in StreamFlow loads it otherwise.
    import skops.io as sio
    import yaml

    from streamflow.training.pipeline import TRUSTED_SKOPS_TYPES

    configure_mlflow(course_stack.settings)
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"models:/{course_stack.settings.model_name}/{prod.version}"
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        mlmodel = yaml.safe_load((local / "MLmodel").read_text())
        flavor = mlmodel["flavors"]["sklearn"]
        assert flavor["serialization_format"] == "skops"
        assert flavor["skops_trusted_types"] == list(TRUSTED_SKOPS_TYPES)
        model = sio.load(local / flavor["pickled_model"], trusted=list(TRUSTED_SKOPS_TYPES))
    df = build_point_in_time_dataset("2024-02-29", course_stack.settings)
    nulls = df[df["plan_stream_tv"].isna()].head(50)
    proba = model.predict_proba(nulls[FEATURES])[:, 1]
    assert len(proba) == 50 and np.isfinite(proba).all()


def _bad_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit(path: Path, fn) -> None:  # type: ignore[no-untyped-def]
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(df).to_csv(path, index=False)


BAD_CASES = {
    "missing_column": ("usage_agg_30d.csv", lambda df: df.drop(columns=["skips_7d"]), "skips_7d", "missing column"),
    "duplicate_user": (
        "payments_agg_90d.csv",
        lambda df: pd.concat([df, df.head(1)]),
        "user_id",
        "must be unique",
    ),
    "negative_fee": (
        "subscriptions.csv",
        lambda df: df.assign(monthly_fee=df["monthly_fee"].where(df.index != 3, "-12.5")),
        "monthly_fee",
        "must be >= 0",
    ),
    "unknown_user_in_labels": (
        "labels.csv",
        lambda df: df.assign(user_id=df["user_id"].where(df.index != 0, "0000-NOBODY")),
        "user_id",
        "not found in users",
    ),
    "unparseable_boolean": (
        "subscriptions.csv",
        lambda df: df.assign(paperless_billing=df["paperless_billing"].where(df.index != 5, "maybe")),
        "paperless_billing",
        "must be a boolean",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_csv_is_rejected_and_nothing_changes(course_stack: Stack, tmp_path: Path, case: str) -> None:
    file, edit, column, rule = BAD_CASES[case]
    month = _bad_copy(course_stack.seeds / "month_001", tmp_path / "month")
    _edit(month / file, edit)
    before = table_fingerprints(course_stack)
    with pytest.raises(ValidationError) as err:
        ingest_and_publish(month, "2024-03-31", course_stack.settings)
    msg = str(err.value)
    assert file in msg and column in msg and rule in msg and "nothing was written" in msg
    if case != "missing_column":
        assert "line " in msg  # offending rows are quoted
    assert table_fingerprints(course_stack) == before


def test_cli_reports_bad_input_with_nonzero_exit(course_stack: Stack, tmp_path: Path) -> None:
    month = _bad_copy(course_stack.seeds / "month_001", tmp_path / "month")
    _edit(month / "subscriptions.csv", BAD_CASES["negative_fee"][1])
    before = table_fingerprints(course_stack)
    proc = subprocess.run(
        [sys.executable, "-m", "streamflow", "ingest", str(month), "--as-of", "2024-03-31"],
        env=course_stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "subscriptions.csv" in proc.stderr and "monthly_fee" in proc.stderr and "must be >= 0" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert table_fingerprints(course_stack) == before


@pytest.mark.parametrize("as_of", ["2024-02-30", "2024-02-29'; DROP TABLE users; --", "yesterday"])
def test_as_of_must_be_a_date(course_stack: Stack, as_of: str) -> None:
    before = table_fingerprints(course_stack)
    with pytest.raises(ValueError, match="as_of must be a date"):
        ingest_and_publish(course_stack.seeds / "month_001", as_of, course_stack.settings)
    assert table_fingerprints(course_stack) == before


def test_reingesting_a_month_is_idempotent(course_stack: Stack) -> None:
    before = {
        k: v for k, v in table_fingerprints(course_stack).items() if k not in ("ingestions", "feature_materializations")
    }
    result = ingest_and_publish(course_stack.seeds / "month_001", "2024-02-29", course_stack.settings)
    assert result.rows == {t.name: 7043 for t in SOURCE_TABLES}
    assert result.materialized_as_of is not None and str(result.materialized_as_of) == "2024-02-29"
    after = {
        k: v for k, v in table_fingerprints(course_stack).items() if k not in ("ingestions", "feature_materializations")
    }
    assert after == before
