-- StreamFlow schema v1: the course's live tables, per-month snapshots (labels included)
-- and bookkeeping. Applied once by streamflow.db.schema.migrate().

CREATE TABLE IF NOT EXISTS users (
    user_id         TEXT PRIMARY KEY,
    signup_date     DATE NOT NULL,
    user_gender     TEXT NOT NULL,
    user_is_senior  BOOLEAN NOT NULL,
    has_family      BOOLEAN NOT NULL,
    has_dependents  BOOLEAN NOT NULL
);

CREATE TABLE IF NOT EXISTS subscriptions (
    user_id            TEXT PRIMARY KEY REFERENCES users (user_id),
    months_active      BIGINT NOT NULL CHECK (months_active >= 0),
    plan_stream_tv     BOOLEAN,
    plan_stream_movies BOOLEAN,
    contract_type      TEXT NOT NULL,
    paperless_billing  BOOLEAN NOT NULL,
    monthly_fee        DOUBLE PRECISION NOT NULL CHECK (monthly_fee >= 0),
    total_paid         DOUBLE PRECISION CHECK (total_paid >= 0),
    net_service        TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS usage_agg_30d (
    user_id             TEXT PRIMARY KEY REFERENCES users (user_id),
    watch_hours_30d     DOUBLE PRECISION NOT NULL CHECK (watch_hours_30d >= 0),
    avg_session_mins_7d DOUBLE PRECISION NOT NULL CHECK (avg_session_mins_7d >= 0),
    unique_devices_30d  BIGINT NOT NULL CHECK (unique_devices_30d >= 0),
    skips_7d            BIGINT NOT NULL CHECK (skips_7d >= 0),
    rebuffer_events_7d  BIGINT NOT NULL CHECK (rebuffer_events_7d >= 0)
);

CREATE TABLE IF NOT EXISTS payments_agg_90d (
    user_id             TEXT PRIMARY KEY REFERENCES users (user_id),
    failed_payments_90d BIGINT NOT NULL CHECK (failed_payments_90d >= 0)
);

CREATE TABLE IF NOT EXISTS support_agg_90d (
    user_id                       TEXT PRIMARY KEY REFERENCES users (user_id),
    support_tickets_90d           BIGINT NOT NULL CHECK (support_tickets_90d >= 0),
    ticket_avg_resolution_hrs_90d DOUBLE PRECISION NOT NULL CHECK (ticket_avg_resolution_hrs_90d >= 0)
);

CREATE TABLE IF NOT EXISTS labels (
    user_id     TEXT PRIMARY KEY REFERENCES users (user_id),
    churn_label BOOLEAN NOT NULL
);

-- Snapshots: one row per (user_id, as_of). as_of is the month's date; Feast reads these
-- tables as offline sources with timestamp field as_of.
CREATE TABLE IF NOT EXISTS subscriptions_profile_snapshots (
    user_id            TEXT NOT NULL,
    as_of              TIMESTAMPTZ NOT NULL,
    months_active      BIGINT NOT NULL,
    monthly_fee        DOUBLE PRECISION NOT NULL,
    paperless_billing  BOOLEAN NOT NULL,
    plan_stream_tv     BOOLEAN,
    plan_stream_movies BOOLEAN,
    net_service        TEXT NOT NULL,
    contract_type      TEXT NOT NULL,
    total_paid         DOUBLE PRECISION,
    PRIMARY KEY (user_id, as_of)
);

CREATE TABLE IF NOT EXISTS usage_agg_30d_snapshots (
    user_id             TEXT NOT NULL,
    as_of               TIMESTAMPTZ NOT NULL,
    watch_hours_30d     DOUBLE PRECISION NOT NULL,
    avg_session_mins_7d DOUBLE PRECISION NOT NULL,
    unique_devices_30d  BIGINT NOT NULL,
    skips_7d            BIGINT NOT NULL,
    rebuffer_events_7d  BIGINT NOT NULL,
    PRIMARY KEY (user_id, as_of)
);

CREATE TABLE IF NOT EXISTS payments_agg_90d_snapshots (
    user_id             TEXT NOT NULL,
    as_of               TIMESTAMPTZ NOT NULL,
    failed_payments_90d BIGINT NOT NULL,
    PRIMARY KEY (user_id, as_of)
);

CREATE TABLE IF NOT EXISTS support_agg_90d_snapshots (
    user_id                       TEXT NOT NULL,
    as_of                         TIMESTAMPTZ NOT NULL,
    support_tickets_90d           BIGINT NOT NULL,
    ticket_avg_resolution_hrs_90d DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (user_id, as_of)
);

-- Labels are kept per month: the course overwrote them, which silently zeroes target drift.
CREATE TABLE IF NOT EXISTS labels_snapshots (
    user_id     TEXT NOT NULL,
    as_of       TIMESTAMPTZ NOT NULL,
    churn_label BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, as_of)
);

CREATE INDEX IF NOT EXISTS subscriptions_profile_snapshots_as_of ON subscriptions_profile_snapshots (as_of);
CREATE INDEX IF NOT EXISTS usage_agg_30d_snapshots_as_of ON usage_agg_30d_snapshots (as_of);
CREATE INDEX IF NOT EXISTS payments_agg_90d_snapshots_as_of ON payments_agg_90d_snapshots (as_of);
CREATE INDEX IF NOT EXISTS support_agg_90d_snapshots_as_of ON support_agg_90d_snapshots (as_of);
CREATE INDEX IF NOT EXISTS labels_snapshots_as_of ON labels_snapshots (as_of);

-- One row per ingestion (audit) and per online-store materialization (the API's
-- in-process feature mirror reloads when max(materialized_at) changes).
CREATE TABLE IF NOT EXISTS ingestions (
    id          BIGSERIAL PRIMARY KEY,
    as_of       DATE NOT NULL,
    source_dir  TEXT NOT NULL,
    row_counts  JSONB NOT NULL,
    ingested_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS feature_materializations (
    id              BIGSERIAL PRIMARY KEY,
    as_of           DATE NOT NULL,
    materialized_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
