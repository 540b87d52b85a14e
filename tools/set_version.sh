#!/usr/bin/env bash
# Sets the version of the server and the SDKs: writes VERSION (where it is set)
# and the copies that the packaging tools need in their manifests, which
# //tools:package_metadata_test compares with it.
#
#   tools/set_version.sh 0.2.0
#
# Then add the version's section to CHANGELOG.md (the test wants one).
set -euo pipefail
cd "$(dirname "$0")/.."
v="${1:?usage: tools/set_version.sh MAJOR.MINOR.PATCH[-PRERELEASE]}"
if ! printf '%s\n' "$v" | grep -Eqx '[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?'; then
  echo "set_version: '$v' is not MAJOR.MINOR.PATCH[-PRERELEASE]" >&2
  exit 2
fi

printf '%s\n' "$v" > VERSION
# npm writes package.json and package-lock.json alike.
(cd sdks/ts && npm version "$v" --no-git-tag-version --allow-same-version > /dev/null)
# The first `version = ` of each file is the package's own.
sed -i "0,/^version = \".*\"\$/s//version = \"$v\"/" sdks/python/pyproject.toml sdks/rust/Cargo.toml
sed -i "s/^VERSION = \".*\"\$/VERSION = \"$v\"/" sdks/python/src/eventstore_client/_common.py
# The crate's own entry in its lock file: the line after its name.
sed -i "/^name = \"eventstore-client\"\$/{n;s/^version = \".*\"\$/version = \"$v\"/}" sdks/rust/Cargo.lock
echo "set_version: $v in VERSION and the SDK manifests; add its section to CHANGELOG.md"
