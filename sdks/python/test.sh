#!/usr/bin/env bash
# Runs the Python SDK's tests: pytest against the real server, then the consumer test
# (the wheel installed into a fresh venv outside the repository runs the examples).
#
#   sdks/python/test.sh [--server BIN] [--stubs DIR_OR_FILE] [--wheel WHEEL] [pytest args...]
#
# --server (or ES_SERVER_BIN): the eventstore binary (default ../../bazel-bin/server/eventstore)
# --stubs  (or ES_STUBS_DIR): the output of //sdks/python:stubs, compared with the checked-in
#          copy (default ../../bazel-bin/sdks/python/_gen)
# --wheel  the wheel of //sdks/python:dist for the consumer test (default: consumer_test.sh
#          builds that target)
# Bazel's //sdks/python:test passes all three. Exits non-zero when anything fails or no test ran.
set -euo pipefail

here="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
abspath() { (cd "$(dirname "$1")" && echo "$(pwd -P)/$(basename "$1")"); }

pytest_args=()
consumer_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --server) ES_SERVER_BIN="$(abspath "$2")"; shift 2 ;;
    --stubs)
      s="$(abspath "$2")"
      [ -d "$s" ] || s="$(dirname "$s")"
      ES_STUBS_DIR="$s"; shift 2 ;;
    --wheel) consumer_args+=(--wheel "$(abspath "$2")"); shift 2 ;;
    *) pytest_args+=("$1"); shift ;;
  esac
done
ES_SERVER_BIN="${ES_SERVER_BIN:-$here/../../bazel-bin/server/eventstore}"
ES_STUBS_DIR="${ES_STUBS_DIR:-$here/../../bazel-bin/sdks/python/_gen}"
case "$ES_SERVER_BIN" in /*) ;; *) ES_SERVER_BIN="$(abspath "$ES_SERVER_BIN")" ;; esac
case "$ES_STUBS_DIR" in /*) ;; *) ES_STUBS_DIR="$(abspath "$ES_STUBS_DIR")" ;; esac
export ES_SERVER_BIN ES_STUBS_DIR
# Leave no caches in the source tree (Bazel runs this against the real directory).
export PYTHONDONTWRITEBYTECODE=1

"$here/setup.sh"
cd "$here"

echo "test.sh: pytest (server: $ES_SERVER_BIN)"
set +e
.venv/bin/python -m pytest -p no:cacheprovider -ra "${pytest_args[@]}" tests
rc=$?
set -e
if [ $rc -eq 5 ]; then
  echo "test.sh: FAILED: pytest collected no tests" >&2
  exit 1
elif [ $rc -ne 0 ]; then
  echo "test.sh: FAILED: pytest exited with $rc" >&2
  exit $rc
fi

echo "test.sh: consumer test"
"$here/consumer_test.sh" --deps newest "${consumer_args[@]}"
echo "test.sh: all Python SDK tests passed"
