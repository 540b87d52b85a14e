#!/usr/bin/env bash
# Line coverage of the project's C code (core/, backend_memory/,
# backend_postgres/, server/) with gcov + gcovr, without `bazel coverage`:
# the tests are built with --config=coverage (gcc --coverage, see .bazelrc),
# run uncached, and gcovr reads the .gcda files they leave in the output tree.
# The end-to-end tests start the real server as a child process; it writes its
# counters when it exits on SIGTERM, so server/ is counted too.
#   tools/coverage.sh
# Environment:
#   COVERAGE_MIN      minimum total line coverage in percent (default 90)
#   COVERAGE_TARGETS  test patterns (default: the C modules and their suites;
#                     not the SDK and cross-language suites, which test other languages)
#   COVERAGE_REPORT_ONLY=1  skip the test run; report the counters of the last one
#   BAZEL, BAZEL_STARTUP (e.g. --output_base=DIR), BAZEL_FLAGS as in tools/lint.sh
# Output: per-file and total line coverage on stdout, coverage/index.html.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BAZEL=${BAZEL:-bazel}
read -r -a startup <<<"${BAZEL_STARTUP:-}"
read -r -a flags <<<"${BAZEL_FLAGS:-}"
MIN=${COVERAGE_MIN:-90}
# Named packages rather than //...: with a non-default output base, //... would
# also walk the bazel-* convenience links of the default one.
DEFAULT_TARGETS="//core/... //backend_memory/... //backend_postgres/... //server/...
  //tests/conformance/... //tests/e2e/... //tests/pg/... //tests/security/...
  //tests/metrics/... //tests/limits/..."
read -r -d '' -a targets <<<"${COVERAGE_TARGETS:-$DEFAULT_TARGETS}" || true

command -v gcovr >/dev/null || { echo "coverage: gcovr not found (run tools/setup.sh)" >&2; exit 2; }

bz() { "$BAZEL" "${startup[@]}" "$@"; }
OUT=$(bz info "${flags[@]}" --config=coverage output_path 2>/dev/null)
EXECROOT=$(bz info "${flags[@]}" --config=coverage execution_root 2>/dev/null)

rc=0
if [ -z "${COVERAGE_REPORT_ONLY:-}" ]; then
  # Counters of earlier runs would add up with this one's.
  find "$OUT" -path '*coverage/*' -name '*.gcda' -delete 2>/dev/null || true
  echo "coverage: running ${targets[*]} with --config=coverage"
  # Bazel compiles with PWD=/proc/self/cwd, so each object's .gcda path is
  # /proc/self/cwd/bazel-out/...: relative to whichever runfiles folder a test
  # (or the server it starts) runs in. GCOV_PREFIX(_STRIP) sends them all to
  # the execroot instead, beside the .gcno files; libgcov locks and merges.
  bz test "${flags[@]}" --config=coverage --experimental_convenience_symlinks=ignore \
    --test_env=GCOV_PREFIX="$EXECROOT" --test_env=GCOV_PREFIX_STRIP=3 \
    --nocache_test_results --build_tests_only -- "${targets[@]}" || rc=$?
  # A failed test still leaves counters: report them, then fail below.
  [ $rc -eq 0 ] || echo "coverage: tests failed (bazel exit $rc); the report below is partial" >&2
fi

# The instrumented tree is bazel-out/<cpu>-<mode>coverage (--platform_suffix).
mapfile -t objdirs < <(find "$OUT" -maxdepth 1 -type d -name '*coverage')
[ ${#objdirs[@]} -gt 0 ] || { echo "coverage: no instrumented output in $OUT" >&2; exit 2; }

rm -rf coverage
mkdir -p coverage
# gcov runs from the execroot, where the objects were compiled (its source
# links point back into the repository); --root makes paths repo-relative.
echo "coverage: gcovr $(gcovr --version | sed -n 's/^gcovr \(.*\)/\1/p;q')"
(
  cd "$EXECROOT"
  gcovr --root "$ROOT" \
    --filter "$ROOT/core/" --filter "$ROOT/backend_memory/" \
    --filter "$ROOT/backend_postgres/" --filter "$ROOT/server/" \
    --exclude '.*/tests/.*' --exclude '.*\.pb-c\.[ch]$' \
    --gcov-ignore-parse-errors \
    --sort-percentage \
    --txt "$ROOT/coverage/coverage.txt" \
    --json-summary "$ROOT/coverage/summary.json" \
    --html-details "$ROOT/coverage/index.html" --html-title "eventstore line coverage" \
    "${objdirs[@]}"
)
cat coverage/coverage.txt

# Per module, then the verdict on the total.
python3 - "$MIN" <<'PY'
import json, sys
minimum = float(sys.argv[1])
s = json.load(open("coverage/summary.json"))
mods = {}
for f in s["files"]:
    m = f["filename"].split("/", 1)[0]
    c, t = mods.get(m, (0, 0))
    mods[m] = (c + f["line_covered"], t + f["line_total"])
print("coverage: per module")
for m in sorted(mods):
    c, t = mods[m]
    print(f"  {m:18} {c:6}/{t:<6} {100.0 * c / t if t else 0:6.1f}%")
total = s["line_percent"]
print(f"coverage: total line coverage {total:.1f}% (minimum {minimum:g}%), HTML in coverage/index.html")
if total < minimum:
    print(f"coverage: FAILED: {total:.1f}% < {minimum:g}%")
    sys.exit(1)
print("coverage: OK")
PY
if [ $rc -ne 0 ]; then
  echo "coverage: FAILED: tests failed (bazel exit $rc)"
  exit 1
fi
