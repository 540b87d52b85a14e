"""Cross-language test program for the Python SDK (sdks/python), see ../README.md.

    python xlang.py append <address> <stream> <spec.json>   appends the spec's events in one call,
                                                           prints the AppendResult as JSON
    python xlang.py dump <address> <stream>                 prints the whole stream as canonical JSON

Only the SDK's public API (``eventstore_client``) is used. Run with the SDK's venv
(sdks/python/.venv) and sdks/python/src on PYTHONPATH.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import sys
from typing import Any

from eventstore_client import EventData, EventStoreClient, ExpectedVersion, RecordedEvent

# Page size of the dump: small, so that the paging iterator has to follow several pages.
PAGE_SIZE = 3


def canonical(value: Any) -> str:
    """Compact JSON, keys sorted by code point, non-ASCII as UTF-8 (the format of all three)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_to_canon(e: RecordedEvent) -> dict[str, Any]:
    return {
        "causation_id": e.causation_id,
        "content_type": e.content_type,
        "correlation_id": e.correlation_id,
        "event_id": e.event_id,
        "event_type": e.event_type,
        "event_version": e.event_version,
        "global_position": e.global_position,
        "metadata": dict(e.metadata),
        "occurred_at_unix_ms": e.occurred_at_unix_ms,
        "payload": base64.b64encode(e.payload).decode("ascii"),
        "stream_id": e.stream_id,
        "stream_type": e.stream_type,
        "stream_version": e.stream_version,
    }


def strict_b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as err:
        raise ValueError(f"spec: {text[:40]!r}... is not base64: {err}") from None


def append(client: EventStoreClient, stream: str, spec_path: str) -> None:
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    events = [
        EventData(
            event_id=s["event_id"],
            event_type=s["event_type"],
            event_version=s["event_version"],
            content_type=s["content_type"],
            metadata=s["metadata"],
            correlation_id=s["correlation_id"],
            causation_id=s["causation_id"],
            occurred_at_unix_ms=int(s["occurred_at_unix_ms"]),
            payload=strict_b64(s["payload_b64"]),
        )
        for s in spec["events"]
    ]
    r = client.append(stream, events, ExpectedVersion.no_stream(), stream_type=spec["stream_type"])
    print(
        canonical(
            {
                "duplicate": r.duplicate,
                "first_global_position": r.first_global_position,
                "first_stream_version": r.first_stream_version,
                "last_global_position": r.last_global_position,
                "last_stream_version": r.last_stream_version,
            }
        )
    )


def dump(client: EventStoreClient, stream: str) -> None:
    lines = [
        canonical(event_to_canon(e))
        for e in client.iter_stream(stream, direction="forward", page_size=PAGE_SIZE)
    ]
    sys.stdout.write("[\n" + ",\n".join(lines) + "\n]\n")


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "dump":
        cmd, address, stream, spec = argv[0], argv[1], argv[2], ""
    elif len(argv) == 4 and argv[0] == "append":
        cmd, address, stream, spec = argv
    else:
        print("usage: xlang.py append <address> <stream> <spec.json> | dump <address> <stream>",
              file=sys.stderr)
        return 2
    # Byte-exact output whatever the locale says.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(encoding="utf-8", newline="\n")
    with EventStoreClient(address, timeout=20.0) as client:
        if cmd == "append":
            append(client, stream, spec)
        else:
            dump(client, stream)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
