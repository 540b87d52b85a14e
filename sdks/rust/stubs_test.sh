#!/usr/bin/env bash
# Fails when the checked-in stubs under sdks/rust/src/gen/ differ from what
# //sdks/rust:stubs generates. Arguments: pairs of (generated, checked-in).
# Fix: sdks/rust/gen.sh
set -euo pipefail
status=0
while [ $# -ge 2 ]; do
  generated="$1" checked_in="$2"
  shift 2
  if ! diff -u "$checked_in" "$generated"; then
    echo "stubs_test: $checked_in differs from //sdks/rust:stubs; run sdks/rust/gen.sh" >&2
    status=1
  fi
done
if [ "$status" -eq 0 ]; then
  echo "stubs_test: src/gen/ matches //sdks/rust:stubs"
fi
exit "$status"
