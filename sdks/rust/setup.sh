#!/usr/bin/env bash
# Prepares the Rust SDK: installs the pinned protoc plugins (protoc-gen-prost,
# protoc-gen-tonic) that //sdks/rust:stubs runs, and downloads the crates of
# Cargo.lock (`cargo fetch`) so that test.sh and Bazel can build offline.
# Idempotent; quick when everything is already there.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

# cargo from rustup lives in ~/.cargo/bin, which is not always on PATH.
if ! command -v cargo >/dev/null 2>&1; then
  export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || {
  echo "sdks/rust/setup.sh: cargo not found (install Rust with rustup)" >&2
  exit 1
}
[ -x /usr/bin/protoc ] || {
  echo "sdks/rust/setup.sh: /usr/bin/protoc not found (tools/setup.sh installs protobuf-compiler)" >&2
  exit 1
}

version_of() { sed -n "s/^$1 = \"\\(.*\\)\"\$/\\1/p" plugins.bzl; }

# Builds one plugin into .tools/NAME-VERSION/bin unless it is already there.
# Both plugins share one build directory, so the second reuses the first's
# dependencies.
install_plugin() {
  local name="$1" version="$2"
  local root="$here/.tools/$name-$version"
  if [ -x "$root/bin/$name" ]; then
    return 0
  fi
  echo "sdks/rust/setup.sh: installing $name $version from crates.io"
  CARGO_TARGET_DIR="$here/.tools/build" \
    cargo install --locked --quiet --version "=$version" --root "$root" "$name"
}

install_plugin protoc-gen-prost "$(version_of PROTOC_GEN_PROST_VERSION)"
install_plugin protoc-gen-tonic "$(version_of PROTOC_GEN_TONIC_VERSION)"
rm -rf "$here/.tools/build"

# The crates of Cargo.lock, for the SDK, its tests and the consumer test.
cargo fetch --locked --quiet
