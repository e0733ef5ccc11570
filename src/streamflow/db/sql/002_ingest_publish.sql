-- StreamFlow schema v2: the monthly data path (ingest → publish).
--
-- 1. Live tables record the as_of of each row, so an older month ingested after a newer one
--    never overwrites newer live rows (NULL = loaded before this migration: any month wins).
-- 2. The per-row foreign keys to users are replaced by a set-based check of the staged month
--    (streamflow.ingest.validation): every user_id of the five other files is in that month's
--    users.csv or already in users; nothing ever deletes users.
-- 3. feature_materializations records which ingestion each materialization covers, so a newer
--    ingestion marks the online store stale (streamflow status) until it is re-materialized.
-- 4. Snapshot tables are partitioned by as_of (one partition per month): a month is loaded into
--    a fresh table, indexed once (a sorted build, not a million index insertions) and attached;
--    re-ingesting a month swaps its partition. Existing rows move into their partitions.
-- 5. SQL encoders of Feast's online-store format (entity key serialization v3, ValueProto),
--    used by the bulk online-store writer (streamflow.features.online_writer).

ALTER TABLE users            ADD COLUMN IF NOT EXISTS as_of DATE;
ALTER TABLE subscriptions    ADD COLUMN IF NOT EXISTS as_of DATE;
ALTER TABLE usage_agg_30d    ADD COLUMN IF NOT EXISTS as_of DATE;
ALTER TABLE payments_agg_90d ADD COLUMN IF NOT EXISTS as_of DATE;
ALTER TABLE support_agg_90d  ADD COLUMN IF NOT EXISTS as_of DATE;
ALTER TABLE labels           ADD COLUMN IF NOT EXISTS as_of DATE;

ALTER TABLE subscriptions    DROP CONSTRAINT IF EXISTS subscriptions_user_id_fkey;
ALTER TABLE usage_agg_30d    DROP CONSTRAINT IF EXISTS usage_agg_30d_user_id_fkey;
ALTER TABLE payments_agg_90d DROP CONSTRAINT IF EXISTS payments_agg_90d_user_id_fkey;
ALTER TABLE support_agg_90d  DROP CONSTRAINT IF EXISTS support_agg_90d_user_id_fkey;
ALTER TABLE labels           DROP CONSTRAINT IF EXISTS labels_user_id_fkey;

DO $do$
DECLARE
  t text;
  d timestamptz;
  old text;
BEGIN
  -- (no percent signs in this file: it is executed through a driver that parses them)
  FOREACH t IN ARRAY ARRAY['subscriptions_profile_snapshots', 'usage_agg_30d_snapshots',
                           'payments_agg_90d_snapshots', 'support_agg_90d_snapshots', 'labels_snapshots'] LOOP
    IF (SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('public.' || quote_ident(t))) = 'r' THEN
      old := t || '_unpartitioned';
      EXECUTE 'ALTER TABLE ' || quote_ident(t) || ' RENAME TO ' || quote_ident(old);
      EXECUTE 'ALTER TABLE ' || quote_ident(old) || ' RENAME CONSTRAINT ' || quote_ident(t || '_pkey')
           || ' TO ' || quote_ident(old || '_pkey');
      EXECUTE 'DROP INDEX IF EXISTS ' || quote_ident(t || '_as_of');
      EXECUTE 'CREATE TABLE ' || quote_ident(t) || ' (LIKE ' || quote_ident(old) || ' INCLUDING ALL)'
           || ' PARTITION BY LIST (as_of)';
      FOR d IN EXECUTE 'SELECT DISTINCT as_of FROM ' || quote_ident(old) || ' ORDER BY 1' LOOP
        EXECUTE 'CREATE TABLE ' || quote_ident(t || '_' || to_char(d AT TIME ZONE 'UTC', 'YYYYMMDD'))
             || ' PARTITION OF ' || quote_ident(t) || ' FOR VALUES IN (' || quote_literal(d) || ')';
      END LOOP;
      EXECUTE 'INSERT INTO ' || quote_ident(t) || ' SELECT * FROM ' || quote_ident(old);
      EXECUTE 'DROP TABLE ' || quote_ident(old);
    END IF;
  END LOOP;
END
$do$;

ALTER TABLE feature_materializations ADD COLUMN IF NOT EXISTS ingestion_id BIGINT;
ALTER TABLE feature_materializations ADD COLUMN IF NOT EXISTS writer TEXT;
ALTER TABLE feature_materializations ADD COLUMN IF NOT EXISTS rows_written BIGINT;
ALTER TABLE feature_materializations ADD COLUMN IF NOT EXISTS seconds DOUBLE PRECISION;

-- ---- Feast online-store encoders -----------------------------------------------------
-- The hot paths (small ints, doubles, booleans, short strings, the entity key) are inline SQL
-- expressions built by streamflow.features.online_writer; these functions are their rare or
-- version-dependent parts.

-- Protobuf base-128 varint of any bigint (negative numbers: 10 bytes, two's complement).
CREATE OR REPLACE FUNCTION streamflow_varint(n bigint) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  out bytea := '\x'::bytea;
  u numeric := CASE WHEN n < 0 THEN n::numeric + 18446744073709551616 ELSE n::numeric END;
BEGIN
  LOOP
    IF u < 128 THEN
      RETURN out || set_byte('\x00'::bytea, 0, u::int);
    END IF;
    out := out || set_byte('\x00'::bytea, 0, (mod(u, 128) + 128)::int);
    u := div(u, 128);
  END LOOP;
END $$;

-- IEEE-754 double, little-endian (protobuf fixed64 payload).
DO $do$
BEGIN
  IF current_setting('server_version_num')::int >= 180000 THEN
    EXECUTE $f$CREATE OR REPLACE FUNCTION streamflow_le8(x double precision) RETURNS bytea
      LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT reverse(float8send(x))'$f$;
  ELSE
    EXECUTE $f$CREATE OR REPLACE FUNCTION streamflow_le8(x double precision) RETURNS bytea
      LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
      'SELECT substring(float8send(x) from 8 for 1) || substring(float8send(x) from 7 for 1)
           || substring(float8send(x) from 6 for 1) || substring(float8send(x) from 5 for 1)
           || substring(float8send(x) from 4 for 1) || substring(float8send(x) from 3 for 1)
           || substring(float8send(x) from 2 for 1) || substring(float8send(x) from 1 for 1)'$f$;
  END IF;
END
$do$;

-- Python str() of a double with 1e15 <= |x| < 1e16: PostgreSQL prints 1.2345e+15, Python
-- 1234500000000000.0 (elsewhere the shortest-exact text of both agree, but for a missing '.0').
CREATE OR REPLACE FUNCTION streamflow_py_float_text_e15(x double precision) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  t text := x::text;
  neg boolean := left(t, 1) = '-';
  digits text := replace(split_part(ltrim(t, '-'), 'e', 1), '.', '');
  int_part text;
  frac text;
BEGIN
  digits := rpad(digits, greatest(length(digits), 16), '0');
  int_part := left(digits, 16);
  frac := substr(digits, 17);
  RETURN CASE WHEN neg THEN '-' ELSE '' END || int_part || '.' || CASE WHEN frac = '' THEN '0' ELSE frac END;
END $$;
