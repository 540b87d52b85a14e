"""Helpers of run.sh (the cross-language test), independent of every SDK.

    check.py spec TEMPLATE INDEX OUT
        writes TEMPLATE with its event ids made distinct for one writer: the "00000000-" that
        starts every id in event_id, correlation_id and causation_id becomes INDEX as 8 hex digits
        (event ids are unique store-wide, so each writer's stream needs its own).
    check.py expect SPEC STREAM APPEND_RESULT [--drop-metadata-key KEY]
        checks the writer's AppendResult (printed by its `append`) against SPEC and prints the
        canonical dump that every reader must print for STREAM, byte for byte.
    check.py explain EXPECTED ACTUAL
        prints, field by field, how the dump ACTUAL differs from EXPECTED.

The canonical dump (what each language's `dump` prints): "[\\n", one JSON object per event joined
by ",\\n", "\\n]\\n". Each object is compact JSON with keys sorted by code point, non-ASCII
characters as UTF-8 (not \\u escapes), the payload as standard base64 with padding, integers as
decimals, and every RecordedEvent field except recorded_at_unix_ms (the server's clock).
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys
from typing import Any

DEFAULT_CONTENT_TYPE = "application/octet-stream"
TEMPLATE_PREFIX = "00000000-"
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def load(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def cmd_spec(template: str, index: str, out: str) -> int:
    spec = load(template)
    prefix = f"{int(index):08x}-"
    for e in spec["events"]:
        for field in ("event_id", "correlation_id", "causation_id"):
            if e[field].startswith(TEMPLATE_PREFIX):
                e[field] = prefix + e[field][len(TEMPLATE_PREFIX):]
        if not UUID.match(e["event_id"]):
            raise SystemExit(f"check.py: {template}: event_id {e['event_id']!r} is not a lowercase UUID")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(spec, f, ensure_ascii=False, indent=1)
        f.write("\n")
    return 0


def cmd_expect(spec_path: str, stream: str, append_path: str, drop_keys: list[str]) -> int:
    spec = load(spec_path)
    events = spec["events"]
    n = len(events)
    with open(append_path, encoding="utf-8") as f:
        r = json.loads(f.read())
    want = {"duplicate": False, "first_stream_version": 1, "last_stream_version": n}
    problems = [f"{k} = {r.get(k)!r}, want {v!r}" for k, v in want.items() if r.get(k) != v]
    first = r.get("first_global_position")
    if not isinstance(first, int) or first < 1 or r.get("last_global_position") != first + n - 1:
        problems.append(
            f"global positions {first!r}..{r.get('last_global_position')!r} are not {n} consecutive ones"
        )
    if problems:
        print(f"check.py: the append result is wrong: {'; '.join(problems)}", file=sys.stderr)
        return 1
    lines = []
    for i, e in enumerate(events):
        payload = base64.b64decode(e["payload_b64"], validate=True)
        lines.append(
            canonical(
                {
                    "causation_id": e["causation_id"],
                    "content_type": e["content_type"] or DEFAULT_CONTENT_TYPE,
                    "correlation_id": e["correlation_id"],
                    "event_id": e["event_id"],
                    "event_type": e["event_type"],
                    "event_version": e["event_version"],
                    "global_position": first + i,
                    "metadata": {k: v for k, v in e["metadata"].items() if k not in drop_keys},
                    "occurred_at_unix_ms": int(e["occurred_at_unix_ms"]),
                    "payload": base64.b64encode(payload).decode("ascii"),
                    "stream_id": stream,
                    "stream_type": spec["stream_type"],
                    "stream_version": i + 1,
                }
            )
        )
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(encoding="utf-8", newline="\n")
    sys.stdout.write("[\n" + ",\n".join(lines) + "\n]\n")
    return 0


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 120 else s[:117] + "..."


def cmd_explain(expected_path: str, actual_path: str) -> int:
    expected = load(expected_path)
    try:
        actual = load(actual_path)
    except (ValueError, UnicodeDecodeError) as err:
        print(f"    not canonical JSON at all: {err}")
        return 0
    if not isinstance(actual, list):
        print("    not a JSON array")
        return 0
    if len(actual) != len(expected):
        print(f"    {len(actual)} events, want {len(expected)}")
    for i, (want, got) in enumerate(zip(expected, actual)):
        where = f"    event {i + 1} ({want.get('event_type')})"
        if not isinstance(got, dict):
            print(f"{where}: not an object")
            continue
        for key in sorted(set(want) | set(got)):
            w, g = want.get(key, "<missing>"), got.get(key, "<missing>")
            if key == "payload" and isinstance(w, str) and isinstance(g, str) and w != g:
                wb, gb = base64.b64decode(w), base64.b64decode(g)
                at = next((j for j, (a, b) in enumerate(zip(wb, gb)) if a != b), min(len(wb), len(gb)))
                print(f"{where}: payload: {len(gb)} bytes, want {len(wb)}; first difference at byte {at}")
            elif key == "metadata" and isinstance(w, dict) and isinstance(g, dict) and w != g:
                for mk in sorted(set(w) | set(g)):
                    if w.get(mk) != g.get(mk):
                        print(f"{where}: metadata[{mk!r}] = {_short(g.get(mk, '<missing>'))},"
                              f" want {_short(w.get(mk, '<missing>'))}")
            elif w != g:
                print(f"{where}: {key} = {_short(g)}, want {_short(w)}")
    if expected == actual:
        print("    the same values, but not the canonical bytes (key order, escaping, spacing or newlines)")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "spec":
        return cmd_spec(*argv[1:])
    if len(argv) in (4, 6) and argv[0] == "expect":
        drop = [argv[5]] if len(argv) == 6 and argv[4] == "--drop-metadata-key" else []
        if len(argv) == 6 and not drop:
            raise SystemExit("check.py expect: unknown option " + argv[4])
        return cmd_expect(argv[1], argv[2], argv[3], drop)
    if len(argv) == 3 and argv[0] == "explain":
        return cmd_explain(argv[1], argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
