#!/usr/bin/env bash
# Installs the TypeScript SDK's dependencies (pinned by package-lock.json) from
# the npm registry with `npm ci`. Idempotent: quick when node_modules already
# matches the lock file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v npm > /dev/null 2>&1; then
  echo "sdks/ts/setup.sh: installing nodejs and npm (Debian packages)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends nodejs npm
fi

stamp=node_modules/.eventstore-setup-stamp
if [ -f "$stamp" ] && cmp -s package-lock.json "$stamp"; then
  exit 0
fi
echo "sdks/ts/setup.sh: npm ci"
npm ci --no-audit --no-fund --loglevel=error
cp package-lock.json "$stamp"
