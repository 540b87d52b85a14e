"""Subscriptions (sync): catch-up, live, filters, checkpoints, closing, and the automatic
resume after a dropped connection and after a server restart."""

from __future__ import annotations

import threading
import time
from typing import List

import pytest

from eventstore_client import (
    CaughtUp,
    Checkpoint,
    EventStoreClient,
    Filter,
    InvalidArgumentError,
    RecordedEvent,
    Subscription,
    SubscriptionMessage,
    json_event,
)

from conftest import FAST_RECONNECT, ServerProcess, TcpProxy, unique


def take(sub: Subscription, n: int, *, kinds: tuple[type, ...] = (RecordedEvent,), timeout: float = 20) -> List[SubscriptionMessage]:
    """The next ``n`` messages of the given kinds (others are skipped)."""
    out: List[SubscriptionMessage] = []
    deadline = time.monotonic() + timeout
    timer = threading.Timer(timeout, sub.close)  # never hang the suite
    timer.start()
    try:
        for msg in sub:
            if isinstance(msg, kinds):
                out.append(msg)
                if len(out) == n:
                    return out
    finally:
        timer.cancel()
    raise AssertionError(f"subscription ended after {len(out)} of {n} messages ({time.monotonic() > deadline=})")


def head(client: EventStoreClient) -> int:
    return client.read_all(direction="backward", max_count=1).head_position


def test_catch_up_then_live(client: EventStoreClient) -> None:
    prefix = unique()
    client.append(prefix + "a", [json_event("E", i) for i in range(3)])
    with client.subscribe(filter=Filter(stream_prefix=prefix)) as sub:
        msgs = take(sub, 4, kinds=(RecordedEvent, CaughtUp))
        assert [type(m) for m in msgs] == [RecordedEvent] * 3 + [CaughtUp]
        events = [m for m in msgs if isinstance(m, RecordedEvent)]
        assert [e.json() for e in events] == [0, 1, 2]
        caught = msgs[3]
        assert isinstance(caught, CaughtUp) and caught.kind == "caught_up"
        assert caught.head_position >= events[-1].global_position
        r = client.append(prefix + "b", [json_event("Live", {"n": 1})])
        (live,) = take(sub, 1)
        assert isinstance(live, RecordedEvent) and live.kind == "event"
        assert live.global_position == r.first_global_position and live.event_type == "Live"
        assert sub.next_position == live.global_position + 1
    assert sub.closed


def test_from_position_and_match_statement(client: EventStoreClient) -> None:
    prefix = unique()
    r = client.append(prefix + "a", [json_event("E", i) for i in range(5)])
    with client.subscribe(from_position=r.first_global_position + 2) as sub:
        kinds = []
        for msg in sub:
            match msg:
                case RecordedEvent(global_position=p):
                    kinds.append(("event", p))
                case CaughtUp():
                    kinds.append(("caught_up", 0))
                    break
                case _:
                    pass
    assert kinds[0] == ("event", r.first_global_position + 2)
    assert kinds[-1] == ("caught_up", 0)


def test_from_end_delivers_only_new_events(client: EventStoreClient) -> None:
    prefix = unique()
    client.append(prefix + "a", [json_event("Old", 0)])
    with client.subscribe(from_end=True, filter=Filter(stream_prefix=prefix)) as sub:
        (caught,) = take(sub, 1, kinds=(CaughtUp,))
        client.append(prefix + "a", [json_event("New", 1)])
        (e,) = take(sub, 1)
        assert isinstance(e, RecordedEvent) and e.event_type == "New"


def test_filter_by_event_type_and_checkpoints(client: EventStoreClient) -> None:
    prefix = unique()
    start = head(client) + 1
    with client.subscribe(
        from_position=start, filter=Filter(prefix, ["Wanted"]), checkpoint_interval=5
    ) as sub:
        take(sub, 1, kinds=(CaughtUp,))
        client.append(prefix + "a", [json_event("Noise", i) for i in range(12)])
        # Every 5th non-matching event in a row, then the head: a checkpoint each.
        cps = take(sub, 3, kinds=(RecordedEvent, Checkpoint))
        assert all(isinstance(c, Checkpoint) for c in cps)
        assert [c.position for c in cps] == [start + 4, start + 9, start + 11]
        assert cps[0].kind == "checkpoint"
        r = client.append(prefix + "a", [json_event("Wanted", "yes")])
        (last,) = take(sub, 1, kinds=(RecordedEvent, Checkpoint))
    assert isinstance(last, RecordedEvent) and last.global_position == r.first_global_position


def test_close_from_another_thread_ends_iteration(client: EventStoreClient) -> None:
    sub = client.subscribe(from_end=True)
    take(sub, 1, kinds=(CaughtUp,))
    threading.Timer(0.2, sub.close).start()
    t0 = time.monotonic()
    assert list(sub) == []  # blocks until closed
    assert time.monotonic() - t0 < 5
    sub.close()  # idempotent
    with pytest.raises(StopIteration):
        next(sub)


def test_client_close_ends_its_subscriptions(server: ServerProcess) -> None:
    c = EventStoreClient(server.address)
    sub = c.subscribe(from_end=True)
    take(sub, 1, kinds=(CaughtUp,))
    threading.Timer(0.2, c.close).start()
    assert list(sub) == []


