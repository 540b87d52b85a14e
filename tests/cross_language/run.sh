#!/usr/bin/env bash
# Cross-language test of the three SDKs (issue 4, item 6): events appended by each SDK are read
# back by all three with identical ids, types, metadata and payload bytes.
#
#   tests/cross_language/run.sh                  # server: $ES_SERVER_BIN, else bazel-bin/server/eventstore
#   bazel --output_base=/root/.cache/bazel_x test //tests/cross_language:test
#
# Starts one real server (--bind 127.0.0.1:0 --port-file), then for each writer W in ts, py, rs:
# W appends the events of spec.json (ids made distinct per writer) to its own stream; ts, py and
# rs each dump that stream with their SDK's paging iterator as canonical JSON; every dump must be
# byte-identical to what check.py derives from the spec (and so to the other two). One result per
# (writer, reader) pair: "cross-language: 9 passed, 0 failed". Then the known differences between
# the SDKs (KNOWN below) are checked to still be exactly what is documented, and the server must
# exit cleanly on SIGTERM.
#
# Needs the SDKs' setup scripts to have run (sdks/ts/setup.sh, sdks/python/setup.sh,
# sdks/rust/setup.sh): it uses sdks/ts/node_modules, sdks/python/.venv and the crates that cargo
# fetched. It writes nothing into the source tree: TypeScript is compiled into a temporary
# directory, the Rust program is built in sdks/rust/target (shared with the SDK's own tests).
# Environment: ES_SERVER_BIN, CARGO_TARGET_DIR (default sdks/rust/target), XLANG_KEEP=1 keeps the
# work directory (dumps, server log) for inspection.
set -euo pipefail

here="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" # the real directory, also under Bazel
root="$(cd "$here/../.." && pwd)"
started=$(date +%s)

abs() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
server_bin="$(readlink -f "$(abs "${ES_SERVER_BIN:-$root/bazel-bin/server/eventstore}")" || true)"
if [ ! -x "$server_bin" ]; then
  echo "run.sh: no server binary at '${ES_SERVER_BIN:-$root/bazel-bin/server/eventstore}': bazel build //server:eventstore" >&2
  exit 1
fi

# Under `bazel test` HOME is a temporary directory: cargo (rustup) and its crate cache live in
# the real one.
if [ -z "${HOME:-}" ] || [ ! -d "${CARGO_HOME:-$HOME/.cargo}" ]; then
  HOME="$(getent passwd "$(id -u)" | cut -d: -f6)"
  export HOME
fi
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH:/usr/local/bin:/usr/bin:/bin"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/sdks/rust/target}"
export CARGO_TERM_COLOR=never
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the source tree
export PYTHONPATH="$root/sdks/python/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUTF8=1

tsc="$root/sdks/ts/node_modules/.bin/tsc"
py="$root/sdks/python/.venv/bin/python"
rs_bin="$CARGO_TARGET_DIR/debug/eventstore-xlang"
missing=()
[ -x "$tsc" ] || missing+=("$tsc (run sdks/ts/setup.sh)")
[ -x "$py" ] || missing+=("$py (run sdks/python/setup.sh)")
command -v node > /dev/null || missing+=("node (run sdks/ts/setup.sh)")
command -v cargo > /dev/null || missing+=("cargo (install Rust, then run sdks/rust/setup.sh)")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'run.sh: missing %s\n' "${missing[@]}" >&2
  exit 1
fi

work="$(mktemp -d "${TEST_TMPDIR:-${TMPDIR:-/tmp}}/xlang.XXXXXX")"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2> /dev/null; then
    kill -TERM "$server_pid" 2> /dev/null || true
    for _ in $(seq 1 100); do kill -0 "$server_pid" 2> /dev/null || break; sleep 0.05; done
    kill -KILL "$server_pid" 2> /dev/null || true
    wait "$server_pid" 2> /dev/null || true
  fi
  if [ "${XLANG_KEEP:-0}" = 1 ]; then echo "run.sh: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- build the TypeScript and Rust programs (in parallel; Python needs nothing) ----------------
