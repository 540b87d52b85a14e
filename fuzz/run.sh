#!/usr/bin/env bash
# Builds the fuzz targets and runs each for a bounded time.
#
#   fuzz/run.sh [seconds-per-target] [target...]   (default 60 s, all targets)
#
# Each target starts from its seed corpus in fuzz/corpus/<target>/ (read only:
# new inputs go to a scratch corpus in fuzz/out/corpus/<target>/, so the
# repository stays small). Crash reproducers are written to fuzz/out/crashes/.
# Exits non-zero if any target crashes, leaks, times out or runs out of memory.
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${FUZZ_OUT:-$here/out}"
secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(fuzz_append fuzz_append_many fuzz_read fuzz_validate fuzz_reflection)

FUZZ_OUT="$out" "$here/build.sh" || exit 1
mkdir -p "$out/crashes"

# Report UBSan findings as crashes; keep leak detection on.
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"

failed=()
for t in "${targets[@]}"; do
  work="$out/corpus/$t"
  mkdir -p "$work"
  echo "== $t: ${secs}s"
  log="$out/$t.log"
  if "$out/$t" "$work" "$here/corpus/$t" \
      -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
      -artifact_prefix="$out/crashes/$t-" -print_final_stats=1 >"$log" 2>&1; then
    grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)|cov:" "$log" \
      | tail -4
  else
    echo "!! $t FAILED (log: $log)"
    grep -E "ERROR|SUMMARY|invariant|Test unit written|runtime error" "$log" | head -20
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz: all targets ran ${secs}s without a finding"
