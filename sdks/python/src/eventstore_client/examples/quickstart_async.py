"""The quickstart with the asyncio client.

    python -m eventstore_client.examples.quickstart_async [HOST:PORT]
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

from eventstore_client import (
    AsyncEventStoreClient,
    CaughtUp,
    ExpectedVersion,
    Filter,
    RecordedEvent,
    json_event,
)


async def main() -> None:
    address = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EVENTSTORE_ADDRESS", "127.0.0.1:50051")
    stream = f"order-{uuid.uuid4().hex[:8]}"

    async with AsyncEventStoreClient(address, token=os.environ.get("EVENTSTORE_TOKEN")) as client:
        result = await client.append(
            stream,
            [json_event("OrderPlaced", {"total": 42}), json_event("OrderPaid", {"amount": 42})],
            expected=ExpectedVersion.no_stream(),
        )
        async for event in client.iter_stream(stream):
            print(f"read  {event.stream_id}@{event.stream_version} {event.event_type} {event.json()}")

        async with client.subscribe(filter=Filter(stream_prefix=stream)) as subscription:
            async for message in subscription:
                if isinstance(message, RecordedEvent):
                    print(f"event #{message.global_position} {message.event_type}")
                    if message.event_type == "OrderShipped":
                        break
                elif isinstance(message, CaughtUp):
                    await client.append(stream, [json_event("OrderShipped", {})],
                                        expected=result.next_expected_version)
    print("quickstart_async: OK")


if __name__ == "__main__":
    asyncio.run(main())
