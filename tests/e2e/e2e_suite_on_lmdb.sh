#!/usr/bin/env bash
# The end-to-end suite (//tests/e2e) against the LMDB backend: the same test
# binaries, unchanged, with lmdb_server.sh standing in for the server binary
# (ES_E2E_SERVER), so that every server they start runs on a fresh data
# directory under $TEST_TMPDIR, durable, with every append synced before its
# answer.
set -euo pipefail
root="${TEST_SRCDIR:?run me with bazel test}/eventstore"

export ES_LMDB_SERVER_BIN="$root/server/eventstore"
export ES_E2E_SERVER="$root/tests/e2e/lmdb_server.sh"
failed=()
for t in semantics_test status_test health_reflection_test shutdown_test concurrency_test fanout_test; do
  echo "==== tests/e2e/$t on LMDB"
  start=$SECONDS
  # Each binary would otherwise write its report over this test's XML file.
  if ! (cd "$root" && env -u XML_OUTPUT_FILE -u GTEST_OUTPUT "$root/tests/e2e/$t"); then
    failed+=("$t")
  fi
  echo "==== tests/e2e/$t on LMDB: $((SECONDS - start)) s"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED on LMDB: ${failed[*]}"
  exit 1
fi
echo "all of tests/e2e passed on LMDB"
