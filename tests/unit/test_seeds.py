"""Unit tests of the synthetic seed generator (streamflow.seeds)."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from streamflow.core import data_model
from streamflow.core.dates import month_as_of, month_dir_name
from streamflow.seeds.generator import (
    DriftSpec,
    NumericDrift,
    generate_months,
    iter_months,
    parse_drift_option,
)

USERS, SEED, MONTHS = 3000, 11, 3
NET = {"DSL", "Fiber optic", "No"}
CONTRACTS = {"Month-to-month", "One year", "Two year"}
BOOL_TEXT = {"True", "False"}


def read_raw(month_dir: Path, table: data_model.SourceTable) -> pd.DataFrame:
    """The CSV exactly as text ('' for empty fields)."""
    return pd.read_csv(month_dir / table.file_name, dtype=str, keep_default_na=False)


def merged(month_dir: Path) -> pd.DataFrame:
    df = pd.read_csv(month_dir / data_model.SUBSCRIPTIONS.file_name)
    for t in (data_model.USAGE, data_model.PAYMENTS, data_model.SUPPORT, data_model.LABELS):
        df = df.merge(pd.read_csv(month_dir / t.file_name), on="user_id", validate="one_to_one")
    return df


def file_bytes(month_dir: Path) -> dict[str, bytes]:
    return {t.file_name: (month_dir / t.file_name).read_bytes() for t in data_model.SOURCE_TABLES}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return generate_months(tmp_path_factory.mktemp("seeds"), MONTHS, USERS, SEED)


def _generate(tmp: Path, name: str, drift: DriftSpec | None = None, months: int = 2, seed: int = SEED) -> list[Path]:
    return generate_months(tmp / name, months, USERS, seed, drift=drift)


# ---- format and domains -------------------------------------------------------------


def test_six_files_with_schema_headers(dirs: list[Path]) -> None:
    assert [d.name for d in dirs] == [month_dir_name(i) for i in range(MONTHS)]
    for d in dirs:
        assert sorted(p.name for p in d.iterdir()) == sorted(t.file_name for t in data_model.SOURCE_TABLES)
        for t in data_model.SOURCE_TABLES:
            raw = (d / t.file_name).read_bytes()
            assert raw.split(b"\n", 1)[0].decode() == ",".join(t.column_names)
            assert raw.endswith(b"\n") and b"\r" not in raw and b'"' not in raw
            assert raw.count(b"\n") == USERS + 1


def test_value_domains(dirs: list[Path]) -> None:
    for d in dirs:
        users = read_raw(d, data_model.USERS)
        assert users["user_id"].str.fullmatch(r"\d{4}-[A-Z]{5}").all()
        assert users["user_id"].is_unique
        assert set(users["user_gender"]) == {"Male", "Female"}
        for c in ("user_is_senior", "has_family", "has_dependents"):
            assert set(users[c]) == BOOL_TEXT
        signup = pd.to_datetime(users["signup_date"], format="%Y-%m-%d")
        assert (signup <= pd.Timestamp(month_as_of(date(2024, 1, 31), 0))).all()

        subs = read_raw(d, data_model.SUBSCRIPTIONS)
        assert set(subs["net_service"]) == NET
        assert set(subs["contract_type"]) == CONTRACTS
        assert set(subs["paperless_billing"]) == BOOL_TEXT
        no_net = subs["net_service"] == "No"
        for c in ("plan_stream_tv", "plan_stream_movies"):
            assert ((subs[c] == "") == no_net).all(), f"{c} must be empty iff net_service == 'No'"
            assert set(subs.loc[~no_net, c]) == BOOL_TEXT
        fee = subs["monthly_fee"].astype(float)
        assert fee.between(18.25, 118.75).all()
        assert np.allclose(fee * 20, np.round(fee * 20))  # multiples of 0.05 like the course data

        labels = read_raw(d, data_model.LABELS)
        assert set(labels["churn_label"]) == BOOL_TEXT

        for t in data_model.SOURCE_TABLES:
            raw = read_raw(d, t)
            for col in t.columns:
                if not col.nullable:
                    assert (raw[col.name] != "").all(), f"{t.name}.{col.name} has blanks"
                values = raw.loc[raw[col.name] != "", col.name]
                if col.type == "int":
                    assert values.str.fullmatch(r"\d+").all(), f"{t.name}.{col.name} not a non-negative int"
                elif col.type == "float":
                    assert values.str.fullmatch(r"\d+\.\d+").all(), f"{t.name}.{col.name} not a plain float"
                    assert (values.astype(float) >= 0).all()


def test_float_and_bool_text_like_course(dirs: list[Path]) -> None:
    support = read_raw(dirs[0], data_model.SUPPORT)
    assert support["ticket_avg_resolution_hrs_90d"].str.fullmatch(r"\d+\.\d").all()  # e.g. "16.0"
    subs = read_raw(dirs[0], data_model.SUBSCRIPTIONS)
    new = subs["months_active"] == "0"
    assert (subs.loc[new, "total_paid"] == "0.0").all()


def test_churn_rate_per_month(dirs: list[Path]) -> None:
    for d in dirs:
        rate = merged(d)["churn_label"].mean()
        assert 0.22 <= rate <= 0.30, f"{d.name}: churn {rate:.3f}"


def test_calibrated_marginals(dirs: list[Path]) -> None:
    df = merged(dirs[0])
    shares = df["contract_type"].value_counts(normalize=True)
    assert shares["Month-to-month"] == pytest.approx(0.55, abs=0.03)
    assert df["net_service"].value_counts(normalize=True)["Fiber optic"] == pytest.approx(0.44, abs=0.03)
    assert df["months_active"].mean() == pytest.approx(32.4, abs=2.0)
    assert df["monthly_fee"].mean() == pytest.approx(64.8, abs=2.0)
    assert df["watch_hours_30d"].mean() == pytest.approx(29.6, abs=0.7)
    assert df["skips_7d"].mean() == pytest.approx(5.05, abs=0.2)
    by_contract = df.groupby("contract_type")["churn_label"].mean()
    assert by_contract["Month-to-month"] > by_contract["One year"] > by_contract["Two year"]


# ---- determinism and month-to-month behaviour ----------------------------------------


def test_same_seed_same_bytes_different_seed_differs(dirs: list[Path], tmp_path: Path) -> None:
    again = generate_months(tmp_path / "again", MONTHS, USERS, SEED)
    for a, b in zip(dirs, again, strict=True):
        assert file_bytes(a) == file_bytes(b)
    other = _generate(tmp_path, "other", months=1, seed=SEED + 1)
    for name, content in file_bytes(other[0]).items():
        assert content != file_bytes(dirs[0])[name]


def test_month_independent_of_month_count(dirs: list[Path], tmp_path: Path) -> None:
    one = _generate(tmp_path, "one", months=1)
    assert file_bytes(one[0]) == file_bytes(dirs[0])


def test_users_stable_and_months_advance(dirs: list[Path]) -> None:
    frames = [merged(d) for d in dirs]
    users = [read_raw(d, data_model.USERS) for d in dirs]
    for t in range(1, MONTHS):
        assert users[t].equals(users[0])  # users.csv is static
        prev, cur = frames[t - 1], frames[t]
        assert (cur["user_id"] == prev["user_id"]).all()
        assert (cur["months_active"] == prev["months_active"] + 1).all()
        assert np.allclose(cur["total_paid"], prev["total_paid"] + cur["monthly_fee"], atol=0.011)
        for c in ("contract_type", "net_service", "monthly_fee", "paperless_billing"):
            assert cur[c].equals(prev[c])
        # usage re-drawn with mild noise: different values, strongly correlated, same distribution
        w0, w1 = prev["watch_hours_30d"], cur["watch_hours_30d"]
        assert (w0 != w1).mean() > 0.95
        assert np.corrcoef(w0, w1)[0, 1] > 0.9
        assert w1.mean() == pytest.approx(w0.mean(), abs=0.5)
        assert 0.3 < (prev["rebuffer_events_7d"] == cur["rebuffer_events_7d"]).mean() < 0.95
        # labels re-drawn per month
        assert 0.5 < (prev["churn_label"] == cur["churn_label"]).mean() < 0.95


def test_month_as_of() -> None:
    start = date(2024, 1, 31)
    assert [month_as_of(start, k) for k in range(3)] == [start, date(2024, 2, 29), date(2024, 3, 31)]
    assert month_as_of(start, 12) == date(2025, 1, 31)
    assert month_as_of(date(2024, 1, 15), 1) == date(2024, 2, 15)


# ---- learnable signal ------------------------------------------------------------------


def test_random_forest_learns_churn() -> None:
    frames = next(iter_months(1, 5000, seed=3)).frames()
    df = frames["subscriptions"]
    for name in ("usage_agg_30d", "payments_agg_90d", "support_agg_90d", "labels"):
        df = df.merge(frames[name], on="user_id")
    x = df[data_model.FEATURES].copy()
    for c in data_model.FLAG_FEATURES:
        x[c] = x[c].map({True: 1.0, False: 0.0}).fillna(-1.0)
    x = pd.get_dummies(x, columns=data_model.CATEGORICAL_FEATURES, dtype=float)
    y = df[data_model.LABEL].astype(int)
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    rf = RandomForestClassifier(n_estimators=100, min_samples_leaf=5, random_state=0, n_jobs=-1).fit(x_tr, y_tr)
    auc = roc_auc_score(y_va, rf.predict_proba(x_va)[:, 1])
    assert auc > 0.75, f"validation AUC {auc:.3f}"


# ---- planted drift ---------------------------------------------------------------------


def _columns_equal(a: Path, b: Path, skip: set[str]) -> list[str]:
    """Names of the (table.column)s that differ between two month dirs, ignoring `skip`."""
    diff = []
    for t in data_model.SOURCE_TABLES:
        ra, rb = read_raw(a, t), read_raw(b, t)
        diff += [f"{t.name}.{c}" for c in t.column_names if c not in skip and not ra[c].equals(rb[c])]
    return diff


def test_numeric_drift_moves_only_planted_columns(dirs: list[Path], tmp_path: Path) -> None:
    drifted = _generate(tmp_path, "num", parse_drift_option("watch_hours_30d*0.6,rebuffer_events_7d+3@1"))
    assert file_bytes(drifted[0]) == file_bytes(dirs[0])  # month 0 untouched
    assert _columns_equal(dirs[1], drifted[1], skip={"churn_label"}) == [
        "usage_agg_30d.watch_hours_30d",
        "usage_agg_30d.rebuffer_events_7d",
    ]
    base, new = merged(dirs[1]), merged(drifted[1])
    assert new["watch_hours_30d"].mean() / base["watch_hours_30d"].mean() == pytest.approx(0.6, abs=0.005)
    assert np.allclose(new["watch_hours_30d"], base["watch_hours_30d"] * 0.6, atol=1e-4)
    assert (new["rebuffer_events_7d"] - base["rebuffer_events_7d"] == 3).all()
    assert 0.22 <= new["churn_label"].mean() <= 0.30  # churn rate held unless churn_rate is given


def test_categorical_drift_hits_target_shares(dirs: list[Path], tmp_path: Path) -> None:
    spec = parse_drift_option("net_service=Fiber optic:0.7,contract_type=Two year:0.5@1")
    drifted = _generate(tmp_path, "cat", spec)
    base, new = merged(dirs[1]), merged(drifted[1])
    net = new["net_service"].value_counts(normalize=True)
    assert net["Fiber optic"] == pytest.approx(0.7, abs=1.5 / USERS)
    old = base["net_service"].value_counts()
    assert net["DSL"] / net["No"] == pytest.approx(old["DSL"] / old["No"], rel=0.02)  # remainder in proportion
    assert new["contract_type"].value_counts(normalize=True)["Two year"] == pytest.approx(0.5, abs=1.5 / USERS)
    plan_cols = {"plan_stream_tv", "plan_stream_movies", "churn_label"}
    assert _columns_equal(dirs[1], drifted[1], skip=plan_cols) == [
        "subscriptions.contract_type",
        "subscriptions.net_service",
    ]
    raw = read_raw(drifted[1], data_model.SUBSCRIPTIONS)
    raw_base = read_raw(dirs[1], data_model.SUBSCRIPTIONS)
    no_net = raw["net_service"] == "No"
    kept = no_net == (raw_base["net_service"] == "No")
    for c in ("plan_stream_tv", "plan_stream_movies"):
        assert ((raw[c] == "") == no_net).all()
        assert raw.loc[kept, c].equals(raw_base.loc[kept, c])


def test_drift_window_and_churn_rate(dirs: list[Path], tmp_path: Path) -> None:
    drifted = _generate(tmp_path, "win", parse_drift_option("skips_7d*2,churn_rate=0.45@1-1"), months=3)
    assert file_bytes(drifted[2]) == file_bytes(dirs[2])  # drift ended after month 1
    new = merged(drifted[1])
    assert new["churn_label"].mean() == pytest.approx(0.45, abs=0.04)
    assert _columns_equal(dirs[1], drifted[1], skip={"churn_label"}) == ["usage_agg_30d.skips_7d"]


def test_concept_drift_changes_labels_only(dirs: list[Path], tmp_path: Path) -> None:
    """concept=…: every feature file byte-identical, labels re-ranked inside the segment only, so a
    model of month 0 loses accuracy there while data drift has nothing to see."""
    drifted = _generate(tmp_path, "concept", parse_drift_option("concept=contract_type:Month-to-month@1"))
    assert file_bytes(drifted[0]) == file_bytes(dirs[0])
    assert _columns_equal(dirs[1], drifted[1], skip=set()) == ["labels.churn_label"]
    for table in data_model.SOURCE_TABLES:
        if table is not data_model.LABELS:
            assert (drifted[1] / table.file_name).read_bytes() == (dirs[1] / table.file_name).read_bytes()
    base, new = merged(dirs[1]), merged(drifted[1])
    assert 0.22 <= new["churn_label"].mean() <= 0.30  # the churn rate is kept
    segment = base["contract_type"] == "Month-to-month"
    # inside the segment the old rule now points the wrong way: who churned before mostly stays
    old_rate, new_rate = (df.loc[segment, "churn_label"].mean() for df in (base, new))
    agree_in = (base.loc[segment, "churn_label"] == new.loc[segment, "churn_label"]).mean()
    agree_out = (base.loc[~segment, "churn_label"] == new.loc[~segment, "churn_label"]).mean()
    assert agree_out > agree_in + 0.1, (agree_in, agree_out)
    assert abs(new_rate - old_rate) < 0.1


def test_keep_churn_model_is_a_pure_covariate_shift() -> None:
    """keep_churn_model: a drifted month's labels come from the undrifted month's churn model —
    the same intercept — so only the features moved (the churn rate follows them)."""
    from streamflow.seeds import generator as g
    from streamflow.seeds.calibration import CHURN_RATE

    spec = parse_drift_option("watch_hours_30d*0.6,keep_churn_model@1")
    pop = g._draw_population(SEED, USERS, date(2024, 1, 31))
    base = g._month_features(pop, SEED, 1)
    active = pop.months_active0 + 1
    intercept = g._solve_intercept(g._logit(base, pop, active), CHURN_RATE)
    z = g._logit(g._apply_drift(base, pop, spec, SEED), pop, active) + intercept
    expected = g._rng(SEED, "churn_label", 1).random(USERS) < 1.0 / (1.0 + np.exp(-z))
    kept = next(m for m in iter_months(2, USERS, SEED, drift=spec) if m.index == 1)
    assert kept.tables["labels"]["churn_label"].to_numpy().tolist() == expected.tolist()
    resolved = next(m for m in iter_months(2, USERS, SEED, drift=DriftSpec(spec.columns)) if m.index == 1)
    assert resolved.tables["labels"]["churn_label"].to_numpy().mean() == pytest.approx(CHURN_RATE, abs=0.02)
    assert expected.mean() > CHURN_RATE + 0.02  # less watching → more churn under the same model


def test_fee_drift_feeds_total_paid(dirs: list[Path], tmp_path: Path) -> None:
    drifted = _generate(tmp_path, "fee", DriftSpec({"monthly_fee": NumericDrift(scale=1.2)}, from_month=1))
    base, new = merged(dirs[1]), merged(drifted[1])
    assert np.allclose(new["monthly_fee"], np.round(base["monthly_fee"] * 1.2 * 20) / 20, atol=1e-9)
    paid_before = merged(dirs[0])["total_paid"]
    assert np.allclose(new["total_paid"], paid_before + new["monthly_fee"], atol=0.011)


def test_drift_must_start_inside_generated_months(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="drift starts at month 2"):
        _generate(tmp_path, "late", parse_drift_option("skips_7d+1@2"), months=2)


# ---- parse_drift_option ------------------------------------------------------------------


def test_parse_numeric_items() -> None:
    spec = parse_drift_option("watch_hours_30d*0.6,rebuffer_events_7d+3@1")
    assert spec == DriftSpec(
        {"watch_hours_30d": NumericDrift(scale=0.6), "rebuffer_events_7d": NumericDrift(shift=3.0)}, from_month=1
    )
    spec = parse_drift_option(" monthly_fee * 1.1 - 2 , skips_7d-1 @ 2-4 ")
    assert spec.columns["monthly_fee"] == NumericDrift(scale=1.1, shift=-2.0)
    assert spec.columns["skips_7d"] == NumericDrift(shift=-1.0)
    assert (spec.from_month, spec.to_month) == (2, 4)
    assert spec.applies(2) and spec.applies(4) and not spec.applies(5) and not spec.applies(1)
    assert parse_drift_option("skips_7d+1").from_month == 1  # default: from month 1 on


def test_parse_categorical_and_churn_rate() -> None:
    spec = parse_drift_option("net_service=fiber optic:0.7/DSL:0.2,churn_rate=0.35@3")
    assert spec.columns["net_service"] == {"Fiber optic": 0.7, "DSL": 0.2}
    assert spec.churn_rate == 0.35 and spec.from_month == 3 and spec.to_month is None


@pytest.mark.parametrize(
    "text",
    [
        "watch_hours_30d*0.6,rebuffer_events_7d+3@1",
        "monthly_fee*1.1-2@2-4",
        "net_service=Fiber optic:0.7/DSL:0.2/No:0.1,churn_rate=0.3@1",
        "skips_7d+0@0",
        "concept=contract_type:Month-to-month@1",
        "watch_hours_30d*0.9,concept=net_service:Fiber optic:0.75@2-3",
        "watch_hours_30d*0.6,keep_churn_model@1",
    ],
)
def test_to_option_round_trips(text: str) -> None:
    spec = parse_drift_option(text)
    assert parse_drift_option(spec.to_option()) == spec


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty drift option"),
        ("   ", "empty drift option"),
        ("bogus_col*2", "unknown drift column 'bogus_col'"),
        ("months_active+1", "unknown drift column 'months_active'"),
        ("watch_hours_30d", "bad drift item"),
        ("watch_hours_30d*", "bad drift item"),
        ("watch_hours_30d*abc", "bad drift item"),
        ("watch_hours_30d/2", "bad drift item"),
        ("net_service*2", "categorical columns take a mapping"),
        ("skips_7d=3", "'=' is for categorical columns"),
        ("net_service=Cable:0.5", "unknown category 'Cable'"),
        ("net_service=Fiber optic", "expected CATEGORY:SHARE"),
        ("net_service=Fiber optic:x", "is not a number"),
        ("net_service=Fiber optic:0.7/DSL:0.5", "sum to 1.2 > 1"),
        ("net_service=Fiber optic:0.5/DSL:0.2/No:0.1", "must sum to 1"),
        ("net_service=DSL:0.5/dsl:0.2", "given twice"),
        ("watch_hours_30d*0.6@x", "bad month range"),
        ("watch_hours_30d*0.6@1@2", "bad month range"),
        ("watch_hours_30d*0.6@3-1", "before from_month"),
        ("watch_hours_30d*0.6,watch_hours_30d+1", "given twice"),
        ("watch_hours_30d*0.6,,skips_7d+1", "empty item"),
        ("churn_rate=1.5", "churn_rate must be in"),
        ("churn_rate=0.3,churn_rate=0.4", "given twice"),
        ("concept=contract_type", "expected concept=COLUMN:CATEGORY[:STRENGTH]"),
        ("concept=skips_7d:3", "expected concept=COLUMN:CATEGORY[:STRENGTH]"),
        ("concept=contract_type:Weekly", "unknown contract_type 'Weekly'"),
        ("concept=contract_type:Two year:0", "strength must be in (0, 1]"),
        ("concept=contract_type:Two year:1.5", "strength must be in (0, 1]"),
        ("concept=net_service:DSL,concept=net_service:No", "concept given twice"),
        ("skips_7d+1,keep_churn_model,churn_rate=0.3", "exclude each other"),
        ("skips_7d+1,keep_churn_model,keep_churn_model", "keep_churn_model given twice"),
    ],
)
def test_parse_rejects_bad_text(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=re.escape(match)):
        parse_drift_option(text)


def test_drift_spec_validation() -> None:
    with pytest.raises(ValueError, match="numeric columns take a NumericDrift"):
        DriftSpec({"watch_hours_30d": {"a": 1.0}})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="scale >= 0"):
        NumericDrift(scale=-1.0)
    with pytest.raises(ValueError, match="at least one column, a churn_rate or a concept"):
        DriftSpec({})
    with pytest.raises(ValueError, match="from_month must be >= 0"):
        DriftSpec({"skips_7d": NumericDrift(shift=1)}, from_month=-1)
