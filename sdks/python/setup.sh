#!/usr/bin/env bash
# Creates sdks/python/.venv and installs the pinned development dependencies
# (requirements-dev.txt) from PyPI, plus a local wheelhouse of the SDK's
# runtime dependencies for the offline consumer test. Idempotent: quick when
# the venv already matches requirements-dev.txt.
#
# PYTHON selects the interpreter (default: python3; 3.10 or newer).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
req="$here/requirements-dev.txt"
stamp="$venv/.setup-stamp"
PYTHON="${PYTHON:-python3}"

want="$(cat "$req" "$0" | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
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
# Runtime dependencies of the wheel, for the consumer test's fresh venv.
rm -rf "$venv/wheelhouse"
"$venv/bin/python" -m pip download --quiet --disable-pip-version-check \
  --dest "$venv/wheelhouse" --only-binary=:all: \
  "grpcio==$(sed -n 's/^grpcio==//p' "$req")" \
  "protobuf==$(sed -n 's/^protobuf==//p' "$req")" \
  "typing_extensions==$(sed -n 's/^typing_extensions==//p' "$req")"
echo "$want" > "$stamp"
echo "setup.sh: done"
