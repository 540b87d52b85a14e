#!/usr/bin/env bash
# The soak test: a bounded run of mixed load against a server it starts itself.
#
#   tools/soak.sh                       3 minutes, in-memory backend
#   SOAK_SECONDS=600 tools/soak.sh      longer
#   BACKEND=lmdb tools/soak.sh          on the durable backend, in a temporary directory
#   BACKEND=postgres tools/soak.sh      on a throwaway PostgreSQL (tools/pg_temp.sh),
#                                       restarted half-way through the run
#
# The driver (//soak:essoak, soak/essoak.cc) runs appenders, readers, live,
# slow and churning subscribers; it asserts that every subscriber saw a
# gap-free, duplicate-free sequence for its range, that the final log holds
# every acknowledged event exactly once, and that the server's RSS stayed under
# start + SOAK_RSS_PER_EVENT bytes per stored event + SOAK_RSS_SLACK_MB. It
# prints the figures. Not part of `make test`.
#
# Environment: SOAK_SECONDS (180), BACKEND (memory|lmdb|postgres), SOAK_ARGS (more
# essoak flags, e.g. "--appenders 8 --churn-subs 6"), SOAK_RSS_PER_EVENT
# (memory and lmdb: 1536 B, the store keeps every event, lmdb's in mapped
# pages; postgres: 0), SOAK_RSS_SLACK_MB
# (64), BAZEL (bazel), BAZEL_STARTUP (bazel startup options).
# Exit status: 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."

SOAK_SECONDS=${SOAK_SECONDS:-180}
BACKEND=${BACKEND:-memory}
BAZEL=${BAZEL:-bazel}
read -r -a startup <<<"${BAZEL_STARTUP:-}"
read -r -a soak_args <<<"${SOAK_ARGS:-}"
case "$BACKEND" in
  memory) per_event=${SOAK_RSS_PER_EVENT:-1536} ;;
  # The store's file is mapped: pages the server touched count in its RSS.
  lmdb) per_event=${SOAK_RSS_PER_EVENT:-1536} ;;
  postgres) per_event=${SOAK_RSS_PER_EVENT:-0} ;;
  *)
    echo "soak: BACKEND must be memory, lmdb or postgres" >&2
    exit 2
    ;;
esac
say() { printf 'soak: %s\n' "$*" >&2; }

# Inside tools/pg_temp.sh: DATABASE_URL is set; run the soak itself.
if [[ $BACKEND == postgres && -z ${SOAK_IN_PG:-} ]]; then
  exec env SOAK_IN_PG=1 tools/pg_temp.sh -- "$0" "$@"
fi

# An optimized build; the convenience symlinks are left alone.
build_opts=(-c opt --experimental_convenience_symlinks=ignore)
say "building //server:eventstore //soak:essoak (-c opt)"
"$BAZEL" "${startup[@]}" build "${build_opts[@]}" //server:eventstore //soak:essoak
bin=$("$BAZEL" "${startup[@]}" info "${build_opts[@]}" bazel-bin 2>/dev/null)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/essoak.XXXXXX")
pid=
restarter=
cleanup() {
  [[ -n $restarter ]] && kill "$restarter" 2>/dev/null || true
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

server_args=(--bind 127.0.0.1:0 --port-file "$tmp/port" --backend "$BACKEND" --log-level warn)
[[ $BACKEND == postgres ]] && server_args+=(--database-url "$DATABASE_URL")
[[ $BACKEND == lmdb ]] && server_args+=(--data-dir "$tmp/data")
"$bin/server/eventstore" "${server_args[@]}" >"$tmp/server.log" 2>&1 &
pid=$!
port=
for _ in $(seq 1 300); do
  if [[ -s $tmp/port ]]; then
    read -r port <"$tmp/port" || true
    [[ $port =~ ^[0-9]+$ ]] && break
    port=
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [[ -z $port ]]; then
  say "the server did not start; its log:"
  cat "$tmp/server.log" >&2
  exit 1
fi
say "server pid $pid on 127.0.0.1:$port, backend $BACKEND, ${SOAK_SECONDS} s"

driver_args=(--target "127.0.0.1:$port" --server-pid "$pid" --seconds "$SOAK_SECONDS"
  --rss-per-event "$per_event" --rss-slack-mb "${SOAK_RSS_SLACK_MB:-64}")
if [[ $BACKEND == postgres ]]; then
  driver_args+=(--allow-errors)
  # Restart PostgreSQL half-way (pg_temp.sh's layout: DIR/data, DIR/port; the
  # URL names the port, the directory is the one holding the socket).
  pgdir=$(ls -d /tmp/es-pg-* 2>/dev/null | while read -r d; do
    [[ -f $d/port && $DATABASE_URL == *":$(cat "$d/port")/"* ]] && echo "$d"; done | head -1)
  pgbin="${ES_PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}"
  as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
  (
    sleep $((SOAK_SECONDS / 2))
    say "restarting PostgreSQL ($pgdir)"
    t0=$(date +%s%N)
    (cd "$pgdir" && as_pg "$pgbin/pg_ctl" -D "$pgdir/data" -m fast -w -t 60 restart \
      -l "$pgdir/postgres.log" >/dev/null)
    say "PostgreSQL restarted in $((($(date +%s%N) - t0) / 1000000)) ms"
  ) &
  restarter=$!
fi

rc=0
"$bin/soak/essoak" "${driver_args[@]}" "${soak_args[@]}" || rc=$?
[[ -n $restarter ]] && { wait "$restarter" || rc=1; restarter=; }

# A clean shutdown is part of the check.
kill -TERM "$pid"
if ! wait "$pid"; then
  say "the server did not exit cleanly; its log:"
  tail -50 "$tmp/server.log" >&2
  rc=1
fi
pid=
if grep -qiE 'assert|sanitizer|leak' "$tmp/server.log"; then
  say "the server log reports a problem:"
  tail -50 "$tmp/server.log" >&2
  rc=1
fi
[[ $rc == 0 ]] && say "PASS" || say "FAIL"
exit "$rc"
