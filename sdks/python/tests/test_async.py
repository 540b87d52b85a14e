"""The asyncio client against the real server."""

from __future__ import annotations

import asyncio
import socket
import uuid
from typing import List

import grpc
import pytest

from eventstore_client import (
    AlreadyExistsError,
    AsyncEventStoreClient,
    AsyncSubscription,
    CaughtUp,
    Checkpoint,
    Direction,
    EventData,
    ExpectedVersion,
    Filter,
    InvalidArgumentError,
    RecordedEvent,
    ResourceExhaustedError,
    StreamNotFoundError,
    StreamTypeMismatchError,
    SubscriptionMessage,
    UnavailableError,
    WrongExpectedVersionError,
    json_event,
)

from conftest import FAST_RECONNECT, ServerProcess, TcpProxy, unique


async def take(
    sub: AsyncSubscription, n: int, *, kinds: tuple[type, ...] = (RecordedEvent,), timeout: float = 20
) -> List[SubscriptionMessage]:
    async def run() -> List[SubscriptionMessage]:
        out: List[SubscriptionMessage] = []
        async for msg in sub:
            if isinstance(msg, kinds):
                out.append(msg)
                if len(out) == n:
                    break
        return out

    return await asyncio.wait_for(run(), timeout)


async def test_append_and_read(aclient: AsyncEventStoreClient, stream: str) -> None:
    r = await aclient.append(
        stream, [json_event("A", {"i": i}) for i in range(12)], ExpectedVersion.no_stream(), "Thing"
    )
    assert (r.first_stream_version, r.last_stream_version, r.duplicate) == (1, 12, False)
    r2 = await aclient.append(stream, json_event("B", {}), r.next_expected_version)
    assert r2.first_global_position > r.last_global_position

    page = await aclient.read_stream(stream, max_count=5)
    assert [e.stream_version for e in page.events] == [1, 2, 3, 4, 5]
    assert (page.next_version, page.is_end, page.stream_version) == (6, False, 13)
    back = await aclient.read_stream(stream, 2, direction=Direction.BACKWARD)
    assert [e.stream_version for e in back.events] == [2, 1] and back.is_end and back.next_version == 0
    assert back.events[0].json() == {"i": 1} and back.events[0].stream_type == "Thing"

    fwd = [e.stream_version async for e in aclient.iter_stream(stream, page_size=4)]
    assert fwd == list(range(1, 14))
    bwd = [e.stream_version async for e in aclient.iter_stream(stream, direction="backward", page_size=4)]
    assert bwd == list(range(13, 0, -1))


async def test_read_all_and_iter_all(aclient: AsyncEventStoreClient) -> None:
    prefix = unique()
    await aclient.append(prefix + "a", [json_event("X", i) for i in range(4)])
    await aclient.append(prefix + "b", [json_event("Y", i) for i in range(4, 9)])
    f = Filter(stream_prefix=prefix)
    page = await aclient.read_all(max_count=100, filter=f)
    assert [e.json() for e in page.events] == list(range(9)) and page.is_end
    ys = await aclient.read_all(filter=Filter(prefix, ["Y"]))
    assert [e.json() for e in ys.events] == [4, 5, 6, 7, 8]
    fwd = [e.json() async for e in aclient.iter_all(filter=f, page_size=2)]
    assert fwd == list(range(9))
    bwd = [e.json() async for e in aclient.iter_all(direction="backward", filter=f, page_size=2)]
    assert bwd == list(range(8, -1, -1))
    latest = await aclient.read_all(direction=Direction.BACKWARD, max_count=1)
    assert latest.events[0].global_position == latest.head_position


async def test_typed_errors(aclient: AsyncEventStoreClient, stream: str) -> None:
    with pytest.raises(StreamNotFoundError):
        await aclient.read_stream(stream)
    with pytest.raises(StreamNotFoundError):
        [e async for e in aclient.iter_stream(stream)]
    eid = str(uuid.uuid4())
    await aclient.append(stream, [EventData("A", event_id=eid)], stream_type="T")
    with pytest.raises(WrongExpectedVersionError) as wev:
        await aclient.append(stream, [EventData("B")], ExpectedVersion.exact(7))
    assert (wev.value.expected, wev.value.actual) == (ExpectedVersion.exact(7), 1)
    with pytest.raises(AlreadyExistsError):
        await aclient.append(stream, [EventData("A", event_id=eid), EventData("B")])
    with pytest.raises(InvalidArgumentError):
        await aclient.append("", [EventData("A")])
    with pytest.raises(StreamTypeMismatchError):
        await aclient.append(stream, [EventData("B")], stream_type="Other")
    with pytest.raises(ResourceExhaustedError):
        await aclient.append(stream, [EventData("Big", payload=b"x" * (5 << 20))])
    dup = await aclient.append(stream, [EventData("A", event_id=eid)], ExpectedVersion.no_stream())
    assert dup.duplicate and dup.first_stream_version == 1


