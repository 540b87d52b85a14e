"""The synchronous client against the real server: every method and every typed error."""

from __future__ import annotations

import socket
import uuid

import grpc
import pytest

from eventstore_client import (
    AlreadyExistsError,
    Direction,
    EventData,
    EventStoreClient,
    EventStoreError,
    ExpectedVersion,
    Filter,
    InvalidArgumentError,
    ResourceExhaustedError,
    StreamNotFoundError,
    StreamTypeMismatchError,
    UnavailableError,
    WrongExpectedVersionError,
    json_event,
)

from conftest import unique


def ev(i: int, event_type: str = "Numbered") -> EventData:
    return json_event(event_type, {"i": i})


# -- append ---------------------------------------------------------------------------------


def test_append_returns_versions_and_positions(client: EventStoreClient, stream: str) -> None:
    r1 = client.append(stream, [ev(1), ev(2)], ExpectedVersion.no_stream(), stream_type="Order")
    assert (r1.first_stream_version, r1.last_stream_version) == (1, 2)
    assert r1.last_global_position == r1.first_global_position + 1
    assert r1.recorded_at_unix_ms > 0 and not r1.duplicate
    assert r1.next_expected_version == ExpectedVersion.exact(2)

    r2 = client.append(stream, ev(3), r1.next_expected_version)  # a single event is fine too
    assert (r2.first_stream_version, r2.last_stream_version) == (3, 3)
    assert r2.first_global_position > r1.last_global_position

    r3 = client.append(stream, [ev(4)], ExpectedVersion.stream_exists(), stream_type="Order")
    r4 = client.append(stream, [ev(5)])  # default: ExpectedVersion.any()
    assert (r3.last_stream_version, r4.last_stream_version) == (4, 5)
    assert client.read_stream(stream).events[0].stream_type == "Order"


def test_append_every_field_round_trips(client: EventStoreClient, stream: str) -> None:
    eid = str(uuid.uuid4())
    data = EventData(
        event_type="Shipped",
        payload=bytes(range(256)),
        content_type="application/x-test",
        event_id=eid,
        event_version=7,
        metadata={"tenant": "acme", "ünï": "cödé"},
        correlation_id="corr-1",
        causation_id="cause-1",
        occurred_at_unix_ms=1_700_000_000_123,
    )
    client.append(stream, [data, EventData("Bare")])
    first, bare = client.read_stream(stream).events
    assert first.event_id == eid
    assert (first.event_type, first.event_version, first.content_type) == (
        "Shipped",
        7,
        "application/x-test",
    )
    assert first.payload == bytes(range(256))
    assert first.metadata == {"tenant": "acme", "ünï": "cödé"}
    assert (first.correlation_id, first.causation_id) == ("corr-1", "cause-1")
    assert first.occurred_at_unix_ms == 1_700_000_000_123
    assert first.occurred_at is not None and first.occurred_at.year == 2023
    assert first.recorded_at.year >= 2024
    # Defaults: the server assigns an id and the octet-stream content type.
    assert len(bare.event_id) == 36 and bare.event_id != eid
    assert bare.content_type == "application/octet-stream" and bare.payload == b""
    assert bare.occurred_at is None


def test_json_helpers(client: EventStoreClient, stream: str) -> None:
    e = json_event("Placed", {"total": 42, "name": "Zoë"}, metadata={"k": "v"}, occurred_at=5)
    assert e.content_type == "application/json" and e.json() == {"total": 42, "name": "Zoë"}
    client.append(stream, [e])
    got = client.read_stream(stream).events[0]
    assert got.content_type == "application/json"
    assert got.json() == {"total": 42, "name": "Zoë"}
    assert got.metadata == {"k": "v"} and got.occurred_at_unix_ms == 5


def test_idempotent_retry_is_acknowledged_as_duplicate(
    client: EventStoreClient, stream: str
) -> None:
    batch = [json_event("A", 1, event_id=str(uuid.uuid4())), json_event("B", 2, event_id=str(uuid.uuid4()))]
    first = client.append(stream, batch, ExpectedVersion.no_stream())
    again = client.append(stream, batch, ExpectedVersion.no_stream())  # expected is ignored
    assert again.duplicate and not first.duplicate
    assert (again.first_global_position, again.last_global_position, again.recorded_at_unix_ms) == (
        first.first_global_position,
        first.last_global_position,
        first.recorded_at_unix_ms,
    )
    assert client.read_stream(stream).stream_version == 2


# -- typed errors ---------------------------------------------------------------------------


