#!/usr/bin/env bash
# Consumer test: installs the wheel of //sdks/python:dist (what `make sdk-dist` ships) into a
# fresh venv in a temporary directory outside the repository, beside the newest or the lowest
# supported grpcio and protobuf, type-checks the examples shipped in it and runs them (append,
# read, subscribe; sync and asyncio) against a real server started here. With the lowest
# versions it also runs the test suite (tests/, but for the checks of the development tools in
# test_examples_and_stubs.py) against the installed package.
#
#   consumer_test.sh [--deps newest|lowest] [--wheel WHEEL] [--server BIN]
#
# --deps    newest: grpcio and protobuf of requirements-dev.txt (default); lowest: those of
#           requirements-lowest.txt, which must be the lower bounds of the wheel's dependencies.
# --wheel   the wheel (any file name; //sdks/python:eventstore_client.whl under Bazel). Default:
#           `bazel build //sdks/python:dist` (BAZEL, BAZEL_STARTUP_OPTS as in gen.sh).
# --server  the eventstore binary (or ES_SERVER_BIN; default ../../bazel-bin/server/eventstore).
# Installs offline from the wheelhouse that setup.sh downloaded.
set -euo pipefail

here="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
root="$(readlink -f "$here/../..")"
abspath() { (cd "$(dirname "$1")" && echo "$(pwd -P)/$(basename "$1")"); }
deps=newest
wheel_in=""
while [ $# -gt 0 ]; do
  case "$1" in
    --deps) deps="$2"; shift 2 ;;
    --wheel) wheel_in="$(abspath "$2")"; shift 2 ;;
    --server) ES_SERVER_BIN="$(abspath "$2")"; shift 2 ;;
    *) echo "consumer_test: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$deps" in
  newest) reqs="$here/requirements-dev.txt" ;;
  lowest) reqs="$here/requirements-lowest.txt" ;;
  *) echo "consumer_test: --deps is newest or lowest, not $deps" >&2; exit 2 ;;
esac
server_bin="$(readlink -f "${ES_SERVER_BIN:-$root/bazel-bin/server/eventstore}")"
[ -x "$server_bin" ] || { echo "consumer_test: no server binary at $server_bin" >&2; exit 1; }
export ES_SERVER_BIN="$server_bin" PYTHONDONTWRITEBYTECODE=1
dev_py="$here/.venv/bin/python"
base_py="$("$dev_py" -c 'import sys; print(sys._base_executable)')"
pin() { sed -n "s/^$1==//p" "$2"; }
grpcio="$(pin grpcio "$reqs")"
protobuf="$(pin protobuf "$reqs")"

