#!/usr/bin/env bash
# Creates sdks/python/.venv and installs the pinned development dependencies
# (requirements-dev.txt) from PyPI, plus a local wheelhouse (.venv/wheelhouse)
# of the SDK's runtime dependencies at the newest and at the lowest supported
# versions (requirements-lowest.txt) and of the test runner, for the offline
# consumer tests. Creates sdks/python/.venv-stubs with the stubs generator
# (requirements-stubs.txt). Idempotent: quick when both venvs already match.
#
# PYTHON selects the interpreter (default: python3; 3.10 or newer).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
req="$here/requirements-dev.txt"
stamp="$venv/.setup-stamp"
PYTHON="${PYTHON:-python3}"

stubs_venv="$here/.venv-stubs"
stubs_req="$here/requirements-stubs.txt"
lowest_req="$here/requirements-lowest.txt"

want="$(cat "$req" "$stubs_req" "$lowest_req" "$0" | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -x "$stubs_venv/bin/python" ] && [ -f "$stamp" ] &&
  [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
  echo "setup.sh: $PYTHON is $("$PYTHON" --version 2>&1); the Python SDK needs 3.10 or newer" >&2
  exit 1
fi

echo "setup.sh: creating $venv with $("$PYTHON" --version 2>&1)"
if [ ! -x "$venv/bin/python" ]; then
  "$PYTHON" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
# The wheel's runtime dependencies at both ends of the supported range, and the
# test runner, for the consumer tests' fresh venvs (installed offline).
pin() { sed -n "s/^$1==//p" "$2"; }
rm -rf "$venv/wheelhouse"
"$venv/bin/python" -m pip download --quiet --disable-pip-version-check \
  --dest "$venv/wheelhouse" --only-binary=:all: \
  "grpcio==$(pin grpcio "$req")" "protobuf==$(pin protobuf "$req")" \
  "typing_extensions==$(pin typing_extensions "$req")"
"$venv/bin/python" -m pip download --quiet --disable-pip-version-check \
  --dest "$venv/wheelhouse" --only-binary=:all: --no-deps \
  -r "$lowest_req" \
  "pytest==$(pin pytest "$req")" "pytest-asyncio==$(pin pytest-asyncio "$req")" \
  "iniconfig==$(pin iniconfig "$req")" "packaging==$(pin packaging "$req")" \
  "pluggy==$(pin pluggy "$req")" "Pygments==$(pin Pygments "$req")"

# The stubs generator, apart: its protobuf is older than the SDK's range.
echo "setup.sh: creating $stubs_venv (grpcio-tools $(pin grpcio-tools "$stubs_req"))"
if [ ! -x "$stubs_venv/bin/python" ]; then
  "$PYTHON" -m venv "$stubs_venv"
fi
"$stubs_venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$stubs_req"
echo "$want" > "$stamp"
echo "setup.sh: done"
