#!/bin/sh
# MLflow tracking server of the compose stack: backend store in its own PostgreSQL database
# (created on first start), artifacts proxied (--serve-artifacts) from the /mlartifacts volume.
set -eu

: "${POSTGRES_USER:?}" "${POSTGRES_PASSWORD:?}" "${POSTGRES_HOST:=postgres}" "${MLFLOW_DB:=mlflow}"

python - <<'PY'
import os

import psycopg

dsn = dict(
    host=os.environ["POSTGRES_HOST"],
    port=int(os.environ.get("POSTGRES_PORT", "5432")),
    user=os.environ["POSTGRES_USER"],
    password=os.environ["POSTGRES_PASSWORD"],
    dbname=os.environ.get("POSTGRES_DB", "postgres"),
)
name = os.environ["MLFLOW_DB"]
with psycopg.connect(**dsn, autocommit=True) as conn:
    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
        conn.execute(f'CREATE DATABASE "{name}"')
        print(f"created database {name}")
PY

exec mlflow server \
  --host 0.0.0.0 \
  --port "${MLFLOW_PORT:-5000}" \
  --backend-store-uri "postgresql+psycopg2://${POSTGRES_USER}:${POSTGRES_PASSWORD}@${POSTGRES_HOST}:${POSTGRES_PORT:-5432}/${MLFLOW_DB}" \
  --artifacts-destination /mlartifacts \
  --serve-artifacts \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*}" \
  "$@"
