#!/usr/bin/env bash
# bench/run.sh — the benchmark, end to end; `make bench` calls it.
#
# Builds the server and the load generator optimized (-c opt), starts the
# server on a free loopback port with the in-memory backend, runs
# //bench:esbench against it, and stops the server with SIGTERM (a clean exit
# within the grace period is part of the check). See docs/benchmarks.md.
#
# Usage: bench/run.sh [esbench options]      e.g. bench/run.sh --seconds 10
#                                                 bench/run.sh --only health,append
# Environment:
#   BAZEL          the bazel command (default: bazel)
#   BAZEL_STARTUP  bazel startup options, e.g. --output_base=/tmp/ob
#   SERVER_ARGS    extra server flags, e.g. "--threads 1 --workers 2"
#   SERVER_BIN     benchmark this server binary instead of building one
#   BENCH_OUT      also write the report to this file
#
# Exit status: esbench's (0 = no errors), or 1 when the build, the server's
# start or its shutdown failed.
set -euo pipefail

cd "$(dirname "$0")/.."

BAZEL=${BAZEL:-bazel}
read -r -a startup <<<"${BAZEL_STARTUP:-}"
read -r -a server_args <<<"${SERVER_ARGS:-}"
# The convenience symlinks (bazel-bin, ...) are left alone: an optimized build
# should not move them under whoever else uses the work tree.
build_opts=(-c opt --symlink_prefix=/)

say() { printf 'bench/run.sh: %s\n' "$*" >&2; }

targets=(//bench:esbench)
[[ -n ${SERVER_BIN:-} ]] || targets+=(//server:eventstore)
say "building ${targets[*]} (-c opt)"
"$BAZEL" "${startup[@]}" build "${build_opts[@]}" "${targets[@]}"
bin=$("$BAZEL" "${startup[@]}" info "${build_opts[@]}" bazel-bin 2>/dev/null)
server=${SERVER_BIN:-$bin/server/eventstore}
esbench="$bin/bench/esbench"
for f in "$server" "$esbench"; do
  [[ -x $f ]] || { say "missing $f after the build"; exit 1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/esbench.XXXXXX")
pid=
cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

portfile="$tmp/port"
cmd=("$server" --bind 127.0.0.1:0 --port-file "$portfile" --backend memory
  --log-level warn "${server_args[@]}")
"${cmd[@]}" >"$tmp/server.log" 2>&1 &
pid=$!

# The server writes its bound port to the file once it is serving.
port=
for _ in $(seq 1 300); do
  if [[ -s $portfile ]]; then
    read -r port <"$portfile" || true
    [[ $port =~ ^[0-9]+$ ]] && break
    port=
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" && rc=0 || rc=$?
    pid=
    say "the server exited (status $rc) before serving; its log:"
    cat "$tmp/server.log" >&2
    exit 1
  fi
  sleep 0.1
done
if [[ -z $port ]]; then
  say "the server did not write $portfile within 30 s; its log:"
  cat "$tmp/server.log" >&2
  exit 1
fi

{
  echo "server: ${cmd[*]/#$bin\//bazel-bin/} ($("$server" --version 2>&1 | head -n 1))"
  echo "server pid $pid, listening on 127.0.0.1:$port"
  echo
} | sed "s|$tmp/|\$TMP/|g" | tee ${BENCH_OUT:+"$BENCH_OUT"}

set +e
"$esbench" --target "127.0.0.1:$port" --server-pid "$pid" "$@" | tee ${BENCH_OUT:+-a "$BENCH_OUT"}
rc=${PIPESTATUS[0]}
set -e

# The server's CPU time over the whole run (fields 14 and 15 of
# /proc/PID/stat, in clock ticks): with client and server on the same cores,
# it tells which side the time went to.
if read -r -a st <"/proc/$pid/stat" 2>/dev/null; then
  # Field 2 (comm) has no spaces here, so the fields split cleanly.
  hz=$(getconf CLK_TCK)
  awk -v u="${st[13]}" -v s="${st[14]}" -v hz="$hz" \
    'BEGIN { printf "server CPU time over the run: %.2f s user, %.2f s system\n", u / hz, s / hz }' |
    tee ${BENCH_OUT:+-a "$BENCH_OUT"}
fi

# Stop the server the way an operator would, and check that it goes.
kill -TERM "$pid"
stopped=0
for _ in $(seq 1 150); do
  if ! kill -0 "$pid" 2>/dev/null; then
    stopped=1
    break
  fi
  sleep 0.1
done
if [[ $stopped == 0 ]]; then
  say "the server did not exit within 15 s of SIGTERM; killing it"
  rc=1
else
  wait "$pid" && src=0 || src=$?
  pid=
  if [[ $src != 0 ]]; then
    say "the server exited with status $src after SIGTERM; its log:"
    tail -n 50 "$tmp/server.log" >&2
    rc=1
  fi
fi
if [[ $rc != 0 && -s $tmp/server.log ]]; then
  say "last lines of the server log:"
  tail -n 20 "$tmp/server.log" >&2
fi
exit "$rc"
