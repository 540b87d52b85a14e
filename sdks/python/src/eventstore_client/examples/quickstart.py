"""Quickstart: append two events, read them back, subscribe (replay, then live).

    python -m eventstore_client.examples.quickstart [HOST:PORT]
    (default: $EVENTSTORE_ADDRESS or 127.0.0.1:50051)

Installed with the package; this file is also a plain script to copy.

$EVENTSTORE_TOKEN, if set, is sent as the bearer token.
"""

from __future__ import annotations

import os
import sys
import uuid

from eventstore_client import (
    CaughtUp,
    EventStoreClient,
    ExpectedVersion,
    Filter,
    RecordedEvent,
    json_event,
)


def main() -> None:
    address = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EVENTSTORE_ADDRESS", "127.0.0.1:50051")
    stream = f"order-{uuid.uuid4().hex[:8]}"

    with EventStoreClient(address, token=os.environ.get("EVENTSTORE_TOKEN")) as client:
        # Append: the stream must not exist yet.
        result = client.append(
            stream,
            [
                json_event("OrderPlaced", {"order": stream, "total": 42}),
                json_event("OrderPaid", {"amount": 42}, metadata={"method": "card"}),
            ],
            expected=ExpectedVersion.no_stream(),
            stream_type="Order",
        )
        print(f"appended versions {result.first_stream_version}..{result.last_stream_version} "
              f"at positions {result.first_global_position}..{result.last_global_position}")

        # Read back, page by page.
        for event in client.iter_stream(stream):
            print(f"read  {event.stream_id}@{event.stream_version} {event.event_type} {event.json()}")

        # Subscribe to this stream's events: the two stored ones, CaughtUp, then live ones.
        with client.subscribe(filter=Filter(stream_prefix=stream)) as subscription:
            for message in subscription:
                if isinstance(message, RecordedEvent):
                    print(f"event #{message.global_position} {message.event_type} {message.json()}")
                    if message.event_type == "OrderShipped":
                        break
                elif isinstance(message, CaughtUp):
                    print(f"caught up at {message.head_position}; appending a live event")
                    client.append(stream, [json_event("OrderShipped", {"carrier": "ups"})],
                                  expected=result.next_expected_version)
    print("quickstart: OK")


if __name__ == "__main__":
    main()
