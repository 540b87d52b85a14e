"""Tags, queries, conditional appends and append_many (Extension 1 of the API) against the
real server, and a conditional append against a server that does not know AppendMany."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from concurrent import futures
from typing import Any, Iterator, List

import grpc
import pytest

from conftest import SDK_DIR, ServerProcess
from eventstore_client import (
    AlreadyExistsError,
    AppendCondition,
    AppendConditionFailedError,
    AsyncEventStoreClient,
    CaughtUp,
    EventData,
    EventStoreClient,
    ExpectedVersion,
    Filter,
    InvalidArgumentError,
    Query,
    QueryItem,
    RecordedEvent,
    StreamAppend,
    StreamNotFoundError,
    UnimplementedError,
    WrongExpectedVersionError,
    json_event,
)
from eventstore_client._gen import eventstore_pb2 as pb


def tag() -> str:
    """A tag no other test uses."""
    return f"t:{uuid.uuid4().hex[:12]}"


def ev(event_type: str, *tags: str, event_id: str = "") -> EventData:
    return json_event(event_type, {}, tags=list(tags), event_id=event_id)


def read_query(client: EventStoreClient, query: Query, from_position: int = 1) -> List[RecordedEvent]:
    return list(client.iter_all(from_position, filter=Filter(items=query)))


def test_tags_round_trip_on_every_read(client: EventStoreClient, stream: str) -> None:
    a, b = tag(), tag()
    r = client.append(stream, [ev("Tagged", b, a), ev("Untagged")])
    got = client.read_stream(stream).events
    assert [e.tags for e in got] == [(b, a), ()]
    page = client.read_all(r.first_global_position, max_count=2)
    assert [e.tags for e in page.events] == [(b, a), ()]
    with client.subscribe(r.first_global_position, filter=Filter(stream_prefix=stream)) as sub:
        first = next(iter(sub))
    assert isinstance(first, RecordedEvent) and first.tags == (b, a)


def test_tags_are_validated_as_a_sequence() -> None:
    with pytest.raises(TypeError):
        json_event("X", {}, tags="course:c1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Filter(items=[QueryItem(tags=["a"]), "b"])  # type: ignore[list-item]


def test_query_reads_by_types_tags_both_and_several_items(client: EventStoreClient, stream: str) -> None:
    c, s = tag(), tag()
    r = client.append(stream, [ev("A", c), ev("B", c, s), ev("A", s), ev("C", c)])
    start = r.first_global_position
    pos = lambda events: [e.global_position - start for e in events]  # noqa: E731
    assert pos(read_query(client, Query.of(tags=[c]), start)) == [0, 1, 3]
    assert pos(read_query(client, Query.of(tags=[c, s]), start)) == [1]
    assert pos(read_query(client, Query.of(event_types=["A"], tags=[c]), start)) == [0]
    assert pos(read_query(client, Query.of(event_types=["A", "C"], tags=[c]), start)) == [0, 3]
    both = Query.of(event_types=["A"], tags=[c]).or_(tags=[s])
    assert pos(read_query(client, both, start)) == [0, 1, 2]
    assert list(both) == [QueryItem(["A"], [c]), QueryItem((), [s])]
    # Types only (no index: a scan, bounded per page by the server), with the stream prefix.
    only_types = Filter(stream_prefix=stream, items=Query.of(event_types=["B", "C"]))
    assert pos(client.iter_all(start, filter=only_types)) == [1, 3]
    # A plain list of items works as well as a Query.
    assert pos(client.iter_all(start, filter=Filter(items=[QueryItem(tags=[s])]))) == [1, 2]


def test_subscription_by_query_replays_then_goes_live(client: EventStoreClient, stream: str) -> None:
    c = tag()
    r = client.append(stream, [ev("A", c), ev("A"), ev("B", c)])
    got: List[int] = []
    with client.subscribe(r.first_global_position, filter=Filter(items=Query.of(tags=[c]))) as sub:
        for m in sub:
            if isinstance(m, CaughtUp):
                live = client.append(stream, [ev("A"), ev("C", c)])
            elif isinstance(m, RecordedEvent):
                assert c in m.tags
                got.append(m.global_position)
                if len(got) == 3:
                    break
    p = r.first_global_position
    assert got == [p, p + 2, live.last_global_position]


def test_condition_passes_then_fails_with_the_conflicting_position(
    client: EventStoreClient, stream: str
) -> None:
    c = tag()
    query = Query.of(event_types=["Booked"], tags=[c])
    head = client.read_all(filter=Filter(items=query)).head_position
    ok = client.append(stream, ev("Booked", c), condition=AppendCondition(query, after=head))
    assert ok.first_stream_version == 1 and not ok.duplicate
    # A second decision that read the same head conflicts with the first booking.
    with pytest.raises(AppendConditionFailedError) as info:
        client.append(stream, ev("Booked", c), condition=AppendCondition(query, after=head))
    err = info.value
    assert err.code == grpc.StatusCode.ABORTED
    assert err.position == ok.first_global_position
    assert err.append_index is None
    # Nothing was stored; after the booking's own position the condition holds again.
    assert client.read_stream(stream).stream_version == 1
    again = client.append(
        stream, ev("Booked", c), condition=AppendCondition(query, after=ok.last_global_position)
    )
    assert again.first_stream_version == 2
    # after = 0: the whole log, so the first booking matches.
    with pytest.raises(AppendConditionFailedError) as info:
        client.append(stream, ev("Booked", c), condition=AppendCondition(query))
    assert info.value.position == ok.first_global_position
    # Unrelated events never match.
    client.append(stream, ev("Booked", tag()), condition=AppendCondition(query, after=again.last_global_position))


def test_a_retried_conditional_append_is_a_duplicate(client: EventStoreClient, stream: str) -> None:
    c = tag()
    cond = AppendCondition(Query.of(tags=[c]), after=client.read_all().head_position)
    e = ev("Booked", c, event_id=str(uuid.uuid4()))
    first = client.append(stream, e, condition=cond)
    retry = client.append(stream, e, condition=cond)  # its condition fails now; a duplicate wins
    assert retry.duplicate and retry.first_global_position == first.first_global_position


def test_condition_and_expected_version_together(client: EventStoreClient, stream: str) -> None:
    c = tag()
    cond = AppendCondition(Query.of(tags=[c]))
    with pytest.raises(WrongExpectedVersionError) as info:
        client.append(stream, ev("X", c), ExpectedVersion.exact(3), condition=cond)
    assert info.value.actual == 0 and info.value.stream == stream
    assert info.value.expected == ExpectedVersion.exact(3)


def test_append_many_commits_all_in_one_run_of_positions(client: EventStoreClient) -> None:
    s1, s2 = f"am-{uuid.uuid4().hex[:10]}", f"am-{uuid.uuid4().hex[:10]}"
    results = client.append_many(
        [
            StreamAppend(s1, [ev("A"), ev("B")], ExpectedVersion.no_stream(), "Thing"),
            StreamAppend(s2, ev("C")),
            StreamAppend(s1, ev("D"), ExpectedVersion.exact(2)),  # sees the first append
        ]
    )
    assert [(r.first_stream_version, r.last_stream_version) for r in results] == [(1, 2), (1, 1), (3, 3)]
    start = results[0].first_global_position
    assert [(r.first_global_position, r.last_global_position) for r in results] == [
        (start, start + 1), (start + 2, start + 2), (start + 3, start + 3)
    ]
    assert [e.event_type for e in client.read_stream(s1).events] == ["A", "B", "D"]
    assert client.read_stream(s1).events[0].stream_type == "Thing"


def test_append_many_failing_in_the_middle_stores_nothing(client: EventStoreClient) -> None:
    s1, s2, s3 = (f"am-{uuid.uuid4().hex[:10]}" for _ in range(3))
    client.append(s2, ev("Existing"))
    head = client.read_all().head_position
    with pytest.raises(WrongExpectedVersionError) as info:
        client.append_many(
            [
                StreamAppend(s1, ev("A")),
                StreamAppend(s2, ev("B"), ExpectedVersion.no_stream()),
                StreamAppend(s3, ev("C")),
            ]
        )
    err = info.value
    assert err.append_index == 1
    assert err.stream == s2 and err.expected == ExpectedVersion.no_stream() and err.actual == 1
    for missing in (s1, s3):
        with pytest.raises(StreamNotFoundError):
            client.read_stream(missing)
    assert client.read_all().head_position == head  # no position was used up
    assert client.read_stream(s2).stream_version == 1
    # The actual version counts the earlier appends of the same request.
    with pytest.raises(WrongExpectedVersionError) as info:
        client.append_many(
            [StreamAppend(s1, ev("A")), StreamAppend(s1, ev("B"), ExpectedVersion.exact(0))]
        )
    assert info.value.append_index == 1 and info.value.actual == 1


def test_append_many_condition_failure_names_no_append(client: EventStoreClient) -> None:
    c = tag()
    s1, s2 = f"am-{uuid.uuid4().hex[:10]}", f"am-{uuid.uuid4().hex[:10]}"
    seen = client.append(s1, ev("Seen", c))
    cond = AppendCondition(Query.of(tags=[c]), after=seen.last_global_position - 1)
    with pytest.raises(AppendConditionFailedError) as info:
        client.append_many([StreamAppend(s1, ev("A", c)), StreamAppend(s2, ev("B"))], cond)
    assert info.value.position == seen.first_global_position
    assert info.value.append_index is None
    assert client.read_stream(s1).stream_version == 1
    # The request's own events never match its condition.
    cond = AppendCondition(Query.of(tags=[c]), after=seen.last_global_position)
    results = client.append_many([StreamAppend(s1, ev("A", c)), StreamAppend(s2, ev("B", c))], cond)
    assert len(results) == 2


def test_append_many_errors_carry_the_append_index(client: EventStoreClient) -> None:
    s1 = f"am-{uuid.uuid4().hex[:10]}"
    used = str(uuid.uuid4())
    client.append(s1, ev("A", event_id=used))
    with pytest.raises(AlreadyExistsError) as info:
        client.append_many([StreamAppend(s1, ev("B")), StreamAppend(s1, ev("A", event_id=used))])
    assert info.value.append_index == 1
    with pytest.raises(InvalidArgumentError) as bad:
        client.append_many([StreamAppend(s1, ev("B")), StreamAppend(s1, json_event("", {}))])
    assert bad.value.append_index == 1
    with pytest.raises(InvalidArgumentError) as bad:  # a condition needs at least one item
        client.append(s1, ev("B"), condition=AppendCondition([]))
    assert "fail_if_events_match" in bad.value.details
    with pytest.raises(InvalidArgumentError):
        client.append(s1, ev("B", ""))  # an empty tag
    assert client.read_stream(s1).stream_version == 1


async def test_async_client_appends_conditionally_and_many(aclient: AsyncEventStoreClient) -> None:
    c = tag()
    s1, s2 = f"am-{uuid.uuid4().hex[:10]}", f"am-{uuid.uuid4().hex[:10]}"
    query = Query.of(tags=[c])
    head = (await aclient.read_all(filter=Filter(items=query))).head_position
    results = await aclient.append_many(
        [StreamAppend(s1, ev("A", c)), StreamAppend(s2, ev("B"))], AppendCondition(query, head)
    )
    assert [r.first_stream_version for r in results] == [1, 1]
    with pytest.raises(AppendConditionFailedError) as info:
        await aclient.append(s1, ev("C", c), condition=AppendCondition(query, head))
    assert info.value.position == results[0].first_global_position
    with pytest.raises(WrongExpectedVersionError) as wrong:
        await aclient.append_many([StreamAppend(s2, ev("B"), ExpectedVersion.no_stream())])
    assert wrong.value.append_index == 0 and wrong.value.actual == 1
    got = [e.tags async for e in aclient.iter_all(filter=Filter(items=query))]
    assert got == [(c,)]


@pytest.fixture
def append_only_server() -> Iterator[str]:
    """A server that knows Append but not AppendMany, like one without Extension 1."""
    appended: List[Any] = []

    def append(req: pb.AppendRequest, ctx: grpc.ServicerContext) -> pb.AppendResponse:
        appended.append(req)
        return pb.AppendResponse(first_stream_version=1, last_stream_version=1)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "eventstore.v1.EventStore",
        {"Append": grpc.unary_unary_rpc_method_handler(
            append,
            request_deserializer=pb.AppendRequest.FromString,
            response_serializer=pb.AppendResponse.SerializeToString,
        )},
    ),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def test_a_conditional_append_is_never_sent_as_a_plain_append(append_only_server: str) -> None:
    with EventStoreClient(append_only_server, timeout=10) as client:
        assert client.append("s", ev("A")).first_stream_version == 1
        with pytest.raises(UnimplementedError) as info:
            client.append("s", ev("A"), condition=AppendCondition(Query.of(tags=["x"])))
        assert info.value.code == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(UnimplementedError):
            client.append_many([StreamAppend("s", ev("A"))])


def test_enrolment_example_runs(server: ServerProcess) -> None:
    env = dict(os.environ, PYTHONPATH=str(SDK_DIR / "src"))
    out = subprocess.run(
        [sys.executable, "-m", "eventstore_client.examples.enrolment", server.address],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("enrolment: OK")
    assert "no (full)" in out.stdout and "stale decision refused" in out.stdout
