from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExpectedVersionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPECTED_ANY: _ClassVar[ExpectedVersionKind]
    EXPECTED_NO_STREAM: _ClassVar[ExpectedVersionKind]
    EXPECTED_STREAM_EXISTS: _ClassVar[ExpectedVersionKind]
    EXPECTED_EXACT: _ClassVar[ExpectedVersionKind]

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FORWARD: _ClassVar[Direction]
    BACKWARD: _ClassVar[Direction]
EXPECTED_ANY: ExpectedVersionKind
EXPECTED_NO_STREAM: ExpectedVersionKind
EXPECTED_STREAM_EXISTS: ExpectedVersionKind
EXPECTED_EXACT: ExpectedVersionKind
FORWARD: Direction
BACKWARD: Direction

class EventData(_message.Message):
    __slots__ = ("event_id", "event_type", "event_version", "content_type", "payload", "metadata", "correlation_id", "causation_id", "occurred_at_unix_ms", "tags")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    CAUSATION_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_type: str
    event_version: int
    content_type: str
    payload: bytes
    metadata: _containers.ScalarMap[str, str]
    correlation_id: str
    causation_id: str
    occurred_at_unix_ms: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., event_version: _Optional[int] = ..., content_type: _Optional[str] = ..., payload: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ..., correlation_id: _Optional[str] = ..., causation_id: _Optional[str] = ..., occurred_at_unix_ms: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class RecordedEvent(_message.Message):
    __slots__ = ("stream_id", "stream_type", "stream_version", "global_position", "event_id", "event_type", "event_version", "content_type", "payload", "metadata", "correlation_id", "causation_id", "occurred_at_unix_ms", "recorded_at_unix_ms", "tags")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_TYPE_FIELD_NUMBER: _ClassVar[int]
    STREAM_VERSION_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_POSITION_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    CAUSATION_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    stream_type: str
    stream_version: int
    global_position: int
    event_id: str
    event_type: str
    event_version: int
    content_type: str
    payload: bytes
    metadata: _containers.ScalarMap[str, str]
    correlation_id: str
    causation_id: str
    occurred_at_unix_ms: int
    recorded_at_unix_ms: int
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, stream_id: _Optional[str] = ..., stream_type: _Optional[str] = ..., stream_version: _Optional[int] = ..., global_position: _Optional[int] = ..., event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., event_version: _Optional[int] = ..., content_type: _Optional[str] = ..., payload: _Optional[bytes] = ..., metadata: _Optional[_Mapping[str, str]] = ..., correlation_id: _Optional[str] = ..., causation_id: _Optional[str] = ..., occurred_at_unix_ms: _Optional[int] = ..., recorded_at_unix_ms: _Optional[int] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class AppendRequest(_message.Message):
    __slots__ = ("stream_id", "stream_type", "expected_kind", "expected_version", "events", "condition")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_TYPE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_KIND_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    stream_type: str
    expected_kind: ExpectedVersionKind
    expected_version: int
    events: _containers.RepeatedCompositeFieldContainer[EventData]
    condition: AppendCondition
    def __init__(self, stream_id: _Optional[str] = ..., stream_type: _Optional[str] = ..., expected_kind: _Optional[_Union[ExpectedVersionKind, str]] = ..., expected_version: _Optional[int] = ..., events: _Optional[_Iterable[_Union[EventData, _Mapping]]] = ..., condition: _Optional[_Union[AppendCondition, _Mapping]] = ...) -> None: ...

class QueryItem(_message.Message):
    __slots__ = ("event_types", "tags")
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    event_types: _containers.RepeatedScalarFieldContainer[str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, event_types: _Optional[_Iterable[str]] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class AppendCondition(_message.Message):
    __slots__ = ("fail_if_events_match", "after")
    FAIL_IF_EVENTS_MATCH_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    fail_if_events_match: _containers.RepeatedCompositeFieldContainer[QueryItem]
    after: int
    def __init__(self, fail_if_events_match: _Optional[_Iterable[_Union[QueryItem, _Mapping]]] = ..., after: _Optional[int] = ...) -> None: ...

class AppendManyRequest(_message.Message):
    __slots__ = ("appends", "condition")
    APPENDS_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    appends: _containers.RepeatedCompositeFieldContainer[AppendRequest]
    condition: AppendCondition
    def __init__(self, appends: _Optional[_Iterable[_Union[AppendRequest, _Mapping]]] = ..., condition: _Optional[_Union[AppendCondition, _Mapping]] = ...) -> None: ...

class AppendManyResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AppendResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[AppendResponse, _Mapping]]] = ...) -> None: ...

