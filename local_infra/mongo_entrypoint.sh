#!/usr/bin/env bash
# Entrypoint of the hks_mongo_db container: refuse unusable passwords in one line, then run the
# mongo image's own entrypoint. docker-compose already refuses unset passwords but cannot compare
# values, so the placeholders are refused here, at every start, before the first start makes the
# accounts (mongo_init_user.sh) and they can no longer be changed from local_infra/.env.
set -euo pipefail

env_file=local_infra/.env
refuse() { echo "error: $1" >&2; exit 1; }
check_password() {  # NAME VALUE
  [ -n "$2" ] || refuse "set $1 in $env_file"
  case "${2,,}" in  # lower case
    *change*|*password*|*example*|*placeholder*)
      refuse "$1 is a placeholder: set your own in $env_file (openssl rand -hex 16 makes one)" ;;
  esac
  [ "${#2}" -ge 12 ] || refuse "$1 is shorter than 12 characters: set a longer one in $env_file"
}
check_password MONGO_ROOT_PASSWORD "${MONGO_INITDB_ROOT_PASSWORD:-}"
check_password MONGO_DB_PASSWORD "${MONGO_DB_PASSWORD:-}"
[ "$MONGO_DB_PASSWORD" != "$MONGO_INITDB_ROOT_PASSWORD" ] ||
  refuse "MONGO_DB_PASSWORD and MONGO_ROOT_PASSWORD are the same: set two in $env_file"
[ "${MONGO_DB_USER:-}" != "${MONGO_INITDB_ROOT_USERNAME:-}" ] ||
  refuse "MONGO_DB_USER and MONGO_ROOT_USER are the same name: set two in $env_file"

exec docker-entrypoint.sh "$@"
