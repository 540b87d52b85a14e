#!/usr/bin/env bash
# bench/run.sh — the benchmark, end to end; `make bench` calls it.
#
# Builds the server and the load generator optimized (-c opt), starts the
# server on a free loopback port, runs //bench:esbench against it, and stops
# the server with SIGTERM (a clean exit within the grace period is part of
# the check). With several backends it does that once per backend, in turn,
# with the same binaries, so that their figures come from one run on one
# machine. See docs/benchmarks.md.
#
# Usage: bench/run.sh [esbench options]      e.g. bench/run.sh --seconds 10
#                                                 bench/run.sh --only health,append
#        BACKENDS=memory,lmdb,postgres bench/run.sh --only append,batch
# Environment:
#   BACKENDS       the backends to run, in this order, separated by commas or
#                  spaces (default: memory): memory; lmdb (on a fresh data
#                  directory under the run's temporary directory, removed
#                  afterwards; its size per event is reported); postgres (a
#                  throwaway PostgreSQL from tools/pg_temp.sh, fsync on,
#                  removed afterwards; with DATABASE_URL set, that database)
#   BAZEL          the bazel command (default: bazel)
#   BAZEL_STARTUP  bazel startup options, e.g. --output_base=/tmp/ob
#   SERVER_ARGS    extra server flags after the backend's, e.g.
#                  "--threads 1 --workers 2" (a --backend here wins when
#                  BACKENDS is not set, as run_pg.sh uses it)
#   SERVER_BIN     benchmark this server binary instead of building one
#   BENCH_OUT      also write the report to this file
#
# After each run the server's backend metrics (es_backend_* of /metrics) are
# printed: commits and group sizes of the durable backends, their sizes.
#
# Exit status: esbench's (0 = no errors; the worst over the backends), or 1
# when the build, a server's start or its shutdown failed.
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
pg_dir=
cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if [[ -n $pg_dir ]]; then tools/pg_temp.sh stop "$pg_dir" || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

out() { tee ${BENCH_OUT:+-a "$BENCH_OUT"}; }
[[ -z ${BENCH_OUT:-} ]] || : >"$BENCH_OUT"

# GET /metrics from 127.0.0.1:$1 (bash's /dev/tcp: no curl needed).
metrics() {
  local body
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
  body=$(cat <&3)
  exec 3<&-
  printf '%s\n' "$body"
}

# Waits for the server to write a port to $1; prints it. Fails (with the
# server's log) when the server exits or 30 s pass.
wait_port() {
  local file=$1 port=
  for _ in $(seq 1 300); do
    if [[ -s $file ]]; then
      read -r port <"$file" || true
      [[ $port =~ ^[0-9]+$ ]] && {
        echo "$port"
        return 0
      }
      port=
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" && rc=0 || rc=$?
      pid=
      say "the server exited (status $rc) before serving; its log:"
      cat "$tmp/server.log" >&2
      return 1
    fi
    sleep 0.1
  done
  say "the server did not write $file within 30 s; its log:"
  cat "$tmp/server.log" >&2
  return 1
}

