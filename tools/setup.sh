#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need, when missing.
# Idempotent and quick when everything is already there.
set -euo pipefail

PACKAGES=(
  bazel-bootstrap bazel-platforms bazel-rules-java bazel-rules-proto bazel-skylib
  build-essential pkg-config
  libgrpc-dev libgrpc++-dev protobuf-compiler protobuf-compiler-grpc grpc-proto
  protobuf-c-compiler libprotobuf-c-dev libprotobuf-dev
  libgtest-dev libpq-dev postgresql liblmdb-dev
  clang clang-format libclang-rt-14-dev
  clang-tidy cppcheck gcovr
  python3 python3-venv openssl
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
