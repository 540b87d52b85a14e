#!/usr/bin/env bash
# Regenerates the checked-in stubs in src/eventstore_client/_gen/ from the
# Bazel target //sdks/python:stubs (grpcio-tools' protoc on //proto).
#
#   sdks/python/gen.sh            build the target and copy its output here
#   sdks/python/gen.sh --check    only compare; exit 1 when the copy is stale
#
# BAZEL (default: bazel) and BAZEL_STARTUP_OPTS (e.g. "--output_base=...")
# select the Bazel to run. Needs the venv of setup.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dest="$here/src/eventstore_client/_gen"
BAZEL="${BAZEL:-bazel}"
# shellcheck disable=SC2206
startup=(${BAZEL_STARTUP_OPTS:-})

"$here/setup.sh"
cd "$root"
"$BAZEL" "${startup[@]}" build //sdks/python:stubs
bin="$("$BAZEL" "${startup[@]}" info bazel-bin 2>/dev/null)"
src="$bin/sdks/python/_gen"
files=(__init__.py eventstore_pb2.py eventstore_pb2.pyi eventstore_pb2_grpc.py)

if [ "${1:-}" = "--check" ]; then
  status=0
  for f in "${files[@]}"; do
    if ! cmp -s "$src/$f" "$dest/$f"; then
      echo "gen.sh: $dest/$f differs from //sdks/python:stubs" >&2
      status=1
    fi
  done
  [ $status -eq 0 ] && echo "gen.sh: checked-in stubs are up to date"
  exit $status
fi

mkdir -p "$dest"
# Remove files of an older generation that the target no longer produces.
for f in "$dest"/*; do
  [ -e "$f" ] || continue
  case " ${files[*]} " in *" $(basename "$f") "*) ;; *) rm -rf "$f" ;; esac
done
for f in "${files[@]}"; do
  install -m 0644 "$src/$f" "$dest/$f"
done
echo "gen.sh: copied ${files[*]} from //sdks/python:stubs to ${dest#"$root"/}"