def test_wrong_expected_version_carries_expected_and_actual(
    client: EventStoreClient, stream: str
) -> None:
    with pytest.raises(WrongExpectedVersionError) as missing:
        client.append(stream, [ev(1)], ExpectedVersion.stream_exists())
    assert missing.value.actual == 0
    assert missing.value.expected == ExpectedVersion.stream_exists()

    client.append(stream, [ev(1), ev(2)])
    with pytest.raises(WrongExpectedVersionError) as exact:
        client.append(stream, [ev(3)], ExpectedVersion.exact(1))
    err = exact.value
    assert (err.expected, err.actual, err.stream) == (ExpectedVersion.exact(1), 2, stream)
    assert err.code == grpc.StatusCode.ABORTED and isinstance(err, EventStoreError)

    with pytest.raises(WrongExpectedVersionError) as exists:
        client.append(stream, [ev(3)], ExpectedVersion.no_stream())
    assert exists.value.actual == 2
    # EXACT 0 is NO_STREAM; nothing was written by the failures.
    with pytest.raises(WrongExpectedVersionError):
        client.append(stream, [ev(3)], ExpectedVersion.exact(0))
    assert client.read_stream(stream).stream_version == 2


def test_stream_not_found(client: EventStoreClient, stream: str) -> None:
    with pytest.raises(StreamNotFoundError) as e:
        client.read_stream(stream)
    assert e.value.code == grpc.StatusCode.NOT_FOUND and e.value.stream == stream
    it = client.iter_stream(stream)
    with pytest.raises(StreamNotFoundError):
        next(it)


def test_already_exists(client: EventStoreClient, stream: str) -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    client.append(stream, [json_event("A", 1, event_id=a)])
    with pytest.raises(AlreadyExistsError) as e:  # a superset of a committed batch
        client.append(stream, [json_event("A", 1, event_id=a), json_event("B", 2, event_id=b)])
    assert a in e.value.details and e.value.code == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(AlreadyExistsError):  # the same id on another stream
        client.append(stream + "-other", [json_event("A", 1, event_id=a)])


@pytest.mark.parametrize(
    "stream_id, events",
    [
        ("", [EventData("A")]),  # empty stream id
        ("s", []),  # no events
        ("s", [EventData("")]),  # empty event type
        ("s", [EventData("A", event_id="NOT-A-UUID")]),
        ("s", [EventData("A", event_id=str(uuid.uuid4()).upper())]),
        ("bad\x01stream", [EventData("A")]),  # control character
        ("s" * 257, [EventData("A")]),  # too long
    ],
)
def test_invalid_argument(client: EventStoreClient, stream_id: str, events: list[EventData]) -> None:
    with pytest.raises(InvalidArgumentError) as e:
        client.append(stream_id, events)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and e.value.details


def test_invalid_argument_same_id_twice_in_one_batch(client: EventStoreClient, stream: str) -> None:
    eid = str(uuid.uuid4())
    with pytest.raises(InvalidArgumentError):
        client.append(stream, [EventData("A", event_id=eid), EventData("B", event_id=eid)])


