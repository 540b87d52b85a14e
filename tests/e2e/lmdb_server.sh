#!/usr/bin/env bash
# Stands in for the server binary in the end-to-end suite (ES_E2E_SERVER):
# runs //server:eventstore on the LMDB backend, in a data directory of its
# own created now under $TEST_TMPDIR, so that every server a test starts
# begins with an empty store, as it does with the memory backend. The test's
# own flags (--bind, --port-file, limits, ...) follow and are passed through;
# exec keeps the pid, so the test's signals reach the server itself.
#
#   ES_LMDB_SERVER_BIN  the server binary
set -euo pipefail
dir="$(mktemp -d "${TEST_TMPDIR:-/tmp}/lmdb_e2e.XXXXXX")"
exec "$ES_LMDB_SERVER_BIN" --backend lmdb --data-dir "$dir" "$@"
