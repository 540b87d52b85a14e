#!/usr/bin/env bash
# clang-format over the project's own C and C++ sources (git-tracked *.c *.h *.cc,
# without third_party/ and generated code such as protoc output).
#   tools/fmt.sh [PATH...]          rewrite in place (optionally only under PATHs)
#   tools/fmt.sh --check [PATH...]  list files that differ and fail
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "fmt: clang-format not found (tools/setup.sh)" >&2; exit 2; }
check=0
if [ "${1:-}" = "--check" ]; then check=1; shift; fi
# ":(glob)" pathspecs so that "core/" matches everything beneath it.
specs=()
if [ $# -eq 0 ]; then
  specs=('*.c' '*.h' '*.cc')
else
  for d in "$@"; do
    d="${d%/}"
    specs+=(":(glob)$d/**/*.c" ":(glob)$d/**/*.h" ":(glob)$d/**/*.cc")
  done
fi
mapfile -t files < <(git ls-files -- "${specs[@]}" |
  grep -v -E '^third_party/|\.pb-c\.[ch]$|\.pb\.(h|cc)$|\.grpc\.pb\.(h|cc)$' || true)
[ ${#files[@]} -gt 0 ] || { echo "fmt: no files"; exit 0; }
if [ $check -eq 1 ]; then
  bad=0
  for f in "${files[@]}"; do
    if ! clang-format --style=file "$f" | cmp -s - "$f"; then echo "needs formatting: $f"; bad=1; fi
  done
  [ $bad -eq 0 ] && echo "fmt: ${#files[@]} files formatted"
  exit $bad
fi
clang-format --style=file -i "${files[@]}"
