"""The point-in-time dataset of one month: the 14 features of every user of that
snapshot (Feast offline retrieval) plus that month's own churn label.

A month's labels may arrive after its features (they are known only once the month is over):
``require_labels=False`` returns the features alone when the month has no labels yet."""

from __future__ import annotations

import logging
from datetime import date

import numpy as np
import pandas as pd
import sqlalchemy as sa

from streamflow.dates import as_of_timestamp, parse_as_of
from streamflow.db.engine import get_engine
from streamflow.errors import InputError
from streamflow.schema import CATEGORICAL_FEATURES, ENTITY, FEATURE_DTYPES, FEATURES, FLAG_FEATURES, LABEL, TIMESTAMP
from streamflow.settings import Settings

log = logging.getLogger(__name__)


class EmptySnapshotError(InputError, LookupError):
    """No snapshot rows exist for the requested as_of."""


class MissingLabelsError(EmptySnapshotError):
    """The month has features but no labels (yet)."""


def _to_flag(s: pd.Series) -> pd.Series:
    """bool / 'True' / 1 / None → 1.0 / 0.0 / NaN."""
    if s.dtype == "float64":
        return s
    mapping = {True: 1.0, False: 0.0, "True": 1.0, "False": 0.0, "true": 1.0, "false": 0.0}  # 1/0 hash as True/False
    return s.map(lambda v: np.nan if v is None or (isinstance(v, float) and np.isnan(v)) else mapping[v]).astype(
        "float64"
    )


def coerce_feature_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """Apply the canonical FEATURE_DTYPES (offline int32 / online int64 / nullable bools
    all end up identical), so one MLflow signature fits training and serving."""
    out = df.copy()
    for col in FEATURES:
        if col not in out.columns:
            continue
        if col in FLAG_FEATURES:
            out[col] = _to_flag(out[col])
        elif col in CATEGORICAL_FEATURES:
            out[col] = out[col].astype("object").where(out[col].notna(), None)
        else:
            out[col] = out[col].astype(FEATURE_DTYPES[col])
    return out


def snapshot_dates(settings: Settings) -> list[date]:
    with get_engine(settings).connect() as conn:
        rows = conn.execute(
            sa.text("SELECT DISTINCT as_of FROM subscriptions_profile_snapshots ORDER BY as_of")
        ).scalars()
        return [r.date() for r in rows]


def label_dates(settings: Settings) -> list[date]:
    """The as_of dates that have labels (a subset of :func:`snapshot_dates`)."""
    with get_engine(settings).connect() as conn:
        rows = conn.execute(sa.text("SELECT DISTINCT as_of FROM labels_snapshots ORDER BY as_of")).scalars()
        return [r.date() for r in rows]


def build_point_in_time_dataset(
    as_of: str | date, settings: Settings, with_labels: bool = True, *, require_labels: bool = True
) -> pd.DataFrame:
    """user_id, event_timestamp, the 14 features (FEATURE_DTYPES) and churn_label (0/1).

    A month without any label raises :class:`MissingLabelsError`, unless ``require_labels`` is
    False: the frame then has no ``churn_label`` column. A month whose labels cover only some of
    its users always raises (that is broken data, not labels still to come)."""
    from streamflow.db.roles import grant_feature_store_reads
    from streamflow.features.store import get_feature_store
    from streamflow.schema import FEATURE_REFS

    as_of_d = parse_as_of(as_of)
    ts = as_of_timestamp(as_of_d)
    engine = get_engine(settings)
    with engine.connect() as conn:
        entity_df = pd.read_sql(
            sa.text("SELECT user_id FROM subscriptions_profile_snapshots WHERE as_of = :ts ORDER BY user_id"),
            conn,
            params={"ts": ts},
        )
        labels = (
            pd.read_sql(
                sa.text("SELECT user_id, churn_label FROM labels_snapshots WHERE as_of = :ts"),
                conn,
                params={"ts": ts},
            )
            if with_labels
            else None
        )
    if entity_df.empty:
        known = ", ".join(str(d) for d in snapshot_dates(settings)) or "none"
        raise EmptySnapshotError(f"no snapshot found for as_of={as_of_d} (snapshots in the database: {known})")
    entity_df[TIMESTAMP] = pd.Timestamp(ts)
    grant_feature_store_reads(settings)  # Feast's role reads the snapshot tables (a no-op with one role)
    store = get_feature_store(settings)
    feats = store.get_historical_features(entity_df=entity_df, features=FEATURE_REFS).to_df()
    feats = feats.sort_values(ENTITY).reset_index(drop=True)
    feats[TIMESTAMP] = pd.to_datetime(feats[TIMESTAMP], utc=True)
    df = coerce_feature_dtypes(feats[[ENTITY, TIMESTAMP, *FEATURES]])
    if labels is not None:
        if labels.empty and not require_labels:
            log.info("event=dataset_built as_of=%s rows=%d labels=absent", as_of_d, len(df))
            return df
        if labels.empty:
            raise MissingLabelsError(f"no labels snapshot found for as_of={as_of_d} (its labels have not arrived)")
        df = df.merge(labels, on=ENTITY, how="left", validate="one_to_one")
        missing = int(df[LABEL].isna().sum())
        if missing:
            raise EmptySnapshotError(f"{missing} users of as_of={as_of_d} have no label in labels_snapshots")
        df[LABEL] = df[LABEL].astype(bool).astype("int64")
    log.info("event=dataset_built as_of=%s rows=%d", as_of_d, len(df))
    return df
