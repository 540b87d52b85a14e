#!/usr/bin/env bash
# The foundation's end-to-end suite (//tests/e2e) against the PostgreSQL
# backend: the same test binaries, unchanged, with pg_server.sh standing in
# for the server binary (ES_E2E_SERVER), so that every server they start runs
# on a fresh database of one throwaway PostgreSQL (tools/pg_temp.sh, which
# runs this script again, as `--inner`, with DATABASE_URL set).
set -euo pipefail
root="${TEST_SRCDIR:?run me with bazel test}/eventstore"

if [ "${1:-}" != "--inner" ]; then
  exec "$root/tools/pg_temp.sh" -- "$root/tests/pg/e2e_suite_on_postgres.sh" --inner
fi

export ES_PG_ADMIN_URL="$DATABASE_URL"
export ES_PG_SERVER_BIN="$root/server/eventstore"
export ES_E2E_SERVER="$root/tests/pg/pg_server.sh"
failed=()
for t in semantics_test status_test health_reflection_test shutdown_test concurrency_test fanout_test; do
  echo "==== tests/e2e/$t on PostgreSQL"
  # Each binary would otherwise write its report over this test's XML file.
  if ! (cd "$root" && env -u XML_OUTPUT_FILE -u GTEST_OUTPUT "$root/tests/e2e/$t"); then
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED on PostgreSQL: ${failed[*]}"
  exit 1
fi
echo "all of tests/e2e passed on PostgreSQL"
