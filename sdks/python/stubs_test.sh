#!/usr/bin/env bash
# //sdks/python:stubs_test: fails when the checked-in generated code
# (src/eventstore_client/_gen/) differs from what //sdks/python:stubs produces.
#   stubs_test.sh <built _gen/__init__.py> <checked-in _gen/__init__.py>
set -euo pipefail
built="$(dirname "$1")"
checked="$(dirname "$2")"
status=0
for f in __init__.py eventstore_pb2.py eventstore_pb2.pyi eventstore_pb2_grpc.py; do
  if ! cmp -s "$built/$f" "$checked/$f"; then
    echo "stubs_test: src/eventstore_client/_gen/$f differs from //sdks/python:stubs" >&2
    diff -u "$checked/$f" "$built/$f" | head -20 >&2 || true
    status=1
  fi
done
if [ $status -ne 0 ]; then
  echo "stubs_test: FAILED: run sdks/python/gen.sh to regenerate the checked-in copy" >&2
  exit 1
fi
echo "stubs_test: 4 passed, 0 failed"
