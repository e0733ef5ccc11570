"""What the online store must hold (every user's newest snapshot row) and frame comparison that
treats None and NaN as the same missing value: shared by the online-store tests."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import psycopg

from streamflow.core.data_model import ENTITY, FEATURE_VIEWS, FEATURES
from streamflow.core.settings import Settings
from streamflow.db.engine import libpq_url


def latest_snapshot_frame(settings: Settings) -> pd.DataFrame:
    """Every user's newest snapshot values of the 14 features: what the online store must hold."""
    with psycopg.connect(libpq_url(settings)) as conn:
        frame: pd.DataFrame | None = None
        for _view, (table, feats) in FEATURE_VIEWS.items():
            cols = ", ".join(feats)
            data = conn.execute(
                f"SELECT DISTINCT ON (user_id) user_id, {cols} FROM {table} ORDER BY user_id, as_of DESC"
            ).fetchall()
            part = pd.DataFrame(data, columns=[ENTITY, *feats])
            frame = part if frame is None else frame.merge(part, on=ENTITY)
    assert frame is not None
    return frame.sort_values(ENTITY).reset_index(drop=True)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def same_value(a: Any, b: Any) -> bool:
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    return bool(a == b)


def assert_frames_equal(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Every user of ``expected`` has the same 14 values in ``got`` (1 == 1.0 == True)."""
    got = got.set_index(ENTITY).loc[expected[ENTITY]]
    exp = expected.set_index(ENTITY)
    for f in FEATURES:
        bad = [u for u, a, b in zip(exp.index, got[f].tolist(), exp[f].tolist(), strict=True) if not same_value(a, b)]
        assert not bad, f"{f}: {len(bad)} users differ, e.g. {bad[:3]}"


def values_frame(values: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """user_id → {feature: value} (a direct lookup's answer) as a frame."""
    return pd.DataFrame([{ENTITY: u, **{f: v.get(f) for f in FEATURES}} for u, v in values.items()])
