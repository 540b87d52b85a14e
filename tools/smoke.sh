#!/usr/bin/env bash
# Calls a running server with a stock gRPC client (grpcurl, installed through
# the Go module proxy when missing): lists services through reflection, checks
# health, appends an event and reads it back.
set -euo pipefail
ADDR="${1:-127.0.0.1:50051}"
export PATH="$PATH:$(go env GOPATH 2>/dev/null)/bin"
if ! command -v grpcurl >/dev/null; then
  echo "smoke: installing grpcurl with go install"
  go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3
fi
G=(grpcurl -plaintext -max-time 5)
echo "== services (reflection)"
"${G[@]}" "$ADDR" list
echo "== health"
"${G[@]}" -d '{"service":""}' "$ADDR" grpc.health.v1.Health/Check
stream="smoke-$(date +%s%N)"
echo "== append to $stream"
"${G[@]}" -d "{\"stream_id\":\"$stream\",\"stream_type\":\"Smoke\",\"expected_kind\":\"EXPECTED_NO_STREAM\",\"events\":[{\"event_type\":\"SmokeTested\",\"content_type\":\"application/json\",\"payload\":\"$(printf '{"ok":true}' | base64)\"}]}" \
  "$ADDR" eventstore.v1.EventStore/Append
echo "== read it back"
out=$("${G[@]}" -d "{\"stream_id\":\"$stream\"}" "$ADDR" eventstore.v1.EventStore/ReadStream)
echo "$out"
grep -q '"eventType": "SmokeTested"' <<<"$out"
echo "smoke: OK"
