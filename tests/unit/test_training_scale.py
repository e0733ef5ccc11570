"""Training and monitoring at scale, the pure parts: the bounded forest's parameters and run
params, the forest fitted in steps (identical to one fit), the vectorised ONNX forest
attributes (identical to skl2onnx's), and the monitor's stated sample. Data from the project's
generator."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from onnx import helper

from streamflow.core.data_model import LABEL
from streamflow.core.progress import ProgressEvent
from streamflow.core.settings import Settings
from streamflow.monitoring.drift import sample_months, sample_positions
from streamflow.seeds.generator import generate_months
from streamflow.training import onnx_export
from streamflow.training.pipeline import build_pipeline, forest_params
from streamflow.training.train import Split, fit_pipeline, forest_run_params, split_dataset
from tests.helpers.data import month_frame


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    seeds = tmp_path_factory.mktemp("seeds")
    generate_months(seeds, months=1, users=3000, seed=11)
    return month_frame(seeds / "month_000")


def settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(home=tmp_path, **kw)  # type: ignore[arg-type]


def test_defaults_bound_the_trees(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert s.n_estimators == 300 and s.min_samples_leaf > 1 and s.max_samples is not None


def test_max_samples_applies_only_above_the_cap(tmp_path: Path) -> None:
    s = settings(tmp_path, max_samples=1000, min_samples_leaf=7, max_depth=12)
    assert forest_params(s, 999).max_samples is None
    assert forest_params(s, 1000).max_samples is None
    assert forest_params(s, 1001).max_samples == 1000
    assert forest_params(s, None).max_samples is None
    p = forest_params(s, 5000)
    assert (p.min_samples_leaf, p.max_depth, p.n_estimators) == (7, 12, s.n_estimators)
    logged = forest_run_params(p, s, 5000)
    assert logged["max_samples"] == 1000 and logged["bootstrap_rows_per_tree"] == 1000 and logged["subsampled"]
    unsub = forest_run_params(forest_params(s, 800), s, 800)
    assert unsub["max_samples"] == "None" and unsub["bootstrap_rows_per_tree"] == 800
    assert unsub["max_samples_setting"] == 1000 and unsub["subsampled"] is False
    forest = build_pipeline(s, n_train=5000).steps[-1][1]
    assert (forest.max_samples, forest.min_samples_leaf, forest.max_depth) == (1000, 7, 12)


@pytest.mark.parametrize("max_samples", [None, 1500])
def test_forest_fitted_in_steps_is_the_forest_of_one_fit(
    month: pd.DataFrame, tmp_path: Path, max_samples: int | None
) -> None:
    s = settings(tmp_path, n_estimators=23, fit_chunk_trees=5, min_samples_leaf=5, max_samples=max_samples)
    split = split_dataset(month, s.random_seed)
    events: list[ProgressEvent] = []
    pipe, metrics, _ = fit_pipeline(split, s, events.append)
    once = build_pipeline(s, n_train=len(split.X_train)).fit(split.X_train, split.y_train)
    stepped, single = pipe.steps[-1][1], once.steps[-1][1]
    assert len(stepped.estimators_) == len(single.estimators_) == 23
    assert stepped.n_estimators == 23 and not stepped.warm_start
    for a, b in zip(stepped.estimators_, single.estimators_, strict=True):
        assert np.array_equal(a.tree_.threshold, b.tree_.threshold)
        assert np.array_equal(a.tree_.feature, b.tree_.feature)
        assert np.array_equal(a.tree_.value, b.tree_.value)
    np.testing.assert_allclose(pipe.predict_proba(split.X_val), once.predict_proba(split.X_val), rtol=0, atol=1e-12)
    trees = [e.done for e in events if e.unit == "trees"]
    assert trees == [0, 5, 10, 15, 20, 23] and all(e.total == 23 for e in events if e.unit == "trees")
    assert 0.5 < metrics["val_auc"] <= 1.0


def _skl2onnx_forest_node(pipe: object, X: pd.DataFrame) -> dict[str, object]:
    """The TreeEnsembleClassifier attributes skl2onnx itself writes for the whole forest."""
    import skl2onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    model = copy.deepcopy(pipe)
    onnx_export._patch_string_imputers(model)
    strings = onnx_export._string_columns(X)
    types = [(c, StringTensorType([None, 1]) if c in strings else FloatTensorType([None, 1])) for c in X.columns]
    onx = skl2onnx.to_onnx(
        model,
        initial_types=types,
        options={id(model.steps[-1][1]): {"zipmap": False}},  # type: ignore[attr-defined]
        target_opset=onnx_export.TARGET_OPSET,
    )
    node = next(n for n in onx.graph.node if n.op_type == "TreeEnsembleClassifier")
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def test_vectorised_forest_attributes_equal_skl2onnx(month: pd.DataFrame, tmp_path: Path) -> None:
    import onnx

    s = settings(tmp_path, n_estimators=12, min_samples_leaf=3, max_samples=None)
    split: Split = split_dataset(month, s.random_seed)
    pipe = build_pipeline(s, n_jobs=1).fit(split.X_train, split.y_train)
    expected = _skl2onnx_forest_node(pipe, split.X_val)
    graph = onnx.load_from_string(onnx_export.export_onnx(pipe, split.X_val)).graph
    nodes = [n for n in graph.node if n.op_type == "TreeEnsembleClassifier"]
    assert len(nodes) == 1
    got = {a.name: helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        assert list(got[name]) == list(value) if isinstance(value, list) else got[name] == value, name
    # and the pipeline is not modified by the export
    assert len(pipe.steps[-1][1].estimators_) == 12


def test_forest_thresholds_keep_scikit_learns_decisions() -> None:
    rng = np.random.default_rng(3)
    t = np.concatenate([rng.normal(size=2000) * 10.0 ** rng.integers(-8, 8, 2000), [0.5, 1.0, -0.0, 1e-40]])
    adjusted = onnx_export.forest_thresholds(t)
    x = np.concatenate([t.astype(np.float32), np.nextafter(t.astype(np.float32), np.float32(np.inf))])
    x = np.concatenate([x, np.nextafter(t.astype(np.float32), np.float32(-np.inf))])
    for i, th in enumerate(t):
        xs = x[[i, i + len(t), i + 2 * len(t)]]
        assert np.array_equal(xs.astype(np.float64) <= th, xs <= adjusted[i]), th


def test_sample_is_stated_stratified_and_deterministic(month: pd.DataFrame) -> None:
    pos, sample = sample_positions(month, 1000, seed=42)
    assert pos is not None and len(pos) == 1000 and np.all(np.diff(pos) > 0)
    assert (sample.rows, sample.of, sample.method, sample.sampled) == (1000, 3000, f"stratified by {LABEL}", True)
    rate, sampled_rate = month[LABEL].mean(), month[LABEL].iloc[pos].mean()
    assert abs(sampled_rate - rate) <= 1 / 1000  # each class keeps its share (largest remainders)
    again, _ = sample_positions(month, 1000, seed=42)
    other, _ = sample_positions(month, 1000, seed=7)
    assert np.array_equal(pos, again) and not np.array_equal(pos, other)
    unlabelled, s2 = sample_positions(month.drop(columns=[LABEL]), 1000, seed=42)
    assert unlabelled is not None and len(unlabelled) == 1000 and s2.method == "uniform"
    whole, s3 = sample_positions(month, 3000, seed=42)
    assert whole is None and (s3.rows, s3.of, s3.method, s3.sampled) == (3000, 3000, "all rows", False)
    assert sample_positions(month, None, seed=42)[0] is None


def test_sample_months_describes_both_months(month: pd.DataFrame) -> None:
    ref, cur, sample, ref_pos, cur_pos = sample_months(month, month.head(800), 1000, 5)
    assert len(ref) == 1000 and len(cur) == 800 and ref_pos is not None and cur_pos is None
    assert list(ref.index) == list(range(1000))
    d = sample.as_dict()
    assert d["limit"] == 1000 and d["seed"] == 5 and d["sampled"] is True
    assert d["reference"] == {"rows": 1000, "of": 3000, "method": f"stratified by {LABEL}"}
    assert d["current"] == {"rows": 800, "of": 800, "method": "all rows"}
    assert "1,000 of 3,000" in sample.describe() and "seed 5" in sample.describe()
