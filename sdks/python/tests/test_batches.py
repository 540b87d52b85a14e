"""Batched subscription delivery (max_batch, EventBatch): the request the SDK builds, one event
at a time out of a batch, the resume point in the middle of a batch (a caller that stops, a
connection that drops), and many events exactly once in order through the real server.

The real-server tests hold for a server that batches and for one that ignores max_batch and
sends single events; the in-process fake server below sends batches whatever the real one does.
They append thousands of events, so they have a server of their own: on the shared one, the
filtered reads of other tests from position 0 would have to scan past them.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent import futures
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, List, Tuple

import grpc
import pytest

from eventstore_client import (
    AsyncEventStoreClient,
    CaughtUp,
    Checkpoint,
    EventStoreClient,
    Filter,
    InvalidArgumentError,
    RecordedEvent,
    SubscriptionMessage,
    json_event,
)
from eventstore_client._common import DEFAULT_MAX_BATCH, ResumeCursor
from eventstore_client._gen import eventstore_pb2 as pb
from eventstore_client._gen import eventstore_pb2_grpc as pb_grpc

from conftest import FAST_RECONNECT, ServerProcess, TcpProxy, unique


def recorded(position: int) -> pb.RecordedEvent:
    return pb.RecordedEvent(
        event_id="0190a5c0-0000-7000-8000-%012d" % position,
        stream_id="s",
        stream_version=position,
        global_position=position,
        event_type="E",
    )


def batch(first: int, last: int) -> pb.SubscribeResponse:
    return pb.SubscribeResponse(
        batch=pb.EventBatch(events=[recorded(p) for p in range(first, last + 1)])
    )


def tag(m: SubscriptionMessage | None) -> str:
    if isinstance(m, RecordedEvent):
        return f"e{m.global_position}"
    if isinstance(m, Checkpoint):
        return f"cp{m.position}"
    if isinstance(m, CaughtUp):
        return f"cu{m.head_position}"
    return repr(m)


# -- the request and the cursor, without a server ----------------------------------------------


def test_the_request_asks_for_batches() -> None:
    assert DEFAULT_MAX_BATCH == 256
    assert ResumeCursor(0, False, None, 0).request().max_batch == 256
    assert ResumeCursor(0, False, None, 0, max_batch=1).request().max_batch == 1
    assert ResumeCursor(0, False, None, 0, max_batch=1000).request().max_batch == 1000
    with pytest.raises(ValueError):
        ResumeCursor(0, False, None, 0, max_batch=-1)
    with pytest.raises(TypeError):
        ResumeCursor(0, False, None, 0, max_batch=2.5)  # type: ignore[arg-type]


def test_the_client_passes_max_batch_to_the_cursor(server: ServerProcess) -> None:
    with EventStoreClient(server.address) as c:
        assert c.subscribe(from_end=True)._cursor.request().max_batch == DEFAULT_MAX_BATCH
        assert c.subscribe(from_end=True, max_batch=7)._cursor.request().max_batch == 7


def test_a_batch_is_handed_out_one_event_at_a_time() -> None:
    cursor = ResumeCursor(3, False, Filter(stream_prefix="s"), 0, max_batch=4)
    cursor.feed(batch(3, 6))
    assert tag(cursor.next_message()) == "e3"
    # The resume point follows what was handed out, not what was received.
    assert cursor.next_position == 4 and cursor.request().from_position == 4
    assert tag(cursor.next_message()) == "e4"
    assert cursor.request().from_position == 5
    assert [tag(cursor.next_message()) for _ in range(2)] == ["e5", "e6"]
    assert cursor.next_message() is None
    for resp in (
        pb.SubscribeResponse(checkpoint=pb.Checkpoint(position=8)),
        batch(9, 9),
        pb.SubscribeResponse(caught_up=pb.CaughtUp(head_position=9)),
        pb.SubscribeResponse(event=recorded(10)),  # a server that ignores max_batch
        batch(9, 11),  # re-sent after a reconnect: 9 and 10 were handed out already
    ):
        cursor.feed(resp)
    out = []
    while (m := cursor.next_message()) is not None:
        out.append(tag(m))
    assert out == ["cp8", "e9", "cu9", "e10", "e11"]
    assert cursor.request().from_position == 12


# -- an in-process server that sends batches ---------------------------------------------------


class BatchingStore(pb_grpc.EventStoreServicer):  # type: ignore[misc]
    """Subscribe: the first call sends two batches and drops (UNAVAILABLE) once the client
    has had time to receive them; later calls re-send from one event before the requested
    position (the client must drop it) up to 10, then CaughtUp(10)."""

    def __init__(self) -> None:
        self.requests: List[pb.SubscribeRequest] = []

    def Subscribe(self, request: Any, context: Any) -> Iterator[pb.SubscribeResponse]:
        self.requests.append(request)
        if len(self.requests) == 1:
            yield batch(3, 6)
            yield batch(7, 8)
            threading.Event().wait(0.3)
            context.abort(grpc.StatusCode.UNAVAILABLE, "dropped in the middle of a batch")
        yield batch(request.from_position - 1, 10)
        yield pb.SubscribeResponse(caught_up=pb.CaughtUp(head_position=10))
        ended = threading.Event()  # live: nothing more until the client cancels
        context.add_callback(ended.set)
        ended.wait(30)


@pytest.fixture
def batching_server() -> Iterator[Tuple[str, BatchingStore]]:
    store = BatchingStore()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_EventStoreServicer_to_server(store, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", store
    server.stop(None)


def test_dropped_in_the_middle_of_a_batch_resumes_after_the_last_event_yielded(
    batching_server: Tuple[str, BatchingStore],
) -> None:
    address, store = batching_server
    with EventStoreClient(address, reconnect=FAST_RECONNECT) as c:
        with c.subscribe(from_position=3, max_batch=4) as sub:
            got = [tag(next(sub)), tag(next(sub))]
            assert sub.next_position == 5  # two events of the first batch handed out
            threading.Event().wait(0.6)  # the connection drops now
            while got[-1] != "cu10":
                got.append(tag(next(sub)))
            assert sub.reconnects == 1
    assert got == ["e3", "e4", "e5", "e6", "e7", "e8", "e9", "e10", "cu10"]
    assert [(r.from_position, r.max_batch) for r in store.requests] == [(3, 4), (9, 4)]


async def test_async_dropped_in_the_middle_of_a_batch_resumes_after_the_last_event_yielded(
    batching_server: Tuple[str, BatchingStore],
) -> None:
    address, store = batching_server
    async with AsyncEventStoreClient(address, reconnect=FAST_RECONNECT) as c:
        async with c.subscribe(from_position=3) as sub:
            got = [tag(await sub.__anext__()), tag(await sub.__anext__())]
            assert sub.next_position == 5
            await asyncio.sleep(0.6)
            while got[-1] != "cu10":
                got.append(tag(await asyncio.wait_for(sub.__anext__(), 20)))
            assert sub.reconnects == 1
    assert got == ["e3", "e4", "e5", "e6", "e7", "e8", "e9", "e10", "cu10"]
    assert [(r.from_position, r.max_batch) for r in store.requests] == [
        (3, DEFAULT_MAX_BATCH),
        (9, DEFAULT_MAX_BATCH),
    ]


# -- the real server ----------------------------------------------------------------------------


def test_max_batch_above_1000_is_invalid_argument(client: EventStoreClient) -> None:
    sub = client.subscribe(max_batch=1001)
    with pytest.raises(InvalidArgumentError, match="max_batch"):
        next(sub)
    assert sub.closed


async def test_async_max_batch_above_1000_is_invalid_argument(aclient: AsyncEventStoreClient) -> None:
    sub = aclient.subscribe(max_batch=1001)
    with pytest.raises(InvalidArgumentError, match="max_batch"):
        await asyncio.wait_for(sub.__anext__(), 20)
    assert sub.closed


@pytest.fixture(scope="module")
def busy_server(server_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(server_bin, tmp_path_factory.mktemp("busy-server"))
    s.start()
    yield s
    s.stop()


@pytest.fixture
def busy(busy_server: ServerProcess) -> Iterator[EventStoreClient]:
    with EventStoreClient(busy_server.address, timeout=10, reconnect=FAST_RECONNECT) as c:
        yield c


@pytest.fixture
async def abusy(busy_server: ServerProcess) -> AsyncIterator[AsyncEventStoreClient]:
    async with AsyncEventStoreClient(busy_server.address, timeout=10, reconnect=FAST_RECONNECT) as c:
        yield c


@pytest.fixture
def busy_proxy(busy_server: ServerProcess) -> Iterator[TcpProxy]:
    p = TcpProxy(busy_server.port)
    yield p
    p.close()


def append_many(client: EventStoreClient, stream: str, n: int, chunk: int = 500) -> None:
    for first in range(0, n, chunk):
        client.append(stream, [json_event("E", i) for i in range(first, min(n, first + chunk))])


@pytest.mark.parametrize("max_batch", [None, 1, 1000])
def test_many_events_exactly_once_in_order(busy: EventStoreClient, max_batch: int | None) -> None:
    """2500 stored events (full batches during catch-up), then 700 live ones appended 100 per
    commit (several ready at once): each exactly once, in order, one at a time."""
    prefix = unique()
    stored, live = 2500, 700
    append_many(busy, prefix + "a", stored)
    kwargs = {} if max_batch is None else {"max_batch": max_batch}
    seen: List[int] = []
    caught_up = 0
    with busy.subscribe(filter=Filter(stream_prefix=prefix), **kwargs) as sub:
        guard = threading.Timer(60, sub.close)  # never hang the suite
        guard.start()
        for msg in sub:
            if isinstance(msg, CaughtUp):
                caught_up += 1
                threading.Thread(target=append_many, args=(busy, prefix + "a", live, 100)).start()
            elif isinstance(msg, RecordedEvent):
                seen.append(msg.json())
                assert sub.next_position == msg.global_position + 1
                if len(seen) == stored + live:
                    break
        guard.cancel()
    assert caught_up == 1
    assert seen == list(range(stored)) + list(range(live))


async def test_async_many_events_exactly_once_in_order(abusy: AsyncEventStoreClient) -> None:
    prefix = unique()
    for first in range(0, 1500, 500):
        await abusy.append(prefix + "a", [json_event("E", first + i) for i in range(500)])
    seen: List[int] = []
    async with abusy.subscribe(filter=Filter(stream_prefix=prefix), max_batch=100) as sub:

        async def run() -> None:
            async for msg in sub:
                if isinstance(msg, RecordedEvent):
                    seen.append(msg.json())
                    assert sub.next_position == msg.global_position + 1
                elif isinstance(msg, CaughtUp):
                    return

        await asyncio.wait_for(run(), 60)
    assert seen == list(range(1500))


def test_stopping_in_the_middle_of_a_batch_resumes_right_after_the_last_event(
    busy: EventStoreClient,
) -> None:
    prefix = unique()
    append_many(busy, prefix + "a", 600, 200)
    seen: List[int] = []
    with busy.subscribe(filter=Filter(stream_prefix=prefix), max_batch=64) as first:
        for msg in first:
            if isinstance(msg, RecordedEvent):
                seen.append(msg.json())
                if len(seen) == 100:  # in the middle of the second batch of 64
                    break
        resume = first.next_position
    with busy.subscribe(resume, filter=Filter(stream_prefix=prefix), max_batch=64) as second:
        for msg in second:
            if isinstance(msg, RecordedEvent):
                seen.append(msg.json())
            elif isinstance(msg, CaughtUp):
                break
    assert seen == list(range(600))


def test_dropped_connections_during_a_batched_catch_up(
    busy: EventStoreClient, busy_proxy: TcpProxy
) -> None:
    proxy = busy_proxy
    prefix = unique()
    # 16 KiB events, 19 MB in all: far more than the HTTP/2 windows let the server send ahead
    # of the reader, so that each cut is noticed while the replay still has events to send.
    pad = "x" * 16 * 1024
    for first in range(0, 1200, 200):
        busy.append(prefix + "a", [json_event("E", {"i": first + i, "pad": pad}) for i in range(200)])
    seen: List[int] = []
    with EventStoreClient(proxy.address, reconnect=FAST_RECONNECT) as via_proxy:
        with via_proxy.subscribe(filter=Filter(stream_prefix=prefix), max_batch=50) as sub:
            # Cut once the previous cut has been noticed: in the middle of a batch, right
            # after the reconnect, and later.
            drops_at = [75, 76, 530]
            guard = threading.Timer(60, sub.close)
            guard.start()
            for msg in sub:
                if isinstance(msg, RecordedEvent):
                    seen.append(msg.json()["i"])
                    if drops_at and len(seen) >= drops_at[0] and sub.reconnects >= proxy.drops:
                        drops_at.pop(0)
                        proxy.drop()
                elif isinstance(msg, CaughtUp):
                    break
            guard.cancel()
            assert sub.reconnects >= 3
    assert seen == list(range(1200))
