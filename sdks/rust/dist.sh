#!/usr/bin/env bash
# Packs the Rust SDK's crate: //sdks/rust:dist runs this, and `make sdk-dist`
# copies the result to dist/eventstore-client-VERSION.crate.
#
#   dist.sh OUT.crate VERSION_FILE FILE...
#
# FILEs are the crate's sources as Bazel lists them (sdks/rust/...). They are
# copied into a scratch directory and packed there with `cargo package`,
# offline and --locked (the crates of Cargo.lock, fetched by setup.sh).
# --no-verify: the consumer test (test.sh) builds the unpacked crate from a
# project of its own, which verifies it the way a user would. Fails unless
# Cargo.toml's version is the one in VERSION.
set -euo pipefail

out="$1" version_file="$2"
shift 2
version="$(cat "$version_file")"

stage="$(mktemp -d "${TMPDIR:-/tmp}/es-rust-dist.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
for f in "$@"; do
  rel="${f#sdks/rust/}"
  mkdir -p "$stage/crate/$(dirname "$rel")"
  cp -L "$f" "$stage/crate/$rel"
done

# cargo (rustup) and its crate cache live in the real home, which a Bazel
# action does not get.
if [ -z "${HOME:-}" ] || [ ! -d "${CARGO_HOME:-$HOME/.cargo}" ]; then
  HOME="$(getent passwd "$(id -u)" | cut -d: -f6)"
  export HOME
fi
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH:/usr/local/bin:/usr/bin:/bin"
command -v cargo > /dev/null || { echo "dist.sh: cargo not found (install Rust with rustup)" >&2; exit 1; }

if ! (cd "$stage/crate" && CARGO_TARGET_DIR="$stage/target" CARGO_TERM_COLOR=never \
  cargo package --locked --offline --no-verify --quiet) > "$stage/log" 2>&1; then
  cat "$stage/log" >&2
  echo "dist.sh: cargo package failed; if crates are missing, run sdks/rust/setup.sh" >&2
  exit 1
fi
crate="$stage/target/package/eventstore-client-$version.crate"
if [ ! -f "$crate" ]; then
  echo "dist.sh: no $(basename "$crate") among $(ls "$stage/target/package"): Cargo.toml's version differs from VERSION ($version)" >&2
  exit 1
fi
mv "$crate" "$out"
