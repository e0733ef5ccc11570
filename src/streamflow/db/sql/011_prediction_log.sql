-- Prediction log (issue 9): every prediction served by POST /predict and /predict/batch, written
-- off the request path by the API's background writer (COPY, streamflow.serving.prediction_log).
-- Applied once by streamflow.db.schema.migrate(). No percent signs in this file: it is executed
-- through a driver that parses them.
--
-- One row per prediction: a batch request gives one row per known user_id, all with the request
-- id of the batch (so request_id is not unique, and no key is declared: a unique index would be
-- maintained on every row for nothing the readers need).
--
-- Partitioned by served_at, one partition per UTC day (predictions_pYYYYMMDD), created on demand
-- by streamflow_prediction_partition(day): retention (`streamflow predictions prune`) is a DROP
-- of whole partitions, never a DELETE that bloats the table and has to be vacuumed. A day, not a
-- month: `prune --older-than DAYS` then drops exactly the days asked for, and at a few thousand
-- predictions per second a month would be a single ~10-billion-row table.
--
-- Indexes: none on the write path but one BRIN index on as_of. The monthly join with the labels
-- (realized performance of what was served, streamflow.monitoring.performance) selects the rows
-- whose features are of one as_of; rows arrive in served_at order and as_of only changes when a
-- month is materialized, so as_of is physically clustered and a BRIN index (a few pages per
-- partition, no per-row maintenance to speak of) lets that query skip the other months' blocks.
-- served_at needs no index: the partitions are the index (pruning, first/last per partition).
CREATE TABLE IF NOT EXISTS predictions (
    request_id        UUID NOT NULL,
    served_at         TIMESTAMPTZ NOT NULL,
    user_id           TEXT NOT NULL,
    model_name        TEXT NOT NULL,
    model_version     TEXT NOT NULL,
    as_of             DATE,              -- as_of of the online features used (NULL: unknown)
    churn_probability DOUBLE PRECISION NOT NULL CHECK (churn_probability >= 0 AND churn_probability <= 1),
    prediction        SMALLINT NOT NULL CHECK (prediction IN (0, 1))
) PARTITION BY RANGE (served_at);

CREATE INDEX IF NOT EXISTS predictions_as_of_brin ON predictions USING brin (as_of);

-- The partition of one UTC day, created if missing; returns its name. Serialized by an advisory
-- lock so that several API workers creating the same day never collide.
CREATE OR REPLACE FUNCTION streamflow_prediction_partition(day date) RETURNS text
LANGUAGE plpgsql AS $fn$
DECLARE
  name text := 'predictions_p' || to_char(day, 'YYYYMMDD');
  lower_bound text := to_char(day, 'YYYY-MM-DD') || ' 00:00:00+00';
  upper_bound text := to_char(day + 1, 'YYYY-MM-DD') || ' 00:00:00+00';
BEGIN
  IF to_regclass('public.' || quote_ident(name)) IS NULL THEN
    PERFORM pg_advisory_xact_lock(hashtext('streamflow_prediction_partition'));
    EXECUTE 'CREATE TABLE IF NOT EXISTS ' || quote_ident(name) || ' PARTITION OF predictions FOR VALUES FROM ('
         || quote_literal(lower_bound) || ') TO (' || quote_literal(upper_bound) || ')';
  END IF;
  RETURN name;
END
$fn$;
