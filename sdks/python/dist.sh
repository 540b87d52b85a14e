#!/usr/bin/env bash
# Builds the Python SDK's sdist and wheel: //sdks/python:dist runs this, and
# `make sdk-dist` copies the results to dist/eventstore_client-VERSION.tar.gz
# and dist/eventstore_client-VERSION-py3-none-any.whl.
#
#   dist.sh OUT_SDIST OUT_WHEEL VERSION_FILE FILE...
#
# FILEs are the package's sources as Bazel lists them (sdks/python/...). They
# are copied into a scratch directory and built there with `python -m build`
# from sdks/python/.venv (sdks/python/setup.sh; flit_core, no network): first
# the sdist, then the wheel from the sdist, so that the sdist is known to
# build. Fails unless pyproject.toml's version is the one in VERSION.
set -euo pipefail

out_sdist="$1" out_wheel="$2" version_file="$3"
shift 3
version="$(cat "$version_file")"

stage="$(mktemp -d "${TMPDIR:-/tmp}/es-py-dist.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
real=""
for f in "$@"; do
  rel="${f#sdks/python/}"
  mkdir -p "$stage/src/$(dirname "$rel")"
  cp -L "$f" "$stage/src/$rel"
  [ "$rel" = pyproject.toml ] && real="$(dirname "$(readlink -f "$f")")"
done
py="$real/.venv/bin/python"
[ -x "$py" ] || {
  echo "dist.sh: $py is missing: run sdks/python/setup.sh" >&2
  exit 1
}

# Fixed file times (zip needs 1980 or later): the same sources give the same bytes.
export PYTHONDONTWRITEBYTECODE=1 HOME="$stage" SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-315532800}"
if ! "$py" -m build --no-isolation --outdir "$stage/out" "$stage/src" \
  > "$stage/build.log" 2>&1; then
  cat "$stage/build.log" >&2
  exit 1
fi
for want in "eventstore_client-$version.tar.gz" "eventstore_client-$version-py3-none-any.whl"; do
  if [ ! -f "$stage/out/$want" ]; then
    echo "dist.sh: no $want among $(ls "$stage/out"): pyproject.toml's version differs from VERSION ($version)" >&2
    exit 1
  fi
done
mv "$stage/out/eventstore_client-$version.tar.gz" "$out_sdist"
mv "$stage/out/eventstore_client-$version-py3-none-any.whl" "$out_wheel"
