#!/bin/sh
# Refuse to start a service with a `change-me-…` placeholder secret of .env.example, then run it.
#
#   refuse-placeholders.sh VAR[=NAME] ... -- command [args...]
#
# For each VAR (NAME: how the operator knows it, e.g. GF_SECURITY_ADMIN_PASSWORD=GRAFANA_ADMIN_PASSWORD)
# whose value contains "change-me": one line on stderr naming it, exit 2, nothing started.
# Otherwise exec the command. Used as the entrypoint of compose's postgres, grafana and prefect
# services, and by mlflow-entrypoint.sh (docs/security.md).
set -eu

fail() {
  echo "error: $*" >&2
  exit 2
}

while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  var=${1%%=*}
  name=${1#*=}
  case "$var" in
    "" | [0-9]* | *[!A-Za-z0-9_]*) fail "refuse-placeholders.sh: not a variable name: $var" ;;
  esac
  eval "value=\${$var-}"
  case "$value" in
    *change-me* | *CHANGE-ME* | *Change-Me*)
      fail "$name holds a \`change-me-…\` placeholder secret of .env.example: set a real secret (e.g. \`openssl rand -hex 24\`) in .env or the Secret it comes from"
      ;;
  esac
  shift
done
[ "${1-}" = "--" ] && shift
[ $# -gt 0 ] || fail "usage: refuse-placeholders.sh VAR[=NAME] ... -- command [args...]"
exec "$@"
