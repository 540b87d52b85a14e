#!/usr/bin/env bash
# `make sdk-dist`: the three SDK packages, built by Bazel, copied into dist/
# under their ecosystems' names for the version in VERSION:
#
#   dist/eventstore-c-client-VERSION.tgz                  npm    (//sdks/ts:dist)
#   dist/eventstore_client-VERSION-py3-none-any.whl       PyPI   (//sdks/python:dist)
#   dist/eventstore_client-VERSION.tar.gz                 PyPI sdist
#   dist/eventstore-client-VERSION.crate                  crates.io (//sdks/rust:dist)
#
# These are the very files the consumer tests install (//sdks/ts:test,
# //sdks/python:test and :lowest_versions_test, //sdks/rust:test), so after
# `bazel test //...` this only copies. Needs the SDKs' setup scripts to have
# run (`make sdk-dist` runs `make setup` first).
# Environment: BAZEL, BAZEL_STARTUP (e.g. --output_base=DIR), BAZEL_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/.."
BAZEL=${BAZEL:-bazel}
read -r -a startup <<<"${BAZEL_STARTUP:-}"
read -r -a flags <<<"${BAZEL_FLAGS:-}"

version="$(cat VERSION)"
start=$(date +%s)
"$BAZEL" "${startup[@]}" build "${flags[@]}" --ui_event_filters=-info,-progress \
  //sdks/ts:dist //sdks/python:dist //sdks/rust:dist
bin="$("$BAZEL" "${startup[@]}" info "${flags[@]}" bazel-bin 2>/dev/null)"

rm -rf dist
mkdir dist
install -m 0644 "$bin/sdks/ts/eventstore-c-client.tgz" "dist/eventstore-c-client-$version.tgz"
install -m 0644 "$bin/sdks/python/eventstore_client.whl" "dist/eventstore_client-$version-py3-none-any.whl"
install -m 0644 "$bin/sdks/python/eventstore_client.tar.gz" "dist/eventstore_client-$version.tar.gz"
install -m 0644 "$bin/sdks/rust/eventstore-client.crate" "dist/eventstore-client-$version.crate"
(cd dist && sha256sum -- *)
echo "sdk-dist: version $version in dist/ ($(($(date +%s) - start)) s)"
