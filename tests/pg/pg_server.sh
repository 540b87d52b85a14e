#!/usr/bin/env bash
# Stands in for the server binary in the end-to-end suite (ES_E2E_SERVER):
# runs //server:eventstore on the PostgreSQL backend, on a database of its own
# created now in the cluster at $ES_PG_ADMIN_URL, so that every server a test
# starts begins with an empty store, as it does with the memory backend.
# The test's own flags (--bind, --port-file, limits, ...) are passed through.
#
#   ES_PG_ADMIN_URL   postgresql://user@host:port/postgres (a database to connect to)
#   ES_PG_SERVER_BIN  the server binary
set -euo pipefail
bindir="${ES_PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}"
db="e2e_$$_${RANDOM}${RANDOM}"
"$bindir/psql" -qX -v ON_ERROR_STOP=1 "$ES_PG_ADMIN_URL" -c "CREATE DATABASE $db" >/dev/null
exec "$ES_PG_SERVER_BIN" --backend postgres --database-url "${ES_PG_ADMIN_URL%/*}/$db" "$@"