async def test_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with AsyncEventStoreClient(f"127.0.0.1:{port}", timeout=5) as c:
        with pytest.raises(UnavailableError) as e:
            await c.read_all()
    assert e.value.code == grpc.StatusCode.UNAVAILABLE


async def test_subscribe_catch_up_live_filter_checkpoint(aclient: AsyncEventStoreClient) -> None:
    prefix = unique()
    await aclient.append(prefix + "a", [json_event("Wanted", 0)])
    async with aclient.subscribe(filter=Filter(prefix, ["Wanted"]), checkpoint_interval=3) as sub:
        msgs = await take(sub, 2, kinds=(RecordedEvent, CaughtUp))
        assert isinstance(msgs[0], RecordedEvent) and isinstance(msgs[1], CaughtUp)
        base = msgs[0].global_position
        await aclient.append(prefix + "a", [json_event("Noise", i) for i in range(4)])
        # The 3rd non-matching event in a row, then the head: a checkpoint each.
        got = await take(sub, 2, kinds=(RecordedEvent, Checkpoint))
        assert all(isinstance(m, Checkpoint) for m in got)
        assert [m.position for m in got] == [base + 3, base + 4]
        await aclient.append(prefix + "a", [json_event("Wanted", 1)])
        (e,) = await take(sub, 1, kinds=(RecordedEvent, Checkpoint))
        assert isinstance(e, RecordedEvent) and e.json() == 1
        assert sub.next_position == e.global_position + 1
    assert sub.closed


async def test_subscribe_from_end_and_aclose_from_another_task(
    aclient: AsyncEventStoreClient,
) -> None:
    prefix = unique()
    await aclient.append(prefix + "a", [json_event("Old", 0)])
    sub = aclient.subscribe(from_end=True, filter=Filter(stream_prefix=prefix))
    await take(sub, 1, kinds=(CaughtUp,))
    await aclient.append(prefix + "a", [json_event("New", 1)])
    (e,) = await take(sub, 1)
    assert isinstance(e, RecordedEvent) and e.event_type == "New"

    async def drain() -> List[SubscriptionMessage]:
        return [m async for m in sub]

    task = asyncio.ensure_future(drain())
    await asyncio.sleep(0.2)
    await sub.aclose()
    assert await asyncio.wait_for(task, 5) == []


async def test_invalid_subscription(aclient: AsyncEventStoreClient) -> None:
    sub = aclient.subscribe(filter=Filter(event_types=["x" * 300]))
    with pytest.raises(InvalidArgumentError):
        await sub.__anext__()


async def test_resume_after_dropped_connection(aclient: AsyncEventStoreClient, proxy: TcpProxy) -> None:
    prefix = unique()
    start = (await aclient.read_all(direction="backward", max_count=1)).head_position + 1
    async with AsyncEventStoreClient(proxy.address, reconnect=FAST_RECONNECT) as via_proxy:
        async with via_proxy.subscribe(from_position=start, filter=Filter(stream_prefix=prefix)) as sub:
            await take(sub, 1, kinds=(CaughtUp,))
            seen: List[int] = []
            for batch in range(4):
                await aclient.append(prefix + "a", [json_event("E", 5 * batch + i) for i in range(5)])
                seen += [m.json() for m in await take(sub, 5) if isinstance(m, RecordedEvent)]
                proxy.drop()
            assert sub.reconnects >= 3
    assert seen == list(range(20))


@pytest.mark.slow
async def test_resume_after_server_restart(own_server: ServerProcess) -> None:
    """Same as the sync test: resumes at 4 on a new, empty server on the same port."""
    async with AsyncEventStoreClient(own_server.address, reconnect=FAST_RECONNECT) as c:
        await c.append("before", [json_event("Old", i) for i in range(1, 4)])
        async with c.subscribe() as sub:
            first = await take(sub, 3)
            assert [m.global_position for m in first if isinstance(m, RecordedEvent)] == [1, 2, 3]
            await asyncio.get_running_loop().run_in_executor(None, own_server.restart_same_port)
            async with AsyncEventStoreClient(own_server.address) as writer:
                await writer.append("after", [json_event("New", i) for i in range(1, 7)])
            resumed = await take(sub, 3)
            assert [
                (m.global_position, m.json()) for m in resumed if isinstance(m, RecordedEvent)
            ] == [(4, 4), (5, 5), (6, 6)]
            assert sub.reconnects >= 1


def test_client_made_outside_the_loop_that_uses_it(server: ServerProcess) -> None:
    client = AsyncEventStoreClient(server.address)  # no running loop here

    async def use() -> int:
        async with client:
            page = await client.read_all(direction="backward", max_count=1)
            return page.head_position

    assert asyncio.run(use()) >= 0
