"""The course data model: the six monthly CSV files, their columns and types, and the
14 model features. Every other module (ingestion, generator, Feast, training,
monitoring, serving) reads its column lists from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ColumnType = Literal["text", "date", "bool", "int", "float"]


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    nullable: bool = False
    non_negative: bool = False


@dataclass(frozen=True)
class SourceTable:
    """One CSV file of a month, loaded into the live table of the same name."""

    name: str
    columns: tuple[Column, ...]
    snapshot_table: str | None  # where its rows are stamped per as_of, if anywhere

    @property
    def file_name(self) -> str:
        return f"{self.name}.csv"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def snapshot_columns(self) -> list[str]:
        """What its snapshot table keeps per (user_id, as_of): every column but user_id."""
        return [c.name for c in self.columns if c.name != USER_ID.name]


USER_ID = Column("user_id", "text")

USERS = SourceTable(
    "users",
    (
        USER_ID,
        Column("signup_date", "date"),
        Column("user_gender", "text"),
        Column("user_is_senior", "bool"),
        Column("has_family", "bool"),
        Column("has_dependents", "bool"),
    ),
    snapshot_table=None,
)
SUBSCRIPTIONS = SourceTable(
    "subscriptions",
    (
        USER_ID,
        Column("months_active", "int", non_negative=True),
        # Empty for users with net_service = "No": valid, stored as NULL.
        Column("plan_stream_tv", "bool", nullable=True),
        Column("plan_stream_movies", "bool", nullable=True),
        Column("contract_type", "text"),
        Column("paperless_billing", "bool"),
        Column("monthly_fee", "float", non_negative=True),
        # Never blank in the course data (0.0 for brand-new users); accepted as NULL.
        Column("total_paid", "float", nullable=True, non_negative=True),
        Column("net_service", "text"),
    ),
    snapshot_table="subscriptions_profile_snapshots",
)
USAGE = SourceTable(
    "usage_agg_30d",
    (
        USER_ID,
        Column("watch_hours_30d", "float", non_negative=True),
        Column("avg_session_mins_7d", "float", non_negative=True),
        Column("unique_devices_30d", "int", non_negative=True),
        Column("skips_7d", "int", non_negative=True),
        Column("rebuffer_events_7d", "int", non_negative=True),
    ),
    snapshot_table="usage_agg_30d_snapshots",
)
PAYMENTS = SourceTable(
    "payments_agg_90d",
    (USER_ID, Column("failed_payments_90d", "int", non_negative=True)),
    snapshot_table="payments_agg_90d_snapshots",
)
SUPPORT = SourceTable(
    "support_agg_90d",
    (
        USER_ID,
        Column("support_tickets_90d", "int", non_negative=True),
        Column("ticket_avg_resolution_hrs_90d", "float", non_negative=True),
    ),
    snapshot_table="support_agg_90d_snapshots",
)
LABELS = SourceTable(
    "labels",
    (USER_ID, Column("churn_label", "bool")),
    snapshot_table="labels_snapshots",
)

# Order matters: users first (foreign keys), labels last.
SOURCE_TABLES: tuple[SourceTable, ...] = (USERS, SUBSCRIPTIONS, USAGE, PAYMENTS, SUPPORT, LABELS)
SOURCE_BY_NAME = {t.name: t for t in SOURCE_TABLES}
SNAPSHOT_TABLES: tuple[str, ...] = tuple(t.snapshot_table for t in SOURCE_TABLES if t.snapshot_table)

# ---- Feature views (Feast) and the 14 model features ------------------------------
FEATURE_VIEWS: dict[str, tuple[str, list[str]]] = {
    # feature view name -> (snapshot table, features)
    "subs_profile_fv": (
        "subscriptions_profile_snapshots",
        ["months_active", "monthly_fee", "paperless_billing", "plan_stream_tv", "plan_stream_movies", "net_service"],
    ),
    "usage_agg_30d_fv": (
        "usage_agg_30d_snapshots",
        ["watch_hours_30d", "avg_session_mins_7d", "unique_devices_30d", "skips_7d", "rebuffer_events_7d"],
    ),
    "payments_agg_90d_fv": ("payments_agg_90d_snapshots", ["failed_payments_90d"]),
    "support_agg_90d_fv": ("support_agg_90d_snapshots", ["support_tickets_90d", "ticket_avg_resolution_hrs_90d"]),
}

FEATURE_REFS: list[str] = [f"{fv}:{f}" for fv, (_, feats) in FEATURE_VIEWS.items() for f in feats]
FEATURES: list[str] = [ref.split(":", 1)[1] for ref in FEATURE_REFS]

# Canonical dtypes of the point-in-time dataset and of every frame the model sees.
# Booleans are float64 (1.0 / 0.0 / NaN) so that nullable plan flags survive every
# hop (Feast offline int/bool, online store, MLflow signature, ONNX) unchanged.
CATEGORICAL_FEATURES: list[str] = ["net_service"]
FLAG_FEATURES: list[str] = ["paperless_billing", "plan_stream_tv", "plan_stream_movies"]
INT_FEATURES: list[str] = [
    "months_active",
    "unique_devices_30d",
    "skips_7d",
    "rebuffer_events_7d",
    "failed_payments_90d",
    "support_tickets_90d",
]
FLOAT_FEATURES: list[str] = [
    "monthly_fee",
    "watch_hours_30d",
    "avg_session_mins_7d",
    "ticket_avg_resolution_hrs_90d",
]
# Imputed as numbers by the model pipeline; compared as numerical columns by the drift report.
NUMERIC_FEATURES: list[str] = [*INT_FEATURES, *FLOAT_FEATURES]
FEATURE_DTYPES: dict[str, str] = {
    **{c: "object" for c in CATEGORICAL_FEATURES},
    **{c: "float64" for c in FLAG_FEATURES},
    **{c: "int64" for c in INT_FEATURES},
    **{c: "float64" for c in FLOAT_FEATURES},
}
assert set(FEATURE_DTYPES) == set(FEATURES) and len(FEATURES) == 14

LABEL = "churn_label"
ENTITY = "user_id"
TIMESTAMP = "event_timestamp"
