#!/usr/bin/env bash
# Checks that flake.nix parses (`nix-instantiate --parse`). The machines here
# cannot fetch nixpkgs, so the flake itself is not evaluated or built.
# Installs Debian's nix-bin first when missing. Exits non-zero on a parse error.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nix-instantiate >/dev/null; then
  echo "nix_check: installing nix-bin"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends nix-bin
fi

# --parse needs no store or daemon; keep Nix's state out of the user's home.
export NIX_STATE_DIR="${TMPDIR:-/tmp}/nix-check-state"
export NIX_CONF_DIR="${TMPDIR:-/tmp}/nix-check-conf"
mkdir -p "$NIX_STATE_DIR" "$NIX_CONF_DIR"
if nix-instantiate --parse flake.nix >/dev/null; then
  echo "nix_check: flake.nix parses"
else
  echo "nix_check: flake.nix does not parse" >&2
  exit 1
fi
