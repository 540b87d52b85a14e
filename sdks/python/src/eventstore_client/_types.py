"""The SDK's value types: what you append, what you read, what a subscription yields."""

from __future__ import annotations

import datetime as _dt
import enum
import json as _json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Iterator, Literal, Mapping, Optional, Sequence, Union

__all__ = [
    "AllPage",
    "AppendCondition",
    "AppendResult",
    "CaughtUp",
    "Checkpoint",
    "Direction",
    "EventData",
    "ExpectedVersion",
    "FellBehind",
    "Filter",
    "Query",
    "QueryItem",
    "RecordedEvent",
    "StreamAppend",
    "StreamPage",
    "SubscriptionMessage",
    "json_event",
]

JSON_CONTENT_TYPE = "application/json"


class Direction(str, enum.Enum):
    """Reading direction of a page or an iterator."""

    FORWARD = "forward"
    """Increasing stream versions or global positions."""
    BACKWARD = "backward"
    """Decreasing stream versions or global positions."""


@dataclass(frozen=True)
class ExpectedVersion:
    """The optimistic-concurrency check of an append.

    Build one with :meth:`any`, :meth:`no_stream`, :meth:`stream_exists` or :meth:`exact`.
    """

    kind: Literal["any", "no_stream", "stream_exists", "exact"]
    version: int = 0
    """The stream's expected last version; meaningful only for ``kind == "exact"``."""

    def __post_init__(self) -> None:
        if self.kind not in ("any", "no_stream", "stream_exists", "exact"):
            raise ValueError(f"unknown expected-version kind {self.kind!r}")
        if not isinstance(self.version, int) or self.version < 0:
            raise ValueError(f"expected version must be an int >= 0, got {self.version!r}")

    @classmethod
    def any(cls) -> ExpectedVersion:
        """Always passes."""
        return cls("any")

    @classmethod
    def no_stream(cls) -> ExpectedVersion:
        """Passes when the stream has no events."""
        return cls("no_stream")

    @classmethod
    def stream_exists(cls) -> ExpectedVersion:
        """Passes when the stream has at least one event."""
        return cls("stream_exists")

    @classmethod
    def exact(cls, version: int) -> ExpectedVersion:
        """Passes when the stream's last version is ``version`` (0 means: no stream)."""
        return cls("exact", version)

    def __str__(self) -> str:
        return f"exact {self.version}" if self.kind == "exact" else self.kind


@dataclass(frozen=True)
class EventData:
    """An event to append.

    ``event_id`` empty means: the server assigns a UUIDv7. Give your own lowercase UUID to
    make a retried append idempotent (the same batch of ids is acknowledged with
    ``duplicate=True`` instead of being written twice).
    """

    event_type: str
    payload: bytes = b""
    content_type: str = ""
    """MIME type of ``payload``; empty means ``application/octet-stream``."""
    event_id: str = ""
    event_version: int = 0
    """Schema version of ``event_type``."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    correlation_id: str = ""
    causation_id: str = ""
    occurred_at_unix_ms: int = 0
    """When it happened by the client's clock (Unix milliseconds); 0 = not given."""
    tags: Sequence[str] = ()
    """What the event is about, for queries and append conditions (e.g. ``"course:c1"``);
    up to 32, each 1..256 bytes, no two alike. Kept as a tuple, in the given order."""

    def __post_init__(self) -> None:
        if isinstance(self.payload, (bytearray, memoryview)):
            object.__setattr__(self, "payload", bytes(self.payload))
        elif not isinstance(self.payload, bytes):
            raise TypeError(
                "payload must be bytes; use json_event() for JSON or encode text yourself"
            )
        object.__setattr__(self, "tags", _names("tags", self.tags))

    def json(self) -> Any:
        """The payload decoded as JSON."""
        return _json.loads(self.payload)