# One run against a server on backend $1; sets run_rc. Exits on a failed
# start.
run_backend() {
  local backend=$1 backend_args=() data_dir=
  shift
  case $backend in
    memory) backend_args=(--backend memory) ;;
    lmdb)
      data_dir="$tmp/lmdb-data"
      rm -rf "$data_dir"
      backend_args=(--backend lmdb --data-dir "$data_dir")
      ;;
    postgres)
      local url=${DATABASE_URL:-}
      if [[ -z $url ]]; then
        local started
        started=$(tools/pg_temp.sh start) || {
          say "cannot start a throwaway PostgreSQL"
          exit 1
        }
        url=$(sed -n 's/^export DATABASE_URL=//p' <<<"$started")
        pg_dir=$(sed -n 's/^# stop with: .* stop //p' <<<"$started")
      fi
      backend_args=(--backend postgres --database-url "$url")
      ;;
    *)
      say "unknown backend '$backend' in BACKENDS (memory, lmdb, postgres)"
      exit 1
      ;;
  esac

  local portfile="$tmp/port" mportfile="$tmp/metrics-port"
  rm -f "$portfile" "$mportfile"
  local cmd=("$server" --bind 127.0.0.1:0 --port-file "$portfile" "${backend_args[@]}"
    --metrics-addr 127.0.0.1:0 --metrics-port-file "$mportfile" --log-level warn
    "${server_args[@]}")
  "${cmd[@]}" >"$tmp/server.log" 2>&1 &
  pid=$!
  local port mport
  port=$(wait_port "$portfile") || exit 1
  mport=$(wait_port "$mportfile") || exit 1

  {
    [[ $multi == 1 ]] && printf '\n## Backend: %s\n\n' "$backend"
    echo "server: ${cmd[*]/#$bin\//bazel-bin/} ($("$server" --version 2>&1 | head -n 1))"
    echo "server pid $pid, listening on 127.0.0.1:$port"
    echo
  } | sed -e "s|$tmp/|\$TMP/|g" -e 's|postgresql://[^ ]*|$DATABASE_URL|g' | out

  set +e
  "$esbench" --target "127.0.0.1:$port" --server-pid "$pid" "$@" | out
  run_rc=${PIPESTATUS[0]}
  set -e

  # The server's CPU time over the whole run (fields 14 and 15 of
  # /proc/PID/stat, in clock ticks): with client and server on the same
  # cores, it tells which side the time went to.
  if read -r -a st <"/proc/$pid/stat" 2>/dev/null; then
    # Field 2 (comm) has no spaces here, so the fields split cleanly.
    hz=$(getconf CLK_TCK)
    awk -v u="${st[13]}" -v s="${st[14]}" -v hz="$hz" \
      'BEGIN { printf "server CPU time over the run: %.2f s user, %.2f s system\n", u / hz, s / hz }' |
      out
  fi

  # The backend's own figures, and for lmdb its size on disk per event.
  local m
  if m=$(metrics "$mport" 2>/dev/null); then
    {
      echo
      echo "backend metrics at the end of the run:"
      grep '^es_backend_[a-z]' <<<"$m" | grep -v '^es_backend_errors_total' | sed 's/^/    /'
      if [[ $backend == lmdb ]]; then
        local events bytes
        events=$(awk '$1 == "es_backend_lmdb_events" { print $2 }' <<<"$m")
        bytes=$(stat -c %s "$data_dir/data.mdb" 2>/dev/null || echo 0)
        if [[ -n $events && $events -gt 0 ]]; then
          awk -v b="$bytes" -v e="$events" 'BEGIN {
            printf "lmdb data.mdb: %d bytes for %d events = %.0f bytes per event\n", b, e, b / e }'
        fi
      fi
    } | out
  fi

  # Stop the server the way an operator would, and check that it goes.
  kill -TERM "$pid"
  local stopped=0
  for _ in $(seq 1 150); do
    if ! kill -0 "$pid" 2>/dev/null; then
      stopped=1
      break
    fi
    sleep 0.1
  done
  if [[ $stopped == 0 ]]; then
    say "the server did not exit within 15 s of SIGTERM; killing it"
    run_rc=1
  else
    wait "$pid" && src=0 || src=$?
    pid=
    if [[ $src != 0 ]]; then
      say "the server exited with status $src after SIGTERM; its log:"
      tail -n 50 "$tmp/server.log" >&2
      run_rc=1
    fi
  fi
  if [[ $run_rc != 0 && -s $tmp/server.log ]]; then
    say "last lines of the server log:"
    tail -n 20 "$tmp/server.log" >&2
  fi
  if [[ -n $pid ]]; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
  fi
  [[ -n $data_dir ]] && rm -rf "$data_dir"
  if [[ -n $pg_dir ]]; then
    tools/pg_temp.sh stop "$pg_dir" || true
    pg_dir=
  fi
}

backends_list=${BACKENDS:-}
read -r -a backends <<<"${backends_list//,/ }"
multi=1
if [[ ${#backends[@]} == 0 ]]; then
  # The default, and run_pg.sh's way: SERVER_ARGS may name another backend.
  backends=(memory)
  multi=0
fi
[[ ${#backends[@]} -gt 1 ]] || multi=0
rc=0
for backend in "${backends[@]}"; do
  run_rc=0
  run_backend "$backend" "$@"
  [[ $run_rc -le $rc ]] || rc=$run_rc
done
exit "$rc"
