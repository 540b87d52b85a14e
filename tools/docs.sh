#!/usr/bin/env bash
# The documentation site (VitePress, pinned in website/package-lock.json).
#
#   tools/docs.sh build    builds the site into website/dist; a broken link fails
#   tools/docs.sh serve    serves it with live reload on 127.0.0.1 (DOCS_PORT, 5173)
#
# The sources stay where they are: README.md, docs/*.md and the SDK READMEs
# are copied into website/.stage/ (git-ignored) at every run, laid out as in
# the repository so their relative links work unchanged (README.md doubles as
# the home page, index.md). Installs the site's
# packages with `npm ci` when website/node_modules is missing (Node 20).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
site="$root/website"

cmd="${1:-build}"
case "$cmd" in
  build | serve) ;;
  *)
    echo "usage: tools/docs.sh build|serve" >&2
    exit 2
    ;;
esac

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "docs: needs Node.js 20 and npm" >&2
  exit 1
fi
if [ ! -d "$site/node_modules" ]; then
  (cd "$site" && npm ci --no-audit --no-fund)
fi

stage() {
  rm -rf "$site/.stage"
  mkdir -p "$site/.stage/docs"
  cp README.md "$site/.stage/README.md"
  cp README.md "$site/.stage/index.md" # the home page
  cp docs/*.md "$site/.stage/docs/"
  local d
  for d in sdks/*/; do
    d="${d%/}"
    if [ -f "$d/README.md" ]; then
      mkdir -p "$site/.stage/$d"
      cp "$d/README.md" "$site/.stage/$d/README.md"
    fi
  done
}

stage
export VITE_EXTRA_EXTENSIONS=proto,py,rs,c,h,cc,sh,toml,bazel,lock
cd "$site"
case "$cmd" in
  build)
    start=$(date +%s)
    npx --no-install vitepress build .
    echo "docs: built website/dist in $(($(date +%s) - start)) s"
    ;;
  serve)
    exec npx --no-install vitepress dev . --host 127.0.0.1 --port "${DOCS_PORT:-5173}"
    ;;
esac
