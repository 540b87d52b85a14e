#!/usr/bin/env bash
# A throwaway PostgreSQL for manual runs, benchmarks and //tests/pg's run of
# the end-to-end suite (the C++ tests use tests/pg/pg_fixture.h, the same from
# inside the test process).
#
#   tools/pg_temp.sh -- COMMAND [ARGS...]
#       initdb + postgres in a fresh directory under /tmp on a free loopback
#       port, runs COMMAND with DATABASE_URL set to it, then stops PostgreSQL
#       and removes the directory (also on Ctrl-C or failure).
#   tools/pg_temp.sh start      starts one and prints `export DATABASE_URL=...`
#                               and the directory (for `stop`)
#   tools/pg_temp.sh stop DIR   stops it and removes DIR
#
# fsync and synchronous_commit are on: the durability the store promises is the
# durability it is measured with. When run as root, PostgreSQL runs as the
# `postgres` user (it refuses root). Binaries: $ES_PG_BINDIR, else the newest
# /usr/lib/postgresql/*/bin (Debian's `postgresql` package, see tools/setup.sh).
set -euo pipefail

bindir="${ES_PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}"
if [ -z "$bindir" ] || [ ! -x "$bindir/postgres" ]; then
  echo "pg_temp: no PostgreSQL server binaries (install the postgresql package)" >&2
  exit 1
fi

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A port nothing listens on (postgres fails to start if one is taken in
# between, and start() then tries another).
free_port() {
  local p hex
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 40000))
    hex=$(printf ':%04X ' "$p")
    if ! grep -qi "$hex" /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

start() {
  local dir port
  dir="$(mktemp -d /tmp/es-pg-XXXXXX)"
  chmod 700 "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  (cd "$dir" && as_pg "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 \
    --locale=C.UTF-8 -N >"$dir/initdb.log" 2>&1) || {
    cat "$dir/initdb.log" >&2
    rm -rf "$dir"
    return 1
  }
  local attempt
  for attempt in 1 2 3; do
    port="$(free_port)"
    if (cd "$dir" && as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
      -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir \
          -c fsync=on -c synchronous_commit=on -c full_page_writes=on \
          -c max_connections=300 -c shared_buffers=128MB" start >/dev/null); then
      break
    fi
    if [ "$attempt" = 3 ]; then
      cat "$dir/postgres.log" >&2
      rm -rf "$dir"
      return 1
    fi
  done
  echo "$port" >"$dir/port"
  PG_DIR="$dir"
  PG_URL="postgresql://postgres@127.0.0.1:$port/postgres"
}

stop() {
  local dir="$1"
  [ -d "$dir/data" ] && (cd "$dir" && as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop \
    >/dev/null 2>&1 || true)
  rm -rf "$dir"
}

case "${1:-}" in
  start)
    start
    echo "export DATABASE_URL=$PG_URL"
    echo "# stop with: $0 stop $PG_DIR"
    ;;
  stop)
    stop "${2:?usage: $0 stop DIR}"
    ;;
  --)
    shift
    start
    trap 'stop "$PG_DIR"' EXIT INT TERM
    DATABASE_URL="$PG_URL" "$@"
    ;;
  *)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