if [ -z "$wheel_in" ]; then
  BAZEL="${BAZEL:-bazel}"
  # shellcheck disable=SC2206
  startup=(${BAZEL_STARTUP_OPTS:-})
  (cd "$root" && "$BAZEL" "${startup[@]}" build --noshow_progress //sdks/python:dist 2>&1 | tail -1)
  wheel_in="$(cd "$root" && "$BAZEL" "${startup[@]}" info bazel-bin 2>/dev/null)/sdks/python/eventstore_client.whl"
fi

work="$(mktemp -d "${TEST_TMPDIR:-${TMPDIR:-/tmp}}/es-py-consumer.XXXXXX")"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill -TERM "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
case "$work" in "$root"/*) echo "consumer_test: $work is inside the repository" >&2; exit 1 ;; esac

# pip wants the wheel's own file name, which records its version.
version="$(cat "$root/VERSION")"
wheel="$work/eventstore_client-$version-py3-none-any.whl"
cp "$wheel_in" "$wheel"
"$dev_py" - "$wheel" "$here/requirements-lowest.txt" <<'PY'
import re, sys, zipfile
from packaging.requirements import Requirement

wheel, lowest = sys.argv[1], sys.argv[2]
z = zipfile.ZipFile(wheel)
names = set(z.namelist())
dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
need = {"eventstore_client/__init__.py", "eventstore_client/py.typed",
        "eventstore_client/_gen/eventstore_pb2.py", "eventstore_client/_gen/eventstore_pb2.pyi",
        "eventstore_client/_gen/eventstore_pb2_grpc.py", "eventstore_client/aio.py",
        "eventstore_client/examples/quickstart.py", "eventstore_client/examples/quickstart_async.py",
        "eventstore_client/examples/enrolment.py",
        f"{dist_info}/licenses/LICENSE"}
missing = need - names
junk = [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
assert not missing and not junk, f"wheel: missing {sorted(missing)}, unexpected {junk}"

meta = z.read(f"{dist_info}/METADATA").decode()
headers, _, readme = meta.partition("\n\n")
assert "License-Expression: Apache-2.0" in headers.splitlines(), "wheel: no License-Expression: Apache-2.0"
assert "](../" not in readme, "wheel: the README links outside the package"
# The lower bound of each dependency is the version requirements-lowest.txt tests.
floors = {}
for line in headers.splitlines():
    if line.startswith("Requires-Dist: "):
        req = Requirement(line[len("Requires-Dist: "):])
        floors[req.name] = [s.version for s in req.specifier if s.operator == ">="]
pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", open(lowest).read(), re.M))
for name, bound in floors.items():
    assert bound == [pins.get(name)], f"{name}: the wheel requires >={bound}, requirements-lowest.txt tests {pins.get(name)}"
print(f"consumer_test: {wheel.rsplit('/', 1)[-1]}: {len(names)} files, requires {floors}")
PY

echo "consumer_test: installing it into a fresh venv in $work with grpcio $grpcio, protobuf $protobuf ($deps)"
"$base_py" -m venv "$work/venv"
venv_py="$work/venv/bin/python"
# The lowest pins include grpcio's own dependencies; pytest is for the test suite.
dep_args=("grpcio==$grpcio" "protobuf==$protobuf")
[ "$deps" = lowest ] && dep_args=(-r "$reqs" pytest pytest-asyncio)
"$venv_py" -m pip install --quiet --disable-pip-version-check --no-index \
  --find-links "$here/.venv/wheelhouse" "$wheel" "${dep_args[@]}"
"$venv_py" - "$grpcio" "$protobuf" <<'PY'
import sys
from importlib.metadata import version
got = (version("grpcio"), version("protobuf"))
assert got == (sys.argv[1], sys.argv[2]), f"installed grpcio, protobuf {got}, wanted {sys.argv[1:]}"
PY

mkdir "$work/project"
cd "$work/project"
site="$("$venv_py" -c 'import eventstore_client, os; print(os.path.dirname(eventstore_client.__file__))')"
case "$site" in "$work/venv/"*) ;; *) echo "consumer_test: imported from $site" >&2; exit 1 ;; esac
# The examples as shipped, now the consumer's own code.
cp "$site/examples/quickstart.py" "$site/examples/quickstart_async.py" "$site/examples/enrolment.py" .

echo "consumer_test: type-checking the shipped examples against the installed package (py.typed)"
printf '[mypy]\nstrict = True\n' > mypy.ini
"$dev_py" -m mypy --cache-dir=/dev/null --python-executable "$venv_py" quickstart.py quickstart_async.py enrolment.py

echo "consumer_test: starting a server"
"$server_bin" --backend memory --bind 127.0.0.1:0 --port-file "$work/port" > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do
  [ -s "$work/port" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.02
done
[ -s "$work/port" ] || { echo "consumer_test: the server did not start" >&2; exit 1; }
address="127.0.0.1:$(cat "$work/port")"

echo "consumer_test: running the shipped examples against $address"
"$venv_py" -m eventstore_client.examples.quickstart "$address" | tee "$work/out.txt"
"$venv_py" -m eventstore_client.examples.quickstart_async "$address" | tee -a "$work/out.txt"
"$venv_py" -m eventstore_client.examples.enrolment "$address" | tee -a "$work/out.txt"
grep -qx "quickstart: OK" "$work/out.txt"
grep -qx "quickstart_async: OK" "$work/out.txt"
grep -qx "enrolment: OK" "$work/out.txt"

if [ "$deps" = lowest ]; then
  echo "consumer_test: the test suite against the installed package (grpcio $grpcio, protobuf $protobuf)"
  # From sdks/python, whose pyproject.toml configures pytest; `-o pythonpath=` drops its src/,
  # so that `import eventstore_client` finds the installed wheel (checked first).
  cd "$here"
  "$venv_py" -c 'import eventstore_client, sys; sys.exit(0 if eventstore_client.__file__.startswith(sys.argv[1]) else 1)' \
    "$work/venv/" || { echo "consumer_test: tests would not import the installed package" >&2; exit 1; }
  set +e
  "$venv_py" -m pytest -p no:cacheprovider -o pythonpath= -q -ra \
    --ignore=tests/test_examples_and_stubs.py tests
  rc=$?
  set -e
  [ $rc -eq 0 ] || { echo "consumer_test: FAILED: pytest exited with $rc" >&2; exit 1; }
fi
echo "consumer_test: OK ($deps: grpcio $grpcio, protobuf $protobuf)"
