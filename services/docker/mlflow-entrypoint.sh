#!/bin/sh
# MLflow tracking server of the compose / Kubernetes stack: backend store in its own PostgreSQL
# database MLFLOW_DB, owned by its own role MLFLOW_DB_USER (both created by the database's init
# script services/postgres/10-streamflow-roles.sh: this role can reach nothing else), artifacts
# proxied (--serve-artifacts) from the /mlartifacts volume.
#
# The backend URL, which holds the password, reaches MLflow through the environment
# (MLFLOW_BACKEND_STORE_URI, read by `mlflow server`), never on a command line (ps, /proc/*/cmdline).
# A `change-me-…` placeholder password of .env.example is refused (exit 2, nothing started).
set -eu

: "${MLFLOW_DB_USER:?set in .env}" "${MLFLOW_DB_PASSWORD:?set in .env}"
: "${POSTGRES_HOST:=postgres}" "${POSTGRES_PORT:=5432}" "${MLFLOW_DB:=mlflow}"

"$(dirname "$0")/refuse-placeholders.sh" MLFLOW_DB_PASSWORD -- true

MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://${MLFLOW_DB_USER}:${MLFLOW_DB_PASSWORD}@${POSTGRES_HOST}:${POSTGRES_PORT}/${MLFLOW_DB}"
export MLFLOW_BACKEND_STORE_URI
unset MLFLOW_DB_PASSWORD

exec mlflow server \
  --host 0.0.0.0 \
  --port "${MLFLOW_PORT:-5000}" \
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-/mlartifacts}" \
  --serve-artifacts \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*}" \
  "$@"