echo "run.sh: building the programs (tsc; cargo build, target dir $CARGO_TARGET_DIR)"
(
  "$tsc" -p "$here/ts/tsconfig.json" --outDir "$work/ts" &&
    ln -s "$root/sdks/ts/node_modules" "$work/ts/node_modules"
) > "$work/tsc.log" 2>&1 &
tsc_pid=$!
cargo_rc=0
cargo build --locked --offline --quiet --manifest-path "$here/rs/Cargo.toml" > "$work/cargo.log" 2>&1 || cargo_rc=$?
tsc_rc=0
wait "$tsc_pid" || tsc_rc=$?
if [ $tsc_rc -ne 0 ]; then
  cat "$work/tsc.log" >&2
  echo "run.sh: compiling tests/cross_language/ts failed" >&2
  exit 1
fi
if [ $cargo_rc -ne 0 ]; then
  cat "$work/cargo.log" >&2
  echo "run.sh: building tests/cross_language/rs failed. Crates missing: run sdks/rust/setup.sh." \
    "rs/Cargo.lock stale after a change to the SDK's dependencies: copy sdks/rust/Cargo.lock there" \
    "and run 'cargo build --offline' in tests/cross_language/rs once (cargo prunes it)." >&2
  exit 1
fi

LANGS=(ts py rs)
# One program per language: <lang> append|dump ADDRESS STREAM [SPEC]. Each call is bounded.
prog() {
  local lang="$1"
  shift
  case "$lang" in
    ts) timeout 60 node "$work/ts/tests/cross_language/ts/xlang.js" "$@" ;;
    py) timeout 60 "$py" "$here/py/xlang.py" "$@" ;;
    rs) timeout 60 "$rs_bin" "$@" ;;
  esac
}
check() { "$py" "$here/check.py" "$@"; }

# ---- the server ---------------------------------------------------------------------------------
"$server_bin" --backend memory --bind 127.0.0.1:0 --port-file "$work/port" --log-level warn > "$work/server.log" 2>&1 &
server_pid=$!
port=""
for _ in $(seq 1 500); do
  if [ -s "$work/port" ]; then
    port="$(tr -d '[:space:]' < "$work/port")"
    case "$port" in '' | *[!0-9]*) port="" ;; *) break ;; esac
  fi
  kill -0 "$server_pid" 2> /dev/null || break
  sleep 0.02
done
if [ -z "$port" ]; then
  cat "$work/server.log" >&2
  echo "run.sh: the server did not write its port to --port-file" >&2
  exit 1
fi
address="127.0.0.1:$port"
echo "run.sh: server $server_bin on $address"

passed=0
failed=0
failures=()
fail() {
  failed=$((failed + 1))
  failures+=("$1")
  echo "FAIL  $1"
}

# Compares one reader's dump with the expected one; explains a difference.
compare() { # name expected actual
  if cmp -s "$2" "$3"; then
    return 0
  fi
  echo "      $1: the dump differs from the spec:"
  check explain "$2" "$3" | head -40
  return 1
}

# ---- the matrix: each writer's stream read by every reader -------------------------------------
index=0
for w in "${LANGS[@]}"; do
  index=$((index + 1))
  stream="xlang-$w-Zürich-流"
  spec="$work/spec.$w.json"
  check spec "$here/spec.json" "$index" "$spec"
  if ! prog "$w" append "$address" "$stream" "$spec" > "$work/$w.append.json" 2> "$work/$w.append.err"; then
    cat "$work/$w.append.err"
    for r in "${LANGS[@]}"; do fail "written by $w, read by $r: the $w append failed"; done
    continue
  fi
  if ! check expect "$spec" "$stream" "$work/$w.append.json" > "$work/$w.expected.json"; then
    for r in "${LANGS[@]}"; do fail "written by $w, read by $r: the $w append returned a wrong result"; done
    continue
  fi
  for r in "${LANGS[@]}"; do
    name="written by $w, read by $r"
    if ! prog "$r" dump "$address" "$stream" > "$work/$w.by-$r.json" 2> "$work/$w.by-$r.err"; then
      cat "$work/$w.by-$r.err"
      fail "$name: the $r dump failed"
    elif compare "$r" "$work/$w.expected.json" "$work/$w.by-$r.json"; then
      passed=$((passed + 1))
      echo "ok    $name ($(($(wc -l < "$work/$w.expected.json") - 2)) events, identical bytes)"
    else
      fail "$name: differs from the spec"
    fi
  done
  # Which readers agree with each other (diagnostics when something differs).
  if ! cmp -s "$work/$w.by-ts.json" "$work/$w.by-py.json" 2> /dev/null ||
    ! cmp -s "$work/$w.by-py.json" "$work/$w.by-rs.json" 2> /dev/null; then
    for pair in "ts py" "py rs" "ts rs"; do
      set -- $pair
      if cmp -s "$work/$w.by-$1.json" "$work/$w.by-$2.json" 2> /dev/null; then
        echo "      (the $1 and $2 dumps of $w's stream are identical)"
      fi
    done
  fi
