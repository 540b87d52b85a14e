#!/usr/bin/env bash
# Static analysis of the project's own C code: clang-tidy (checks in
# .clang-tidy) and cppcheck (suppressions in tools/cppcheck-suppressions.txt,
# each with its reason). Exits non-zero when either tool reports anything.
#   tools/lint.sh               core/, backend_memory/, backend_postgres/, backend_lmdb/, server/
#   tools/lint.sh DIR...        only those folders
# Environment:
#   BAZEL            bazel binary (default: bazel)
#   BAZEL_STARTUP    startup options, e.g. --output_base=/some/dir (default: none)
#   BAZEL_FLAGS      extra build options
#   LINT_JOBS        parallel clang-tidy processes (default: 2)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BAZEL=${BAZEL:-bazel}
read -r -a startup <<<"${BAZEL_STARTUP:-}"
read -r -a flags <<<"${BAZEL_FLAGS:-}"
JOBS=${LINT_JOBS:-2}

for t in clang-tidy cppcheck; do
  command -v "$t" >/dev/null || { echo "lint: $t not found (run tools/setup.sh)" >&2; exit 2; }
done

dirs=("$@")
[ ${#dirs[@]} -gt 0 ] || dirs=(core backend_memory backend_postgres backend_lmdb server)
# Sources on disk (not only tracked ones, so new files are checked before they
# are committed); tests/ folders are C++ test code and are not linted here.
mapfile -t srcs < <(find "${dirs[@]%/}" -name '*.c' -not -path '*/tests/*' | sort)
[ ${#srcs[@]} -gt 0 ] || { echo "lint: no sources"; exit 0; }

# The server includes the protobuf-c headers that protoc-c generates at build time.
echo "lint: building generated headers (//proto:eventstore_c //proto:descriptors)"
"$BAZEL" "${startup[@]}" build "${flags[@]}" --experimental_convenience_symlinks=ignore \
  --ui_event_filters=-info,-progress //proto:eventstore_c //proto:descriptors >/dev/null
BIN=$("$BAZEL" "${startup[@]}" info "${flags[@]}" bazel-bin 2>/dev/null)
[ -f "$BIN/proto/eventstore/v1/eventstore.pb-c.h" ] || { echo "lint: no generated headers in $BIN/proto" >&2; exit 2; }

defs=(-D_GNU_SOURCE)
incs=(-Icore/include -Icore/src -Ibackend_memory/include -Ibackend_postgres/include -Ibackend_lmdb/include
      -Iserver -Iproto -I"$BIN/proto" -I/usr/include/postgresql)

status=0

echo "lint: clang-tidy $(clang-tidy --version | sed -n 's/.*LLVM version \([0-9.]*\).*/\1/p') on ${#srcs[@]} files"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tidy_out=$work/clang-tidy.txt
# A compilation database in a scratch folder gives every file the same flags
# as copts.bzl; -isystem for the generated code, whose warnings are protoc-c's.
tidy_args=(-std=c11 "${defs[@]}" -Icore/include -Icore/src -Ibackend_memory/include
           -Ibackend_postgres/include -Ibackend_lmdb/include -Iserver -Iproto -isystem "$BIN/proto"
           -isystem /usr/include/postgresql)
{
  echo '['
  sep=''
  for f in "${srcs[@]}"; do
    args=''
    for a in cc "${tidy_args[@]}" -c "$f"; do args+="\"${a//\"/\\\"}\","; done
    printf '%s{"directory":"%s","file":"%s","arguments":[%s]}\n' "$sep" "$ROOT" "$f" "${args%,}"
    sep=','
  done
  echo ']'
} >"$work/compile_commands.json"
printf '%s\n' "${srcs[@]}" |
  xargs -P "$JOBS" -n 4 clang-tidy --quiet -p "$work" >"$tidy_out" 2>"$work/stderr" && tidy_rc=0 || tidy_rc=$?
# WarningsAsErrors makes clang-tidy fail on any finding; a failure without a
# diagnostic on stdout (crash, bad flags) is reported with its stderr.
if [ "$tidy_rc" -ne 0 ] && ! grep -qE ': (warning|error): ' "$tidy_out"; then
  cat "$work/stderr"
  echo "lint: clang-tidy failed (exit $tidy_rc) without a diagnostic"
  status=1
elif grep -E ': (warning|error): ' "$tidy_out" >/dev/null; then
  cat "$tidy_out"
  echo "lint: clang-tidy: $(grep -cE ': (warning|error): ' "$tidy_out") finding(s)"
  status=1
else
  echo "lint: clang-tidy clean"
fi

echo "lint: $(cppcheck --version) on ${#srcs[@]} files"
# System headers are described by cppcheck's library configs (std, posix, gnu)
# rather than parsed, which is how cppcheck is meant to be used. The one
# exception is protobuf-c.h: the generated headers test its version macros in
# #if and use its declaration macros, so cppcheck is shown that header alone
# (through a scratch folder, not -I/usr/include, which would pull in libc).
mkdir -p "$work/sys"
ln -s /usr/include/protobuf-c "$work/sys/protobuf-c"
if cppcheck --quiet --std=c11 --language=c --library=posix --library=gnu \
    --enable=warning,performance,portability --inline-suppr \
    --suppressions-list=tools/cppcheck-suppressions.txt \
    --error-exitcode=1 -j "$JOBS" \
    --template='{file}:{line}:{column}: {severity}: {message} [{id}]' \
    "${defs[@]}" "${incs[@]}" -I"$work/sys" --suppress="*:$BIN/*" --suppress="*:$work/sys/*" \
    "${srcs[@]}"; then
  echo "lint: cppcheck clean"
else
  echo "lint: cppcheck: findings above"
  status=1
fi

[ $status -eq 0 ] && echo "lint: OK" || echo "lint: FAILED"
exit $status