def test_stream_type_mismatch(client: EventStoreClient, stream: str) -> None:
    client.append(stream, [ev(1)], stream_type="Order")
    client.append(stream, [ev(2)], stream_type=None)  # no opinion
    with pytest.raises(StreamTypeMismatchError) as e:
        client.append(stream, [ev(3)], stream_type="Invoice")
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_resource_exhausted(client: EventStoreClient, stream: str) -> None:
    with pytest.raises(ResourceExhaustedError) as e:
        client.append(stream, [EventData("Big", payload=b"x" * (5 * 1024 * 1024))])
    assert e.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_unavailable_when_nothing_listens() -> None:
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with EventStoreClient(f"127.0.0.1:{port}", timeout=5) as c:
        with pytest.raises(UnavailableError) as e:
            c.append("s", [ev(1)])
    assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_client_side_argument_checks(client: EventStoreClient) -> None:
    with pytest.raises(TypeError):
        client.append("s", [{"event_type": "A"}])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        client.append("s", [ev(1)], expected=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ExpectedVersion.exact(-1)
    with pytest.raises(ValueError):
        client.read_stream("s", from_version=-1)
    with pytest.raises(ValueError):
        client.read_stream("s", direction="sideways")
    with pytest.raises(TypeError):
        Filter(event_types="A")  # a string is not a list of names
    with pytest.raises(TypeError):
        EventData("A", payload="text")  # type: ignore[arg-type]


# -- read_stream / iter_stream ----------------------------------------------------------------


def fill(client: EventStoreClient, stream: str, n: int) -> None:
    client.append(stream, [ev(i) for i in range(1, n + 1)], ExpectedVersion.no_stream())


def test_read_stream_pages_and_edges(client: EventStoreClient, stream: str) -> None:
    fill(client, stream, 25)
    p1 = client.read_stream(stream, max_count=10)
    assert [e.stream_version for e in p1.events] == list(range(1, 11))
    assert (p1.next_version, p1.is_end, p1.stream_version) == (11, False, 25)
    last = client.read_stream(stream, from_version=21, max_count=10)
    assert [e.stream_version for e in last.events] == [21, 22, 23, 24, 25]
    assert (last.next_version, last.is_end) == (26, True)
    beyond = client.read_stream(stream, from_version=100)
    assert beyond.events == [] and beyond.is_end and beyond.next_version == 26

    b1 = client.read_stream(stream, max_count=10, direction=Direction.BACKWARD)
    assert [e.stream_version for e in b1.events] == list(range(25, 15, -1))
    assert (b1.next_version, b1.is_end) == (15, False)
    b_end = client.read_stream(stream, from_version=3, direction="backward")
    assert [e.stream_version for e in b_end.events] == [3, 2, 1]
    assert (b_end.next_version, b_end.is_end) == (0, True)
    latest = client.read_stream(stream, from_version=1000, max_count=1, direction="BACKWARD")
    assert latest.events[0].stream_version == 25
    assert [e.json()["i"] for e in p1.events] == list(range(1, 11))


@pytest.mark.parametrize("page_size", [1, 7, 25, 1000])
def test_iter_stream_both_directions(client: EventStoreClient, stream: str, page_size: int) -> None:
    fill(client, stream, 25)
    fwd = [e.stream_version for e in client.iter_stream(stream, page_size=page_size)]
    assert fwd == list(range(1, 26))
    back = [e.stream_version for e in client.iter_stream(stream, direction="backward", page_size=page_size)]
    assert back == list(range(25, 0, -1))
    mid_f = [e.stream_version for e in client.iter_stream(stream, 10, page_size=page_size)]
    assert mid_f == list(range(10, 26))
    mid_b = [
        e.stream_version
        for e in client.iter_stream(stream, 10, Direction.BACKWARD, page_size=page_size)
    ]
    assert mid_b == list(range(10, 0, -1))


def test_iter_stream_is_lazy(client: EventStoreClient, stream: str) -> None:
    fill(client, stream, 5)
    it = client.iter_stream(stream, page_size=2)
    assert next(it).stream_version == 1
    client.append(stream, [ev(6)])  # appended while iterating: seen by a later page
    assert [e.stream_version for e in it] == [2, 3, 4, 5, 6]


# -- read_all / iter_all ----------------------------------------------------------------------


def test_read_all_pages_filter_and_edges(client: EventStoreClient) -> None:
    prefix = unique()
    client.append(prefix + "a", [ev(i, "Even" if i % 2 == 0 else "Odd") for i in range(1, 7)])
    client.append(prefix + "b", [ev(i, "Even" if i % 2 == 0 else "Odd") for i in range(7, 11)])
    client.append(unique("other"), [ev(0, "Even")])

    f = Filter(stream_prefix=prefix)
    page = client.read_all(max_count=1000, filter=f)
    assert [e.json()["i"] for e in page.events] == list(range(1, 11))
    assert page.is_end and page.next_position == page.head_position + 1

    evens = client.read_all(max_count=1000, filter=Filter(prefix, ["Even"]))
    assert [e.json()["i"] for e in evens.events] == [2, 4, 6, 8, 10]

    latest = client.read_all(direction=Direction.BACKWARD, max_count=1)
    assert latest.events[0].global_position == latest.head_position
    assert latest.events[0].event_type == "Even" and latest.events[0].stream_id.startswith("other")

    start = client.read_all(from_position=2, direction="backward", max_count=10)
    assert [e.global_position for e in start.events] == [2, 1]
    assert start.is_end and start.next_position == 0


def test_iter_all_both_directions(client: EventStoreClient) -> None:
    prefix = unique()
    for s in "abc":
        client.append(prefix + s, [ev(i) for i in range(5)])
    f = Filter(stream_prefix=prefix)
    fwd = list(client.iter_all(filter=f, page_size=4))
    assert len(fwd) == 15
    positions = [e.global_position for e in fwd]
    assert positions == sorted(positions)
    back = list(client.iter_all(direction="backward", filter=f, page_size=4))
    assert [e.global_position for e in back] == positions[::-1]
    # The whole log is gap-free: 1, 2, 3, ... up to the head.
    everything = [e.global_position for e in client.iter_all(page_size=333)]
    assert everything == list(range(1, len(everything) + 1))
    # From the middle, both directions.
    mid = positions[7]
    assert [e.global_position for e in client.iter_all(mid, filter=f, page_size=2)] == positions[7:]
    assert [
        e.global_position for e in client.iter_all(mid, Direction.BACKWARD, f, page_size=2)
    ] == positions[7::-1]


def test_per_call_timeout_and_token_are_accepted(server, stream: str) -> None:  # type: ignore[no-untyped-def]
    # The server has no auth yet: a token is sent and ignored.
    with EventStoreClient(server.address, token="t0ken", timeout=None) as c:
        r = c.append(stream, [ev(1)], timeout=5)
        assert r.last_stream_version == 1
        assert c.read_stream(stream, timeout=0.5).stream_version == 1
    with pytest.raises(ValueError):
        EventStoreClient(server.address, timeout=0)


def test_closed_client_refuses_calls(server) -> None:  # type: ignore[no-untyped-def]
    c = EventStoreClient(server.address)
    c.close()
    c.close()  # idempotent
    with pytest.raises(Exception):
        c.read_all()