class AppendResponse(_message.Message):
    __slots__ = ("first_stream_version", "last_stream_version", "first_global_position", "last_global_position", "recorded_at_unix_ms", "duplicate")
    FIRST_STREAM_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_STREAM_VERSION_FIELD_NUMBER: _ClassVar[int]
    FIRST_GLOBAL_POSITION_FIELD_NUMBER: _ClassVar[int]
    LAST_GLOBAL_POSITION_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    first_stream_version: int
    last_stream_version: int
    first_global_position: int
    last_global_position: int
    recorded_at_unix_ms: int
    duplicate: bool
    def __init__(self, first_stream_version: _Optional[int] = ..., last_stream_version: _Optional[int] = ..., first_global_position: _Optional[int] = ..., last_global_position: _Optional[int] = ..., recorded_at_unix_ms: _Optional[int] = ..., duplicate: bool = ...) -> None: ...

class ReadStreamRequest(_message.Message):
    __slots__ = ("stream_id", "from_version", "max_count", "direction")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    from_version: int
    max_count: int
    direction: Direction
    def __init__(self, stream_id: _Optional[str] = ..., from_version: _Optional[int] = ..., max_count: _Optional[int] = ..., direction: _Optional[_Union[Direction, str]] = ...) -> None: ...

class ReadStreamResponse(_message.Message):
    __slots__ = ("events", "next_version", "is_end", "stream_version")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_VERSION_FIELD_NUMBER: _ClassVar[int]
    IS_END_FIELD_NUMBER: _ClassVar[int]
    STREAM_VERSION_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[RecordedEvent]
    next_version: int
    is_end: bool
    stream_version: int
    def __init__(self, events: _Optional[_Iterable[_Union[RecordedEvent, _Mapping]]] = ..., next_version: _Optional[int] = ..., is_end: bool = ..., stream_version: _Optional[int] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("stream_prefix", "event_types", "items")
    STREAM_PREFIX_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    stream_prefix: str
    event_types: _containers.RepeatedScalarFieldContainer[str]
    items: _containers.RepeatedCompositeFieldContainer[QueryItem]
    def __init__(self, stream_prefix: _Optional[str] = ..., event_types: _Optional[_Iterable[str]] = ..., items: _Optional[_Iterable[_Union[QueryItem, _Mapping]]] = ...) -> None: ...

class ReadAllRequest(_message.Message):
    __slots__ = ("from_position", "max_count", "direction", "filter")
    FROM_POSITION_FIELD_NUMBER: _ClassVar[int]
    MAX_COUNT_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    from_position: int
    max_count: int
    direction: Direction
    filter: Filter
    def __init__(self, from_position: _Optional[int] = ..., max_count: _Optional[int] = ..., direction: _Optional[_Union[Direction, str]] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ...) -> None: ...

class ReadAllResponse(_message.Message):
    __slots__ = ("events", "next_position", "is_end", "head_position")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_POSITION_FIELD_NUMBER: _ClassVar[int]
    IS_END_FIELD_NUMBER: _ClassVar[int]
    HEAD_POSITION_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[RecordedEvent]
    next_position: int
    is_end: bool
    head_position: int
    def __init__(self, events: _Optional[_Iterable[_Union[RecordedEvent, _Mapping]]] = ..., next_position: _Optional[int] = ..., is_end: bool = ..., head_position: _Optional[int] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("from_position", "filter", "from_end", "checkpoint_interval", "max_batch")
    FROM_POSITION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    FROM_END_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    from_position: int
    filter: Filter
    from_end: bool
    checkpoint_interval: int
    max_batch: int
    def __init__(self, from_position: _Optional[int] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., from_end: bool = ..., checkpoint_interval: _Optional[int] = ..., max_batch: _Optional[int] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[RecordedEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[RecordedEvent, _Mapping]]] = ...) -> None: ...

class CaughtUp(_message.Message):
    __slots__ = ("head_position",)
    HEAD_POSITION_FIELD_NUMBER: _ClassVar[int]
    head_position: int
    def __init__(self, head_position: _Optional[int] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("position",)
    POSITION_FIELD_NUMBER: _ClassVar[int]
    position: int
    def __init__(self, position: _Optional[int] = ...) -> None: ...

class FellBehind(_message.Message):
    __slots__ = ("head_position",)
    HEAD_POSITION_FIELD_NUMBER: _ClassVar[int]
    head_position: int
    def __init__(self, head_position: _Optional[int] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("event", "caught_up", "checkpoint", "fell_behind", "batch")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    FELL_BEHIND_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    event: RecordedEvent
    caught_up: CaughtUp
    checkpoint: Checkpoint
    fell_behind: FellBehind
    batch: EventBatch
    def __init__(self, event: _Optional[_Union[RecordedEvent, _Mapping]] = ..., caught_up: _Optional[_Union[CaughtUp, _Mapping]] = ..., checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., fell_behind: _Optional[_Union[FellBehind, _Mapping]] = ..., batch: _Optional[_Union[EventBatch, _Mapping]] = ...) -> None: ...
