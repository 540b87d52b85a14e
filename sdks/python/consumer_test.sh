#!/usr/bin/env bash
# Consumer test: builds the wheel, installs it into a fresh venv in a temporary directory
# outside the repository, type-checks a consumer against it and runs the quickstart example
# (copied into that directory) against a real server started here.
#
# ES_SERVER_BIN: the eventstore binary (default ../../bazel-bin/server/eventstore).
# Installs offline from the wheelhouse that setup.sh downloaded (pinned grpcio, protobuf).
set -euo pipefail

here="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
server_bin="$(readlink -f "${ES_SERVER_BIN:-$here/../../bazel-bin/server/eventstore}")"
[ -x "$server_bin" ] || { echo "consumer_test: no server binary at $server_bin" >&2; exit 1; }
dev_py="$here/.venv/bin/python"
base_py="$("$dev_py" -c 'import sys; print(sys._base_executable)')"

work="$(mktemp -d "${TEST_TMPDIR:-${TMPDIR:-/tmp}}/es-py-consumer.XXXXXX")"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
case "$work" in "$(readlink -f "$here/../..")"/*) echo "consumer_test: $work is inside the repository" >&2; exit 1 ;; esac

echo "consumer_test: building the wheel"
"$dev_py" -m build --wheel --no-isolation --outdir "$work/dist" "$here" > "$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; exit 1; }
wheel="$(ls "$work"/dist/eventstore_client-*.whl)"
"$dev_py" - "$wheel" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = {"eventstore_client/__init__.py", "eventstore_client/py.typed",
        "eventstore_client/_gen/eventstore_pb2.py", "eventstore_client/_gen/eventstore_pb2.pyi",
        "eventstore_client/_gen/eventstore_pb2_grpc.py", "eventstore_client/aio.py"}
missing = need - names
junk = [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
assert not missing and not junk, f"wheel: missing {sorted(missing)}, unexpected {junk}"
print(f"consumer_test: {sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} files")
PY

echo "consumer_test: installing it into a fresh venv in $work"
"$base_py" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  --no-index --find-links "$here/.venv/wheelhouse" "$wheel"

mkdir "$work/project"
cp "$here/examples/quickstart.py" "$here/examples/quickstart_async.py" "$work/project/"
cd "$work/project"
where="$("$work/venv/bin/python" -c 'import eventstore_client as e; print(e.__file__)')"
case "$where" in "$work/venv/"*) ;; *) echo "consumer_test: imported from $where" >&2; exit 1 ;; esac

echo "consumer_test: type-checking the example against the installed package (py.typed)"
printf '[mypy]\nstrict = True\n' > mypy.ini
"$dev_py" -m mypy --cache-dir=/dev/null --python-executable "$work/venv/bin/python" \
  quickstart.py quickstart_async.py

echo "consumer_test: starting a server"
"$server_bin" --bind 127.0.0.1:0 --port-file "$work/port" > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do
  [ -s "$work/port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.02
done
[ -s "$work/port" ] || { echo "consumer_test: the server did not start" >&2; exit 1; }
address="127.0.0.1:$(cat "$work/port")"

echo "consumer_test: running the examples against $address"
"$work/venv/bin/python" quickstart.py "$address" | tee "$work/out.txt"
"$work/venv/bin/python" quickstart_async.py "$address" | tee -a "$work/out.txt"
grep -qx "quickstart: OK" "$work/out.txt"
grep -qx "quickstart_async: OK" "$work/out.txt"
echo "consumer_test: OK"
