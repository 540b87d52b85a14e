"""Pinned versions of the protoc plugins that generate the Rust stubs.

setup.sh reads these lines too (`NAME = "VERSION"`) and installs exactly these
versions from crates.io with `cargo install --locked` into .tools/NAME-VERSION/.
Changing a version changes the path in //sdks/rust:stubs, so Bazel regenerates.
"""

PROTOC_GEN_PROST_VERSION = "0.5.0"
PROTOC_GEN_TONIC_VERSION = "0.5.0"