def json_event(
    event_type: str,
    data: Any,
    *,
    event_id: str = "",
    event_version: int = 0,
    metadata: Mapping[str, str] | None = None,
    correlation_id: str = "",
    causation_id: str = "",
    occurred_at: _dt.datetime | int | None = None,
    tags: Sequence[str] = (),
) -> EventData:
    """An :class:`EventData` whose payload is ``data`` encoded as compact UTF-8 JSON, with
    content type ``application/json``.

    ``occurred_at`` is a timezone-aware datetime or Unix milliseconds.
    """
    payload = _json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if occurred_at is None:
        occurred_ms = 0
    elif isinstance(occurred_at, _dt.datetime):
        occurred_ms = int(occurred_at.timestamp() * 1000)
    else:
        occurred_ms = int(occurred_at)
    return EventData(
        event_type=event_type,
        payload=payload,
        content_type=JSON_CONTENT_TYPE,
        event_id=event_id,
        event_version=event_version,
        metadata=dict(metadata or {}),
        correlation_id=correlation_id,
        causation_id=causation_id,
        occurred_at_unix_ms=occurred_ms,
        tags=tags,
    )


def _from_unix_ms(ms: int) -> _dt.datetime | None:
    if ms == 0:
        return None
    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.timezone.utc)


@dataclass(frozen=True)
class RecordedEvent:
    """An event as the store returns it."""

    kind: ClassVar[Literal["event"]] = "event"

    stream_id: str
    stream_type: str
    stream_version: int
    """1-based index of the event in its stream."""
    global_position: int
    """1-based index of the event in the store-wide log (gap-free, commit order)."""
    event_id: str
    event_type: str
    event_version: int
    content_type: str
    payload: bytes
    metadata: Mapping[str, str]
    correlation_id: str
    causation_id: str
    occurred_at_unix_ms: int
    recorded_at_unix_ms: int
    tags: Sequence[str] = ()
    """The event's tags as appended, in the same order (a tuple)."""

    def json(self) -> Any:
        """The payload decoded as JSON (whatever the content type says)."""
        return _json.loads(self.payload)

    @property
    def occurred_at(self) -> _dt.datetime | None:
        """``occurred_at_unix_ms`` as a UTC datetime, or None when not given."""
        return _from_unix_ms(self.occurred_at_unix_ms)

    @property
    def recorded_at(self) -> _dt.datetime:
        """The server's commit time as a UTC datetime."""
        return _dt.datetime.fromtimestamp(self.recorded_at_unix_ms / 1000, tz=_dt.timezone.utc)


@dataclass(frozen=True)
class AppendResult:
    """Where an append put its events."""

    first_stream_version: int
    last_stream_version: int
    first_global_position: int
    last_global_position: int
    recorded_at_unix_ms: int
    duplicate: bool
    """True when this exact batch had already been committed: nothing was written and the
    original versions and positions are returned."""

    @property
    def next_expected_version(self) -> ExpectedVersion:
        """``ExpectedVersion.exact(last_stream_version)``: for the next append to this stream."""
        return ExpectedVersion.exact(self.last_stream_version)


@dataclass(frozen=True)
class StreamPage:
    """One page of a stream."""

    events: list[RecordedEvent]
    next_version: int
    """Pass as ``from_version`` to read the next page."""
    is_end: bool
    """No more events in this direction."""
    stream_version: int
    """The stream's last version when read."""