def test_invalid_subscription_raises_typed_error(client: EventStoreClient) -> None:
    sub = client.subscribe(filter=Filter(stream_prefix="x" * 300))
    with pytest.raises(InvalidArgumentError):
        next(sub)
    assert sub.closed


def test_resumes_after_dropped_connections_without_gap_or_duplicate(
    client: EventStoreClient, proxy: TcpProxy
) -> None:
    """Connections are cut three times while a writer appends: the subscriber still sees
    every event exactly once, in order. The writer keeps appending until the subscription
    has noticed the third cut (with batches, a cut can go unnoticed while the events
    received before it are handed out), then the subscriber reads to the last event."""
    prefix = unique()
    appended: List[int] = []
    start = head(client) + 1
    stop = threading.Event()

    def writer() -> None:
        for i in range(2000):  # ~20 s at most; stopped much sooner
            if stop.is_set():
                return
            r = client.append(prefix + str(i % 4), [json_event("W", 3 * i + k) for k in range(3)])
            appended.extend(range(r.first_global_position, r.last_global_position + 1))
            time.sleep(0.01)

    with EventStoreClient(proxy.address, reconnect=FAST_RECONNECT) as via_proxy:
        with via_proxy.subscribe(from_position=start, filter=Filter(stream_prefix=prefix)) as sub:
            take(sub, 1, kinds=(CaughtUp,))
            w = threading.Thread(target=writer)
            w.start()
            seen: List[RecordedEvent] = []
            drops_at = [8, 25, 44]
            total = -1  # known once the writer has stopped
            guard = threading.Timer(30, sub.close)  # never hang the suite
            guard.start()
            try:
                for msg in sub:
                    if isinstance(msg, RecordedEvent):
                        seen.append(msg)
                        # Cut at these counts, once the previous cut has been noticed (events
                        # still buffered from a cut connection arrive before the error does).
                        if drops_at and len(seen) >= drops_at[0] and sub.reconnects >= proxy.drops:
                            drops_at.pop(0)
                            proxy.drop()
                        if not drops_at and sub.reconnects >= 3 and total < 0:
                            stop.set()
                            w.join()
                            total = len(appended)
                        if len(seen) == total:
                            break
            finally:
                stop.set()
                guard.cancel()
                w.join()
            assert len(seen) == total, f"only {len(seen)} of {total} events"
            assert sub.reconnects >= 3
    assert proxy.drops == 3
    assert [e.json() for e in seen] == list(range(total))
    assert [e.global_position for e in seen] == appended


@pytest.mark.slow
def test_resumes_after_server_restart_at_the_right_position(own_server: ServerProcess) -> None:
    """The memory backend loses everything on restart, so the new server (same port) numbers
    its log from 1 again. The client must resume at last delivered position + 1 = 6: it
    skips the new server's positions 1..5 (it saw positions 1..5 of the old one) and
    delivers 6, 7, 8 -- proof that it resumed from where it was, not from the start."""
    with EventStoreClient(own_server.address, reconnect=FAST_RECONNECT) as c:
        c.append("before", [json_event("Old", i) for i in range(1, 6)])
        with c.subscribe() as sub:
            msgs = take(sub, 6, kinds=(RecordedEvent, CaughtUp))
            assert [m.global_position for m in msgs if isinstance(m, RecordedEvent)] == [1, 2, 3, 4, 5]
            assert sub.next_position == 6

            own_server.restart_same_port()
            with EventStoreClient(own_server.address) as writer:
                r = writer.append("after", [json_event("New", i) for i in range(1, 9)])
                assert (r.first_global_position, r.last_global_position) == (1, 8)

            resumed = take(sub, 3)
            assert [(e.global_position, e.event_type, e.json()) for e in resumed] == [
                (6, "New", 6),
                (7, "New", 7),
                (8, "New", 8),
            ]
            assert sub.reconnects >= 1
            # And it is live again on the new server.
            with EventStoreClient(own_server.address) as writer:
                writer.append("after", [json_event("New", 9)])
            (live,) = take(sub, 1)
            assert (live.global_position, live.json()) == (9, 9)


def test_resumes_when_dropped_during_catch_up(client: EventStoreClient, proxy: TcpProxy) -> None:
    prefix = unique()
    start = head(client) + 1
    # 64 KiB events, 20 MB in all: more than the connection takes in ahead of the reader, so
    # that each cut is noticed while the replay still has events to send.
    pad = "x" * 64 * 1024
    for b in range(6):
        client.append(prefix + "s", [json_event("R", {"i": 50 * b + i, "pad": pad}) for i in range(50)])
    with EventStoreClient(proxy.address, reconnect=FAST_RECONNECT) as via_proxy:
        # One event per message, so that each cut lands between two messages of the replay;
        # test_batches.py cuts a batched replay.
        with via_proxy.subscribe(from_position=start, max_batch=1) as sub:
            seen: List[int] = []
            drops_at = [50, 51, 170]
            guard = threading.Timer(30, sub.close)
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
    assert seen == list(range(300))
