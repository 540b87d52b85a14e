#!/usr/bin/env bash
# Fails when the checked-in stubs (src/gen/) differ from what //sdks/ts:stubs
# generates. Fix: sdks/ts/gen.sh
set -euo pipefail
generated="$1"
checked_in="$2"
if diff -u "$checked_in" "$generated" > /dev/null; then
  echo "stubs_test: sdks/ts/src/gen/eventstore/v1/eventstore.ts matches //sdks/ts:stubs"
  echo "1 passed, 0 failed"
else
  diff -u "$checked_in" "$generated" | head -40 >&2 || true
  echo "stubs_test: sdks/ts/src/gen/ is stale or hand-edited; regenerate with sdks/ts/gen.sh" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