@dataclass(frozen=True)
class Filter:
    """Selects events of the global log; both parts given: both must match."""

    stream_prefix: str = ""
    """Only streams whose id starts with this; empty = all streams."""
    event_types: Sequence[str] = ()
    """Only these event types (exact names); empty = all types."""
    items: Union["Query", Sequence["QueryItem"]] = ()
    """A query (a :class:`Query` or a list of :class:`QueryItem`): only events that one of
    the items matches; empty = no query. Kept as a tuple of items."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_types", _names("event_types", self.event_types))
        object.__setattr__(self, "items", _items("items", self.items))


def _names(what: str, values: Iterable[str]) -> tuple[str, ...]:
    """``values`` as a tuple of strings; one string alone is a mistake, not a list of letters."""
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{what} must be a sequence of strings, not one string")
    out = tuple(values)
    for v in out:
        if not isinstance(v, str):
            raise TypeError(f"{what} must hold strings, got {type(v).__name__}")
    return out


def _items(what: str, items: Union["Query", Iterable["QueryItem"]]) -> tuple["QueryItem", ...]:
    out = tuple(items.items if isinstance(items, Query) else items)
    for i in out:
        if not isinstance(i, QueryItem):
            raise TypeError(f"{what} must hold QueryItem, got {type(i).__name__}")
    return out


@dataclass(frozen=True)
class QueryItem:
    """One item of a query: matches an event whose type is one of ``event_types`` (or the
    list is empty) and which carries every one of ``tags`` (or the list is empty). An item
    with both lists empty matches every event. Strings are matched exactly as given."""

    event_types: Sequence[str] = ()
    tags: Sequence[str] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_types", _names("event_types", self.event_types))
        object.__setattr__(self, "tags", _names("tags", self.tags))


@dataclass(frozen=True)
class Query:
    """Selects events by type and tag: an event matches when any of the items does (OR).

    Build one item by item::

        Query.of(event_types=["StudentEnrolled"], tags=["course:c1"]).or_(tags=["student:s7"])

    Use it as ``Filter(items=query)`` for reads and subscriptions, and in an
    :class:`AppendCondition`. The server allows up to 16 items, each with up to 32 types and
    32 tags.
    """

    items: Sequence[QueryItem] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", _items("items", self.items))

    @classmethod
    def of(cls, event_types: Sequence[str] = (), tags: Sequence[str] = ()) -> Query:
        """A query of one item."""
        return cls((QueryItem(event_types, tags),))

    def or_(self, event_types: Sequence[str] = (), tags: Sequence[str] = ()) -> Query:
        """This query with one more item, OR'ed with the others (a new Query)."""
        return Query((*self.items, QueryItem(event_types, tags)))

    def __iter__(self) -> Iterator[QueryItem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class AppendCondition:
    """Makes an append fail if an event matching ``fail_if_events_match`` was committed at a
    global position above ``after`` (0: anywhere in the log); checked atomically with the
    commit. ``after`` is normally the ``head_position`` of the read your decision was based
    on. A failed condition raises :class:`~eventstore_client.AppendConditionFailedError`."""

    fail_if_events_match: Union[Query, Sequence[QueryItem]]
    """1..16 query items (required)."""
    after: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "fail_if_events_match",
            _items("fail_if_events_match", self.fail_if_events_match),
        )
        if isinstance(self.after, bool) or not isinstance(self.after, int) or self.after < 0:
            raise ValueError(f"after must be an int >= 0, got {self.after!r}")


@dataclass(frozen=True)
class StreamAppend:
    """One append of :meth:`~eventstore_client.EventStoreClient.append_many`: ``events`` to
    ``stream`` if ``expected`` holds (as the earlier appends of the same request leave the
    stream)."""

    stream: str
    events: Union[EventData, Sequence[EventData]]
    expected: ExpectedVersion = ExpectedVersion("any")
    stream_type: Optional[str] = None

    def __post_init__(self) -> None:
        if isinstance(self.events, EventData):
            object.__setattr__(self, "events", (self.events,))
        else:
            object.__setattr__(self, "events", tuple(self.events))
        if not isinstance(self.expected, ExpectedVersion):
            raise TypeError("expected must be an ExpectedVersion (e.g. ExpectedVersion.exact(3))")


@dataclass(frozen=True)
class AllPage:
    """One page of the global log."""

    events: list[RecordedEvent]
    next_position: int
    """Pass as ``from_position`` to read the next page."""
    is_end: bool
    """No more events in this direction. A filtered page may be empty with ``is_end``
    false: the server bounded its scan; continue from ``next_position``."""
    head_position: int
    """The last committed global position when read."""


@dataclass(frozen=True)
class CaughtUp:
    """The subscription's replay reached the head; live events follow."""

    kind: ClassVar[Literal["caught_up"]] = "caught_up"
    head_position: int


@dataclass(frozen=True)
class Checkpoint:
    """Everything at or below ``position`` has been scanned (filtered subscriptions): a
    resume point for a consumer that stores its progress."""

    kind: ClassVar[Literal["checkpoint"]] = "checkpoint"
    position: int


@dataclass(frozen=True)
class FellBehind:
    """The subscriber was too slow for the live path and is served from storage again; a
    :class:`CaughtUp` follows. Nothing is skipped."""

    kind: ClassVar[Literal["fell_behind"]] = "fell_behind"
    head_position: int


SubscriptionMessage = Union[RecordedEvent, CaughtUp, Checkpoint, FellBehind]
"""What a subscription yields; tell them apart with ``isinstance``, ``match`` or ``.kind``."""
