# Nix flake: a dev shell with the project's toolchain and a package for the
# server. UNTESTED on the project's machines, which cannot fetch nixpkgs: CI
# only checks that this file parses (tools/nix_check.sh, `nix-instantiate
# --parse`). The toolchain it names is the one tools/setup.sh installs from
# Debian 12.
#
#   nix develop                  # the dev shell
#   nix build .#eventstore       # the server: result/bin/eventstore
{
  description = "eventstore: a gRPC event store server in C";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, flake-utils }:
    flake-utils.lib.eachSystem [ "x86_64-linux" "aarch64-linux" ] (system:
      let
        pkgs = import nixpkgs { inherit system; };
        lib = pkgs.lib;

        # The project pins Bazel 4.2.3 (Debian's bazel-bootstrap); nixpkgs
        # dropped bazel_4 in later releases, so fall back to its current Bazel.
        bazel = if pkgs ? bazel_4 then pkgs.bazel_4 else pkgs.bazel;
        libpq = if pkgs ? libpq then pkgs.libpq else pkgs.postgresql_15.lib;

        # The standard gRPC protos (health, reflection) that Debian ships in
        # grpc-proto (/usr/share/grpc-proto) are in gRPC's source tree.
        grpcProtos = "${pkgs.grpc.src}/src/proto";

        # The server package compiles the C sources directly with the
        # pkg-config flags of its libraries, the way //server:eventstore does
        # but without Bazel: Bazel 4 needs its own repository cache and network
        # access, which a Nix build sandbox does not give. The generated code
        # (protoc-c messages and the reflection descriptors) is made exactly as
        # proto/BUILD.bazel's genrules make it.
        eventstore = pkgs.stdenv.mkDerivation {
          pname = "eventstore";
          # The one version of the server and the SDKs (see //server:version_c).
          version = lib.strings.fileContents ./VERSION;
          src = lib.cleanSource ./.;

          nativeBuildInputs = [ pkgs.pkg-config pkgs.protobuf pkgs.protobufc ];
          buildInputs = [ pkgs.grpc pkgs.protobufc libpq pkgs.openssl ];

          buildPhase = ''
            runHook preBuild
            gen=$PWD/gen
            mkdir -p $gen
            protoc --plugin=protoc-gen-c=${pkgs.protobufc}/bin/protoc-gen-c \
              -Iproto --c_out=$gen proto/eventstore/v1/eventstore.proto
            protoc --plugin=protoc-gen-c=${pkgs.protobufc}/bin/protoc-gen-c \
              -I${grpcProtos} --c_out=$gen \
              grpc/health/v1/health.proto grpc/reflection/v1alpha/reflection.proto

            protoc -Iproto --descriptor_set_out=$gen/es.pb eventstore/v1/eventstore.proto
            protoc -I${grpcProtos} --descriptor_set_out=$gen/health.pb grpc/health/v1/health.proto
            protoc -I${grpcProtos} --descriptor_set_out=$gen/refl.pb grpc/reflection/v1alpha/reflection.proto
            protoc -I${grpcProtos} --descriptor_set_out=$gen/refl1.pb grpc/reflection/v1/reflection.proto
            emit() {
              echo "const unsigned char $1[] = {"
              od -An -v -tx1 "$2" | sed -e 's/ *\([0-9a-f][0-9a-f]\)/0x\1,/g'
              echo "};"
              echo "const unsigned long $1_len = sizeof($1);"
            }
            {
              emit es_descriptor_eventstore $gen/es.pb
              emit es_descriptor_health $gen/health.pb
              emit es_descriptor_reflection $gen/refl.pb
              emit es_descriptor_reflection_v1 $gen/refl1.pb
            } > $gen/descriptors.c
            printf '#include "config.h"\nconst char es_version[] = "%s";\n' "$(cat VERSION)" \
              > $gen/version.c

            $CC -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Wno-unused-parameter \
              -Icore/include -Ibackend_memory/include -Ibackend_postgres/include \
              -Iserver -Iproto -I$gen \
              $(pkg-config --cflags grpc libprotobuf-c libpq) \
              core/src/*.c backend_memory/src/*.c backend_postgres/src/*.c \
              server/*.c $gen/descriptors.c $gen/version.c \
              $gen/eventstore/v1/eventstore.pb-c.c \
              $gen/grpc/health/v1/health.pb-c.c \
              $gen/grpc/reflection/v1alpha/reflection.pb-c.c \
              $(pkg-config --libs grpc libprotobuf-c libpq) -lpthread \
              -o eventstore
            runHook postBuild
          '';

          installPhase = ''
            runHook preInstall
            install -Dm755 eventstore $out/bin/eventstore
            runHook postInstall
          '';

          meta = {
            description = "A gRPC event store server: streams, a gap-free global log, subscriptions";
            platforms = lib.platforms.linux;
            mainProgram = "eventstore";
          };
        };
      in
      {
        packages.eventstore = eventstore;
        packages.default = eventstore;

        apps.default = flake-utils.lib.mkApp { drv = eventstore; };

        devShells.default = pkgs.mkShell {
          packages = [
            bazel
            pkgs.gcc
            pkgs.clang-tools # clang-format, clang-tidy
            pkgs.pkg-config
            pkgs.grpc
            pkgs.protobuf
            pkgs.protobufc
            pkgs.gtest
            pkgs.postgresql_15 # initdb/pg_ctl for tools/pg_temp.sh
            libpq
            pkgs.openssl
            pkgs.nodejs_20 # TypeScript SDK, docs site
            pkgs.python311
            pkgs.rustc
            pkgs.cargo
            pkgs.go
            pkgs.grpcurl # make smoke
          ];
          # tools/pg_temp.sh looks for PostgreSQL's server binaries here.
          ES_PG_BINDIR = "${pkgs.postgresql_15}/bin";
          shellHook = ''
            echo "eventstore dev shell (untested: see README, Nix)"
          '';
        };
      });
}
