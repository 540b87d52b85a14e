#!/usr/bin/env bash
# The QA pipeline (`make qa`): formatting, static analysis, then the tests with
# line coverage of at least COVERAGE_MIN percent (default 90). Stops at the
# first failing step and prints a summary of the steps run.
# Passes BAZEL, BAZEL_STARTUP, BAZEL_FLAGS and COVERAGE_* on to the steps.
set -uo pipefail
cd "$(dirname "$0")/.."
export COVERAGE_MIN=${COVERAGE_MIN:-90}

steps=("fmt:tools/fmt.sh --check" "lint:tools/lint.sh" "coverage:tools/coverage.sh")
summary=()
failed=""
for step in "${steps[@]}"; do
  name=${step%%:*}
  cmd=${step#*:}
  echo "==> qa: $name ($cmd)"
  start=$SECONDS
  if $cmd; then
    summary+=("$(printf '%-9s ok      %4ss' "$name" $((SECONDS - start)))")
  else
    rc=$?
    summary+=("$(printf '%-9s FAILED  %4ss  (exit %s)' "$name" $((SECONDS - start)) "$rc")")
    failed=$name
    break
  fi
done

echo "==> qa: summary"
for line in "${summary[@]}"; do echo "  $line"; done
for step in "${steps[@]}"; do
  name=${step%%:*}
  printf '%s\n' "${summary[@]}" | grep -q "^$name " || printf '  %-9s skipped\n' "$name"
done
if [ -n "$failed" ]; then
  echo "qa: FAILED at $failed"
  exit 1
fi
echo "qa: OK (coverage minimum ${COVERAGE_MIN}%)"
