#!/usr/bin/env bash
# The PostgreSQL benchmarks, all against one throwaway PostgreSQL in one run
# (fsync and synchronous_commit on, as tools/pg_temp.sh starts it):
#   1. the reference: the same 256-byte rows inserted straight into
#      PostgreSQL with libpq, one row per transaction, at 1, 16 and 64 in
#      flight (bench/pg/pg_raw_insert.c);
#   2. the backend alone, without gRPC (--mode backend of the same tool);
#   3. the server on PostgreSQL under esbench: Health/Check as the no-op
#      ceiling, single-event Appends at 1, 16, 64 in flight, batches of 10,
#      ReadStream pages, subscription catch-up and live delivery, and the
#      fan-out group (0..1000 live subscribers while Appends run, paced
#      latency, 100 subscribers catching up).
# Arguments are passed to esbench (e.g. --rounds 1 --seconds 3).
# Environment: DATABASE_URL (use this database instead of a throwaway one),
# BAZEL_STARTUP (e.g. --output_base=...), SERVER_BIN (benchmark this server
# binary instead of the one built here).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${DATABASE_URL:-} ]]; then
  exec tools/pg_temp.sh -- "$0" "$@"
fi

BAZEL=${BAZEL:-bazel}
read -r -a startup <<<"${BAZEL_STARTUP:-}"
build_opts=(-c opt --symlink_prefix=/)
"$BAZEL" "${startup[@]}" build "${build_opts[@]}" //bench/pg:pg_raw_insert //bench:esbench \
  //server:eventstore
bin=$("$BAZEL" "${startup[@]}" info "${build_opts[@]}" bazel-bin 2>/dev/null)

echo "# Reference: raw libpq INSERTs, one row per transaction"
"$bin/bench/pg/pg_raw_insert" --url "$DATABASE_URL"
echo
echo "# The PostgreSQL backend alone (no gRPC)"
"$bin/bench/pg/pg_raw_insert" --url "$DATABASE_URL" --mode backend
echo
echo "# The server on PostgreSQL (esbench over gRPC)"
SERVER_BIN="${SERVER_BIN:-$bin/server/eventstore}" \
  SERVER_ARGS="--backend postgres --database-url $DATABASE_URL" \
  bench/run.sh --only health,append,hot,batch,read,catchup,live,fanout "$@"
