#!/usr/bin/env bash
# Tests of the Rust SDK, run by `bazel test //sdks/rust:test` (and by hand):
#   1. cargo test: unit tests, doc tests, and tests/integration.rs against
#      real servers that the tests start on free loopback ports;
#   2. the consumer test: the .crate of //sdks/rust:dist ($ES_RUST_CRATE, set
#      by Bazel; made here with `cargo package` when unset), unpacked in a temp
#      dir outside the repository, and a throwaway project that depends on it
#      with the dependencies README.md names: it builds the packaged example
#      (examples/quickstart.rs) and the README's quickstart, and runs the
#      example against a server started here.
# Usage: sdks/rust/test.sh [SERVER_BINARY]   (default: $ES_SERVER_BIN, else
# ../../bazel-bin/server/eventstore). Needs sdks/rust/setup.sh to have run:
# it builds offline from the crates that setup.sh fetched.
set -euo pipefail

# The real directory of this script (under Bazel it runs from runfiles).
here="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)"

server="${1:-${ES_SERVER_BIN:-$here/../../bazel-bin/server/eventstore}}"
ES_SERVER_BIN="$(readlink -f "$server" || true)"
if [ ! -x "$ES_SERVER_BIN" ]; then
  echo "sdks/rust/test.sh: server binary '$server' not found: bazel build //server:eventstore" >&2
  exit 1
fi
export ES_SERVER_BIN
if [ -n "${ES_RUST_CRATE:-}" ]; then ES_RUST_CRATE="$(readlink -f "$ES_RUST_CRATE")"; fi

# cargo (rustup) lives in ~/.cargo/bin; Bazel's test environment may have
# neither it on PATH nor the real HOME.
if [ -z "${HOME:-}" ] || [ ! -d "${CARGO_HOME:-$HOME/.cargo}" ]; then
  HOME="$(getent passwd "$(id -u)" | cut -d: -f6)"
  export HOME
fi
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
command -v cargo >/dev/null || { echo "sdks/rust/test.sh: cargo not found" >&2; exit 1; }

# One target dir for the tests, `cargo package` and the consumer project, so
# that the consumer build reuses every dependency the tests compiled.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"
cd "$here"

offline() {
  "$@" || {
    echo "sdks/rust/test.sh: '$*' failed; if crates are missing, run sdks/rust/setup.sh" >&2
    return 1
  }
}

started=$(date +%s)
echo "== cargo test (server: $ES_SERVER_BIN)"
# An ignored test (#[ignore]) fails the run: it would hide an untested case.
tests_log="$(mktemp "${TMPDIR:-/tmp}/eventstore-rust-tests.XXXXXX")"
if ! offline cargo test --locked --offline 2>&1 | tee "$tests_log"; then
  rm -f "$tests_log"
  exit 1
fi
ignored="$(sed -n 's/^test result: .* \([0-9][0-9]*\) ignored;.*/\1/p' "$tests_log" | awk '{ n += $1 } END { print n + 0 }')"
results="$(grep -c '^test result: ' "$tests_log" || true)"
rm -f "$tests_log"
if [ "$results" -eq 0 ]; then
  echo "sdks/rust/test.sh: FAILED: cargo test printed no test result" >&2
  exit 1
fi
if [ "$ignored" -ne 0 ]; then
  echo "sdks/rust/test.sh: FAILED: $ignored ignored tests: an ignored test hides an untested case" >&2
  exit 1
fi

echo "== consumer test"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)"
if [ -n "${ES_RUST_CRATE:-}" ]; then
  crate="$ES_RUST_CRATE" # what `make sdk-dist` ships
else
  offline cargo package --locked --offline --allow-dirty --quiet
  crate="$CARGO_TARGET_DIR/package/eventstore-client-$version.crate"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/eventstore-rust-consumer.XXXXXX")"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

tar -xzf "$crate" -C "$work"
mkdir -p "$work/app/src/bin"
# The example as shipped in the .crate is the consumer's program; the README's
# quickstart must compile too, with the dependencies the README names.
cp "$work/eventstore-client-$version/examples/quickstart.rs" "$work/app/src/main.rs"
awk '/^## Quickstart/ { q = 1 } q && /^```rust$/ { on = 1; next } on && /^```$/ { exit } on' \
  "$work/eventstore-client-$version/README.md" > "$work/app/src/bin/readme.rs"
grep -q 'async fn main' "$work/app/src/bin/readme.rs" || {
  echo "sdks/rust/test.sh: no quickstart program in the packaged README.md" >&2
  exit 1
}
# The dependencies README.md tells users to add (`cargo add NAME [--features A,B]` lines),
# at the versions of Cargo.lock; serde's derive is the packaged example's own addition.
readme_deps="$(sed -n 's/^cargo add \([A-Za-z0-9_-]*\)\( --features \([A-Za-z0-9_,-]*\)\)\{0,1\} *\(#.*\)\{0,1\}$/\1 \3/p' \
  "$work/eventstore-client-$version/README.md" | grep -v '^eventstore-client ' |
  while read -r name features; do
    printf '%s = { version = "*", features = [%s] }\n' "$name" \
      "$(printf '%s' "$features" | sed 's/\([^,][^,]*\)/"\1"/g; s/,/, /g')"
  done)"
[ -n "$readme_deps" ] || { echo "sdks/rust/test.sh: README.md names no \`cargo add\` dependencies" >&2; exit 1; }
cat > "$work/app/Cargo.toml" <<TOML
[package]
name = "eventstore-consumer"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
eventstore-client = { path = "../eventstore-client-$version" }
serde = { version = "1", features = ["derive"] }
$readme_deps

[workspace]

# As in the SDK's Cargo.toml, so that the build reuses what the tests built.
[profile.dev]
debug = "line-tables-only"

[profile.dev.package."*"]
debug = false
TOML
# The versions the SDK is tested with (cargo prunes what the app does not use).
cp Cargo.lock "$work/app/Cargo.lock"
offline cargo build --offline --quiet --manifest-path "$work/app/Cargo.toml"
# As README.md says, the crate builds without TLS (no rustls, no ring) too.
offline cargo check --offline --locked --quiet --lib --no-default-features --features json \
  --manifest-path "$work/eventstore-client-$version/Cargo.toml"

"$ES_SERVER_BIN" --backend memory --bind 127.0.0.1:0 --port-file "$work/port" --log-level warn &
server_pid=$!
for _ in $(seq 1 500); do
  [ -s "$work/port" ] && break
  sleep 0.02
done
port="$(cat "$work/port")"
EVENTSTORE_ADDRESS="127.0.0.1:$port" "$CARGO_TARGET_DIR/debug/eventstore-consumer"

echo "sdks/rust/test.sh: all passed in $(( $(date +%s) - started )) s"
