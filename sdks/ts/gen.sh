#!/usr/bin/env bash
# Regenerates the checked-in stubs under src/gen/ from //proto: builds the Bazel
# target //sdks/ts:stubs (protoc + ts-proto from node_modules) and copies its
# output. Never edit src/gen/ by hand.
#
#   sdks/ts/gen.sh                       # uses `bazel` with its default output base
#   BAZEL_OUTPUT_BASE=/path sdks/ts/gen.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
BAZEL="${BAZEL:-bazel}"
startup=()
if [ -n "${BAZEL_OUTPUT_BASE:-}" ]; then
  startup+=("--output_base=$BAZEL_OUTPUT_BASE")
fi

"$here/setup.sh"
cd "$root"
"$BAZEL" "${startup[@]}" build //sdks/ts:stubs
bin="$("$BAZEL" "${startup[@]}" info bazel-bin 2>/dev/null)"
src="$bin/sdks/ts/gen/eventstore/v1/eventstore.ts"
dst="$here/src/gen/eventstore/v1/eventstore.ts"
mkdir -p "$(dirname "$dst")"
install -m 0644 "$src" "$dst"
echo "gen.sh: wrote ${dst#"$root"/}"
