"""Conversions between the SDK's types and the generated protobuf messages (internal)."""

from __future__ import annotations

from typing import Iterable, Optional, Union

from ._gen import eventstore_pb2 as pb
from ._types import (
    AllPage,
    AppendCondition,
    AppendResult,
    CaughtUp,
    Checkpoint,
    Direction,
    EventData,
    ExpectedVersion,
    FellBehind,
    Filter,
    QueryItem,
    RecordedEvent,
    StreamAppend,
    StreamPage,
    SubscriptionMessage,
)

_KINDS = {
    "any": pb.EXPECTED_ANY,
    "no_stream": pb.EXPECTED_NO_STREAM,
    "stream_exists": pb.EXPECTED_STREAM_EXISTS,
    "exact": pb.EXPECTED_EXACT,
}


def direction(value: Union[Direction, str]) -> pb.Direction:
    d = value if isinstance(value, Direction) else Direction(str(value).lower())
    return pb.BACKWARD if d is Direction.BACKWARD else pb.FORWARD


def check_uint(name: str, value: int, bits: int = 64) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0 or value >= 1 << bits:
        raise ValueError(f"{name} must be between 0 and {(1 << bits) - 1}, got {value}")
    return value


def event_data(e: EventData) -> pb.EventData:
    if not isinstance(e, EventData):
        raise TypeError(f"events must be EventData (see json_event()), got {type(e).__name__}")
    return pb.EventData(
        event_id=e.event_id,
        event_type=e.event_type,
        event_version=check_uint("event_version", e.event_version, 32),
        content_type=e.content_type,
        payload=e.payload,
        metadata=dict(e.metadata),
        correlation_id=e.correlation_id,
        causation_id=e.causation_id,
        occurred_at_unix_ms=check_uint("occurred_at_unix_ms", e.occurred_at_unix_ms),
        tags=list(e.tags),
    )


def batch(events: Union[EventData, Iterable[EventData]]) -> list[EventData]:
    return [events] if isinstance(events, EventData) else list(events)


def append_request(
    stream: str,
    events: Union[EventData, Iterable[EventData]],
    expected: ExpectedVersion,
    stream_type: Optional[str],
) -> pb.AppendRequest:
    if not isinstance(expected, ExpectedVersion):
        raise TypeError("expected must be an ExpectedVersion (e.g. ExpectedVersion.exact(3))")
    return pb.AppendRequest(
        stream_id=stream,
        stream_type=stream_type or "",
        expected_kind=_KINDS[expected.kind],
        expected_version=expected.version if expected.kind == "exact" else 0,
        events=[event_data(e) for e in batch(events)],
    )


def query_items(items: Iterable[QueryItem]) -> list[pb.QueryItem]:
    return [pb.QueryItem(event_types=list(i.event_types), tags=list(i.tags)) for i in items]


def append_condition(c: AppendCondition) -> pb.AppendCondition:
    if not isinstance(c, AppendCondition):
        raise TypeError(f"condition must be an AppendCondition, got {type(c).__name__}")
    return pb.AppendCondition(
        fail_if_events_match=query_items(c.fail_if_events_match),
        after=check_uint("after", c.after),
    )


def append_many_request(
    appends: Iterable[StreamAppend], condition: Optional[AppendCondition]
) -> pb.AppendManyRequest:
    batch = list(appends)
    for a in batch:
        if not isinstance(a, StreamAppend):
            raise TypeError(f"appends must be StreamAppend, got {type(a).__name__}")
    req = pb.AppendManyRequest(
        appends=[append_request(a.stream, a.events, a.expected, a.stream_type) for a in batch]
    )
    if condition is not None:
        req.condition.CopyFrom(append_condition(condition))
    return req


def append_result(r: pb.AppendResponse) -> AppendResult:
    return AppendResult(
        first_stream_version=r.first_stream_version,
        last_stream_version=r.last_stream_version,
        first_global_position=r.first_global_position,
        last_global_position=r.last_global_position,
        recorded_at_unix_ms=r.recorded_at_unix_ms,
        duplicate=r.duplicate,
    )


def recorded_event(e: pb.RecordedEvent) -> RecordedEvent:
    return RecordedEvent(
        stream_id=e.stream_id,
        stream_type=e.stream_type,
        stream_version=e.stream_version,
        global_position=e.global_position,
        event_id=e.event_id,
        event_type=e.event_type,
        event_version=e.event_version,
        content_type=e.content_type,
        payload=e.payload,
        metadata=dict(e.metadata),
        correlation_id=e.correlation_id,
        causation_id=e.causation_id,
        occurred_at_unix_ms=e.occurred_at_unix_ms,
        recorded_at_unix_ms=e.recorded_at_unix_ms,
        tags=tuple(e.tags),
    )


def read_stream_request(
    stream: str, from_version: int, max_count: Optional[int], dir_: Union[Direction, str]
) -> pb.ReadStreamRequest:
    return pb.ReadStreamRequest(
        stream_id=stream,
        from_version=check_uint("from_version", from_version),
        max_count=check_uint("max_count", max_count or 0, 32),
        direction=direction(dir_),
    )


def stream_page(r: pb.ReadStreamResponse) -> StreamPage:
    return StreamPage(
        events=[recorded_event(e) for e in r.events],
        next_version=r.next_version,
        is_end=r.is_end,
        stream_version=r.stream_version,
    )


def filter_(f: Optional[Filter]) -> Optional[pb.Filter]:
    if f is None:
        return None
    if not isinstance(f, Filter):
        raise TypeError(f"filter must be a Filter, got {type(f).__name__}")
    return pb.Filter(
        stream_prefix=f.stream_prefix,
        event_types=list(f.event_types),
        items=query_items(f.items),
    )


def read_all_request(
    from_position: int,
    max_count: Optional[int],
    dir_: Union[Direction, str],
    f: Optional[Filter],
) -> pb.ReadAllRequest:
    req = pb.ReadAllRequest(
        from_position=check_uint("from_position", from_position),
        max_count=check_uint("max_count", max_count or 0, 32),
        direction=direction(dir_),
    )
    pf = filter_(f)
    if pf is not None:
        req.filter.CopyFrom(pf)
    return req


def all_page(r: pb.ReadAllResponse) -> AllPage:
    return AllPage(
        events=[recorded_event(e) for e in r.events],
        next_position=r.next_position,
        is_end=r.is_end,
        head_position=r.head_position,
    )


def subscribe_request(
    from_position: int,
    from_end: bool,
    f: Optional[Filter],
    checkpoint_interval: int,
    max_batch: int,
) -> pb.SubscribeRequest:
    req = pb.SubscribeRequest(
        from_position=check_uint("from_position", from_position),
        from_end=bool(from_end),
        checkpoint_interval=check_uint("checkpoint_interval", checkpoint_interval, 32),
        max_batch=check_uint("max_batch", max_batch, 32),
    )
    pf = filter_(f)
    if pf is not None:
        req.filter.CopyFrom(pf)
    return req


def subscription_message(r: pb.SubscribeResponse) -> Optional[SubscriptionMessage]:
    """The message of a response other than ``batch`` (whose events the caller unpacks)."""
    which = r.WhichOneof("message")
    if which == "event":
        return recorded_event(r.event)
    if which == "caught_up":
        return CaughtUp(head_position=r.caught_up.head_position)
    if which == "checkpoint":
        return Checkpoint(position=r.checkpoint.position)
    if which == "fell_behind":
        return FellBehind(head_position=r.fell_behind.head_position)
    return None  # a message kind newer than this SDK: skipped
