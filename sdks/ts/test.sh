#!/usr/bin/env bash
# Builds the TypeScript SDK (in a temporary copy) and runs its node:test suite: unit tests, every
# method and typed error against real servers, the automatic resume across
# server restarts, the stubs check and the consumer test (npm pack → install
# into a throwaway project outside the repository → run the example).
# Exits non-zero on failure; ends with node's test summary.
#
#   sdks/ts/test.sh                                   # standalone
#   ES_SERVER_BIN=/path/to/eventstore sdks/ts/test.sh
#   bazel test //sdks/ts:test                         # sets ES_SERVER_BIN and ES_STUBS_TS
#
# Environment:
#   ES_SERVER_BIN  the server binary (default: ../../bazel-bin/server/eventstore from sdks/ts)
#   ES_STUBS_TS    the output of //sdks/ts:stubs, to compare with src/gen/. When unset and not
#                  under Bazel, this script builds the target (and the server) with
#                  `bazel ${BAZEL_OUTPUT_BASE:+--output_base=$BAZEL_OUTPUT_BASE} build`;
#                  ES_SKIP_BAZEL=1 skips that (the stubs check is then reported as skipped).
#   ES_TS_PACKAGE  the npm package of //sdks/ts:dist: the consumer test installs it, and its
#                  dist/ is the one the in-repository example runs with. Built like ES_STUBS_TS
#                  when unset; with ES_SKIP_BAZEL=1 the SDK is compiled and packed here instead.
#
# A skipped or todo test fails the run (a skip would hide a missing tool or an untested case);
# only a run by hand with ES_SKIP_BAZEL=1, outside Bazel, may skip.
set -euo pipefail

self="$(readlink -f "${BASH_SOURCE[0]}")"
here="$(dirname "$self")" # the real sdks/ts, also when run from Bazel's runfiles
root="$(cd "$here/../.." && pwd)"

# Resolve paths given relative to the caller's directory before leaving it.
abs() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
if [ -n "${ES_SERVER_BIN:-}" ]; then ES_SERVER_BIN="$(abs "$ES_SERVER_BIN")"; fi
if [ -n "${ES_STUBS_TS:-}" ]; then ES_STUBS_TS="$(abs "$ES_STUBS_TS")"; fi
if [ -n "${ES_TS_PACKAGE:-}" ]; then ES_TS_PACKAGE="$(abs "$ES_TS_PACKAGE")"; fi

# Under `bazel test`, HOME is a fresh temporary directory: keep using the real
# npm cache (filled by setup.sh) so that the consumer test installs offline.
real_home="$(getent passwd "$(id -u)" | cut -d: -f6 || true)"
export npm_config_cache="${npm_config_cache:-${real_home:-$HOME}/.npm}"
export npm_config_update_notifier=false
export PATH="$PATH:/usr/local/bin:/usr/bin:/bin"

if [ -z "${ES_STUBS_TS:-}" ] && [ -z "${TEST_SRCDIR:-}" ] && [ "${ES_SKIP_BAZEL:-0}" != 1 ] &&
  command -v "${BAZEL:-bazel}" > /dev/null 2>&1; then
  startup=()
  [ -n "${BAZEL_OUTPUT_BASE:-}" ] && startup+=("--output_base=$BAZEL_OUTPUT_BASE")
  targets=(//sdks/ts:stubs //sdks/ts:dist)
  [ -z "${ES_SERVER_BIN:-}" ] && targets+=(//server:eventstore)
  echo "test.sh: bazel build ${targets[*]}"
  (cd "$root" && "${BAZEL:-bazel}" "${startup[@]}" build --color=no --noshow_progress "${targets[@]}" 2>&1 | tail -2)
  bin="$(cd "$root" && "${BAZEL:-bazel}" "${startup[@]}" info bazel-bin 2>/dev/null)"
  ES_STUBS_TS="$bin/sdks/ts/gen/eventstore/v1/eventstore.ts"
  ES_TS_PACKAGE="${ES_TS_PACKAGE:-$bin/sdks/ts/eventstore-c-client.tgz}"
  [ -z "${ES_SERVER_BIN:-}" ] && ES_SERVER_BIN="$bin/server/eventstore"
fi
export ES_SERVER_BIN="${ES_SERVER_BIN:-$root/bazel-bin/server/eventstore}"
if [ -n "${ES_STUBS_TS:-}" ]; then export ES_STUBS_TS; fi
if [ -n "${ES_TS_PACKAGE:-}" ]; then export ES_TS_PACKAGE; fi

"$here/setup.sh"

# Work on a private copy so that the source tree is not written to (and two
# runs, e.g. from two Bazel output bases, cannot disturb each other).
work="$(mktemp -d "${TEST_TMPDIR:-${TMPDIR:-/tmp}}/es-ts-test.XXXXXX")"
trap 'rm -rf "$work"' EXIT
tar -C "$here" --exclude=./node_modules --exclude=./dist --exclude=./build --exclude='./*.tgz' -cf - . |
  tar -C "$work" -xf -
ln -s "$here/node_modules" "$work/node_modules"
export ES_TS_SOURCE_DIR="$here"
cd "$work"

echo "test.sh: tsc (dist/, then tests and examples) in $work"
if [ -n "${ES_TS_PACKAGE:-}" ]; then
  # dist/ as compiled into the package: the same build is not made twice.
  tar -xzf "$ES_TS_PACKAGE" -C "$work" --strip-components=1 package/dist
else
  npm run --silent build
fi
npm run --silent build:test

echo "test.sh: node --test (server: $ES_SERVER_BIN)"
# Files run one after the other; the consumer test last. The TAP copy is for
# counting skips.
node --test --test-concurrency=1 --test-timeout=120000 \
  --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="$work/results.tap" \
  build/test/unit.test.js \
  build/test/gen.test.js \
  build/test/client.test.js \
  build/test/subscribe.test.js \
  build/test/fake.test.js \
  build/test/dcb.test.js \
  build/test/consumer.test.js

skipped="$(sed -n 's/^# skipped \([0-9]*\)$/\1/p' "$work/results.tap" | tail -1)"
todo="$(sed -n 's/^# todo \([0-9]*\)$/\1/p' "$work/results.tap" | tail -1)"
if [ -z "$skipped" ] || [ -z "$todo" ]; then
  echo "test.sh: FAILED: no test summary in the TAP output" >&2
  exit 1
fi
if [ "$skipped" != 0 ] || [ "$todo" != 0 ]; then
  if [ "${ES_SKIP_BAZEL:-0}" = 1 ] && [ -z "${TEST_SRCDIR:-}" ]; then
    echo "test.sh: $skipped skipped and $todo todo (allowed by ES_SKIP_BAZEL=1)"
  else
    echo "test.sh: FAILED: $skipped skipped and $todo todo tests: a skip hides a missing tool or an untested case" >&2
    exit 1
  fi
fi
