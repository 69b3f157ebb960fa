#!/bin/sh
# One-shot job (service temporal-schema, image temporalio/admin-tools): creates the
# Temporal databases on PostgreSQL and brings both schemas to the version that the
# pinned server expects. Safe to re-run: "create" of an existing database is
# ignored and update-schema only applies the versions that are missing.
set -eu

: "${POSTGRES_SEEDS:=postgresql}"
: "${DB_PORT:=5432}"
: "${POSTGRES_USER:=temporal}"
: "${DBNAME:=temporal}"
: "${VISIBILITY_DBNAME:=temporal_visibility}"
# temporal-sql-tool reads the password from SQL_PASSWORD.
export SQL_PASSWORD="${SQL_PASSWORD:-${POSTGRES_PWD:-temporal}}"

SCHEMA_DIR=/etc/temporal/schema/postgresql/v12

sql() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" "$@"
}

echo "waiting for PostgreSQL at $POSTGRES_SEEDS:$DB_PORT"
i=0
until nc -z -w 2 "$POSTGRES_SEEDS" "$DB_PORT"; do
  i=$((i + 1))
  if [ "$i" -ge 60 ]; then
    echo "PostgreSQL did not come up" >&2
    exit 1
  fi
  sleep 1
done

setup() {
  db=$1
  dir=$2
  sql --db "$db" create || echo "database $db already exists"
  # setup-schema -v 0.0 creates the schema_version table on a fresh database and
  # is a no-op once it exists; update-schema then applies every versioned step.
  sql --db "$db" setup-schema -v 0.0 || echo "database $db already has a schema"
  sql --db "$db" update-schema -d "$SCHEMA_DIR/$dir/versioned"
}

setup "$DBNAME" temporal
setup "$VISIBILITY_DBNAME" visibility
echo "Temporal schema is ready"