done

# ---- known differences between the SDKs ---------------------------------------------------------
# Each entry: "<reader> <metadata key it loses> <description>". The event of spec_known.json,
# written by every SDK, must read back complete in every other reader and exactly without that key
# in <reader>. When a difference disappears (the SDK was fixed) this fails too: remove the entry.
# None today, so every reader must read the event of spec_known.json back complete, metadata key
# "__proto__" included. (The TypeScript SDK used to drop that key when reading — ts-proto decoded
# proto maps into a plain object — until its stubs were generated with useMapType=true.)
KNOWN=()
known_ok=0
known_failed=0
index=16
for w in "${LANGS[@]}"; do
  index=$((index + 1))
  stream="xlang-known-$w"
  spec="$work/known.$w.json"
  check spec "$here/spec_known.json" "$index" "$spec"
  if ! prog "$w" append "$address" "$stream" "$spec" > "$work/known.$w.append.json" 2> "$work/known.$w.append.err" ||
    ! check expect "$spec" "$stream" "$work/known.$w.append.json" > "$work/known.$w.expected.json"; then
    cat "$work/known.$w.append.err"
    known_failed=$((known_failed + 3))
    failures+=("known differences: the $w append failed")
    echo "FAIL  known differences: the $w append failed"
    continue
  fi
  for r in "${LANGS[@]}"; do
    expected="$work/known.$w.expected.json"
    for entry in "${KNOWN[@]}"; do
      read -r k_reader k_key k_desc <<< "$entry"
      if [ "$k_reader" = "$r" ]; then
        check expect "$spec" "$stream" "$work/known.$w.append.json" --drop-metadata-key "$k_key" > "$work/known.$w.expected-$r.json"
        expected="$work/known.$w.expected-$r.json"
      fi
    done
    if ! prog "$r" dump "$address" "$stream" > "$work/known.$w.by-$r.json" 2> "$work/known.$w.by-$r.err"; then
      cat "$work/known.$w.by-$r.err"
      known_failed=$((known_failed + 1))
      failures+=("known differences, written by $w, read by $r: the dump failed")
      echo "FAIL  ${failures[-1]}"
    elif compare "$r" "$expected" "$work/known.$w.by-$r.json"; then
      known_ok=$((known_ok + 1))
    else
      known_failed=$((known_failed + 1))
      failures+=("known differences, written by $w, read by $r: differs from the spec and KNOWN (if an SDK was fixed, remove its KNOWN entry)")
      echo "FAIL  ${failures[-1]}"
    fi
  done
done

# ---- stop the server: it must exit cleanly on SIGTERM --------------------------------------------
kill -TERM "$server_pid"
for _ in $(seq 1 300); do kill -0 "$server_pid" 2> /dev/null || break; sleep 0.05; done
if kill -0 "$server_pid" 2> /dev/null; then
  echo "run.sh: the server is still running 15 s after SIGTERM: SIGKILL"
  kill -KILL "$server_pid" 2> /dev/null || true
fi
server_rc=0
wait "$server_pid" || server_rc=$?
server_pid=""
if [ $server_rc -ne 0 ]; then
  tail -40 "$work/server.log"
  failed=$((failed + 1))
  failures+=("the server exited with status $server_rc after SIGTERM")
  echo "FAIL  ${failures[-1]}"
fi

if [ $known_failed -eq 0 ]; then
  for entry in "${KNOWN[@]}"; do
    read -r k_reader k_key k_desc <<< "$entry"
    echo "known difference, still present: $k_desc"
  done
fi
if [ ${#KNOWN[@]} -eq 0 ]; then
  echo "known differences: none; spec_known.json read back complete: $known_ok passed, $known_failed failed"
else
  echo "known differences: $known_ok checks as documented, $known_failed not"
fi
echo "cross-language: $passed passed, $failed failed ($(($(date +%s) - started)) s)"
if [ $failed -ne 0 ] || [ $known_failed -ne 0 ]; then
  printf '  failed: %s\n' "${failures[@]}"
  exit 1
fi
