#!/usr/bin/env bash
# Builds the libFuzzer targets with Debian's clang, outside Bazel (the Bazel
# toolchain is gcc, which has no libFuzzer). Self-sufficient: it generates the
# protobuf-c code itself with protoc-c, then compiles the project sources the
# targets need (core, the memory backend, server/wire_check.c) with
# -fsanitize=fuzzer,address,undefined.
#
#   fuzz/build.sh            # binaries in fuzz/out/ (or $FUZZ_OUT)
#
# Needs: clang, libclang-rt-14-dev, protobuf-c-compiler, libprotobuf-c-dev,
# libgrpc-dev (headers only: server_int.h includes them) — all installed by
# tools/setup.sh.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="${FUZZ_OUT:-$here/out}"
CC="${CC_FUZZ:-clang}"
mkdir -p "$out/gen" "$out/obj"

if ! command -v "$CC" >/dev/null; then
  echo "fuzz/build.sh: $CC not found (run tools/setup.sh)" >&2
  exit 1
fi

# protobuf-c code for the wire contract and the reflection request.
protoc --plugin=protoc-gen-c=/usr/bin/protoc-gen-c -I"$root/proto" --c_out="$out/gen" \
  eventstore/v1/eventstore.proto
protoc --plugin=protoc-gen-c=/usr/bin/protoc-gen-c -I/usr/share/grpc-proto --c_out="$out/gen" \
  grpc/reflection/v1alpha/reflection.proto

SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all"
CFLAGS=(-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer $SAN
  -Wall -Wextra -Werror -Wno-unused-parameter
  -I"$root/core/include" -I"$root/core/src" -I"$root/backend_memory/include"
  -I"$root/server" -I"$out/gen" -I"$here")

srcs=("$root"/core/src/*.c "$root"/backend_memory/src/*.c "$root/server/wire_check.c" "$root/server/codec.c"
  "$here/fuzz_common.c")
objs=()
for s in "${srcs[@]}"; do
  rel="${s#"$root"/}"
  o="$out/obj/${rel//\//_}.o"
  "$CC" "${CFLAGS[@]}" -c "$s" -o "$o"
  objs+=("$o")
done
# Generated code: not ours, so no -Werror.
for g in eventstore/v1/eventstore grpc/reflection/v1alpha/reflection; do
  o="$out/obj/gen_$(basename "$g").o"
  "$CC" -std=c11 -g -O1 $SAN -I"$out/gen" -c "$out/gen/$g.pb-c.c" -o "$o"
  objs+=("$o")
done

targets=(fuzz_append fuzz_read fuzz_validate fuzz_reflection)
for t in "${targets[@]}"; do
  "$CC" "${CFLAGS[@]}" -fsanitize=fuzzer "$here/$t.c" "${objs[@]}" -lprotobuf-c -lpthread \
    -o "$out/$t"
done
echo "fuzz/build.sh: built ${targets[*]} in $out"
