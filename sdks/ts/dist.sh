#!/usr/bin/env bash
# Packs the npm package of the TypeScript SDK: //sdks/ts:dist runs this, and
# `make sdk-dist` copies the result to dist/eventstore-c-client-VERSION.tgz.
#
#   dist.sh OUT.tgz VERSION_FILE API_MD FILE...
#
# FILEs are the package's sources as Bazel lists them (sdks/ts/...). They are
# copied into a scratch directory, with docs/api.md as API.md (the README's
# API reference, shipped as text because the repository's docs/ is not in
# the package), and packed there with `npm pack`, whose prepack script
# compiles dist/ with the tsc of sdks/ts/node_modules (sdks/ts/setup.sh).
# Fails unless package.json's version is the one in VERSION.
set -euo pipefail

out="$1" version_file="$2" api_md="$3"
shift 3
version="$(cat "$version_file")"

stage="$(mktemp -d "${TMPDIR:-/tmp}/es-ts-dist.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
pkg="$stage/package"
mkdir -p "$pkg"
real=""
for f in "$@"; do
  rel="${f#sdks/ts/}"
  mkdir -p "$pkg/$(dirname "$rel")"
  cp -L "$f" "$pkg/$rel"
  [ "$rel" = package-lock.json ] && real="$(dirname "$(readlink -f "$f")")"
done
cp -L "$api_md" "$pkg/API.md"
[ -n "$real" ] && [ -d "$real/node_modules" ] || {
  echo "dist.sh: sdks/ts/node_modules is missing: run sdks/ts/setup.sh" >&2
  exit 1
}
ln -s "$real/node_modules" "$pkg/node_modules"

# npm wants a writable home and cache; the action has neither.
export HOME="$stage/home" npm_config_cache="$stage/npm-cache"
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
export PATH="$PATH:/usr/local/bin:/usr/bin:/bin"
(cd "$pkg" && npm pack --silent --pack-destination "$stage" > "$stage/name")
name="$(tail -1 "$stage/name")"
want="eventstore-c-client-$version.tgz"
if [ "$name" != "$want" ]; then
  echo "dist.sh: npm pack made $name, not $want: package.json's version differs from VERSION ($version)" >&2
  exit 1
fi
mv "$stage/$name" "$out"
