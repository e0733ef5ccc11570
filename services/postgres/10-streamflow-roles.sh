#!/bin/sh
# Least-privilege roles of the StreamFlow database (docs/security.md). The PostgreSQL image runs
# this once, as the superuser POSTGRES_USER, when its data volume is new
# (/docker-entrypoint-initdb.d); that is the superuser's only use. Idempotent: rerun it on an
# existing server to create what is missing and reset the passwords:
#
#   docker compose exec postgres sh /docker-entrypoint-initdb.d/10-streamflow-roles.sh
#   PGHOST=… PGPORT=… POSTGRES_USER=postgres POSTGRES_DB=streamflow APP_DB_USER=… sh 10-streamflow-roles.sh
#
# Roles (login, no superuser/createdb/createrole/replication/bypassrls):
#   APP_DB_USER    ingest, materialize, train, serve, monitor. CONNECT to POSTGRES_DB and CREATE in
#                  its public schema: it owns the tables it creates (CREATE/DROP/ALTER of its own
#                  tables and partitions, COPY FROM STDIN, advisory locks). Member of FEAST_DB_USER:
#                  the application publishes Feast's online store (rebuilds and swaps Feast's tables).
#                  Not a superuser nor in pg_execute_server_program: `COPY … TO PROGRAM` is refused.
#   FEAST_DB_USER  Feast's registry and online tables (it creates and owns them); SELECT on the
#                  snapshot tables only, granted by the application (streamflow.db.roles).
#   MLFLOW_DB_USER owns the database MLFLOW_DB and nothing else; may not connect to POSTGRES_DB.
# PUBLIC keeps nothing: no CONNECT to either database, no CREATE/USAGE on their public schemas.
set -eu

: "${POSTGRES_USER:?}" "${POSTGRES_DB:?}"
: "${APP_DB_USER:?set in .env}" "${APP_DB_PASSWORD:?set in .env}"
: "${FEAST_DB_USER:?set in .env}" "${FEAST_DB_PASSWORD:?set in .env}"
: "${MLFLOW_DB_USER:?set in .env}" "${MLFLOW_DB_PASSWORD:?set in .env}"
MLFLOW_DB=${MLFLOW_DB:-mlflow}

for var in APP_DB_PASSWORD FEAST_DB_PASSWORD MLFLOW_DB_PASSWORD; do
  eval "value=\${$var}"
  case "$value" in
    *change-me*)
      echo "error: $var holds a \`change-me-…\` placeholder secret of .env.example: set a real secret in .env" >&2
      exit 2
      ;;
  esac
done
for var in APP_DB_USER FEAST_DB_USER MLFLOW_DB_USER; do
  eval "value=\${$var}"
  if [ "$value" = "$POSTGRES_USER" ]; then
    echo "error: $var must not be the superuser $POSTGRES_USER" >&2
    exit 2
  fi
done

export MLFLOW_DB
# values come from the environment through \getenv (psql >= 15): no password on a command line
psql -X -q -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
SET client_min_messages = warning;
\getenv app_user APP_DB_USER
\getenv app_password APP_DB_PASSWORD
\getenv feast_user FEAST_DB_USER
\getenv feast_password FEAST_DB_PASSWORD
\getenv mlflow_user MLFLOW_DB_USER
\getenv mlflow_password MLFLOW_DB_PASSWORD
\getenv app_db POSTGRES_DB
\getenv mlflow_db MLFLOW_DB
-- roles: created when missing, attributes and password (re)set on every run
SELECT format('CREATE ROLE %I', r) FROM unnest(ARRAY[:'app_user', :'feast_user', :'mlflow_user']) AS r
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \gexec
SELECT format('ALTER ROLE %I WITH LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L',
              r, p)
  FROM (VALUES (:'app_user', :'app_password'), (:'feast_user', :'feast_password'),
               (:'mlflow_user', :'mlflow_password')) AS v(r, p) \gexec

-- the application database: the app and Feast connect; only they create, in public
REVOKE ALL ON DATABASE :"app_db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"app_db" TO :"app_user", :"feast_user";
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"app_user", :"feast_user";
-- the application publishes Feast's online store: it swaps the tables Feast owns
GRANT :"feast_user" TO :"app_user";

-- MLflow's own database, owned by its role
SELECT format('CREATE DATABASE %I OWNER %I', :'mlflow_db', :'mlflow_user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'mlflow_db') \gexec
ALTER DATABASE :"mlflow_db" OWNER TO :"mlflow_user";
REVOKE ALL ON DATABASE :"mlflow_db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"mlflow_db" TO :"mlflow_user";
\connect :"mlflow_db"
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"mlflow_user";
SQL
echo "streamflow roles: $APP_DB_USER (application), $FEAST_DB_USER (Feast), $MLFLOW_DB_USER (MLflow, database $MLFLOW_DB)"
