-- Model-quality monitoring (issue 9): the model's measured and estimated performance per
-- month, and the history of the registry alias (which version served which month).
-- Applied once by streamflow.db.schema.migrate().

-- One row per (model, version, month, source, population, metric). source: 'realized' (scored
-- against the month's labels) or 'estimated' (CBPE, no labels needed). population: 'month' =
-- every user of the month that has a label; 'unseen' = the month's users the model was not
-- trained on (the population its validation AUC and CBPE calibration describe); 'served' is
-- reserved for the prediction log. value is NULL when the metric is undefined (e.g. AUC on a
-- single class, an empty calibration bin). Re-measuring replaces the
-- (model_name, model_version, as_of, source, population) group in one transaction.
-- model_name: versions are numbered per registered model, so the name is part of the key.
CREATE TABLE IF NOT EXISTS model_performance (
    model_name    TEXT NOT NULL,
    model_version TEXT NOT NULL,
    as_of         DATE NOT NULL,
    source        TEXT NOT NULL CHECK (source IN ('realized', 'estimated')),
    population    TEXT NOT NULL CHECK (population IN ('month', 'unseen', 'served')),
    metric        TEXT NOT NULL,
    value         DOUBLE PRECISION,
    computed_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (model_name, model_version, as_of, source, population, metric)
);

CREATE INDEX IF NOT EXISTS model_performance_as_of ON model_performance (as_of);

-- Every move of a registry alias made by streamflow.training.registry.promote(), written in
-- the same step as the move: "which version was in production when month D was ingested" is
-- the last row with set_at <= ingestions.ingested_at.
CREATE TABLE IF NOT EXISTS model_alias_history (
    id               BIGSERIAL PRIMARY KEY,
    model_name       TEXT NOT NULL,
    alias            TEXT NOT NULL,
    version          TEXT NOT NULL,
    previous_version TEXT,
    reason           TEXT NOT NULL,
    set_at           TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX IF NOT EXISTS model_alias_history_lookup ON model_alias_history (model_name, alias, set_at);
