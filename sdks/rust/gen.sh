#!/usr/bin/env bash
# Regenerates the checked-in stubs sdks/rust/src/gen/ from the Bazel target
# //sdks/rust:stubs (protoc + the pinned protoc-gen-prost/protoc-gen-tonic).
#   sdks/rust/gen.sh           # rebuild the target, copy its outputs to src/gen/
#   sdks/rust/gen.sh --check   # only compare; exit 1 when src/gen/ is stale
# Options for bazel go in BAZEL_FLAGS (e.g. BAZEL_FLAGS=--output_base=...).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
BAZEL="${BAZEL:-bazel}"
check=0
[ "${1:-}" = "--check" ] && check=1

"$here/setup.sh"
cd "$root"
# shellcheck disable=SC2086
$BAZEL ${BAZEL_STARTUP_FLAGS:-} build ${BAZEL_FLAGS:-} //sdks/rust:stubs
bin="$($BAZEL ${BAZEL_STARTUP_FLAGS:-} info ${BAZEL_FLAGS:-} bazel-bin 2>/dev/null)"

status=0
for f in eventstore.v1.rs eventstore.v1.tonic.rs; do
  generated="$bin/sdks/rust/gen/$f"
  checked_in="$here/src/gen/$f"
  if [ "$check" -eq 1 ]; then
    if ! cmp -s "$generated" "$checked_in"; then
      echo "gen.sh: src/gen/$f is stale; run sdks/rust/gen.sh" >&2
      status=1
    fi
  else
    install -m 0644 "$generated" "$checked_in"
    echo "gen.sh: wrote sdks/rust/src/gen/$f"
  fi
done
exit "$status"
