"""Python client for the eventstore server (gRPC API ``eventstore.v1``).

>>> from eventstore_client import EventStoreClient, ExpectedVersion, json_event
>>> with EventStoreClient("127.0.0.1:50051") as client:          # doctest: +SKIP
...     client.append("order-42", [json_event("OrderPlaced", {"total": 42})],
...                   expected=ExpectedVersion.no_stream())
"""

import logging as _logging

from ._common import VERSION as __version__
from ._common import DEFAULT_MAX_BATCH, ReconnectPolicy
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
    Query,
    QueryItem,
    RecordedEvent,
    StreamAppend,
    StreamPage,
    SubscriptionMessage,
    json_event,
)
from .aio import AsyncEventStoreClient, AsyncSubscription
from .client import EventStoreClient, Subscription
from .errors import (
    AlreadyExists,
    AlreadyExistsError,
    AppendConditionFailedError,
    DeadlineExceeded,
    DeadlineExceededError,
    EventStoreError,
    InvalidArgument,
    InvalidArgumentError,
    ResourceExhausted,
    ResourceExhaustedError,
    StreamNotFound,
    StreamNotFoundError,
    StreamTypeMismatch,
    StreamTypeMismatchError,
    Unauthenticated,
    UnauthenticatedError,
    Unavailable,
    UnavailableError,
    UnimplementedError,
    WrongExpectedVersion,
    WrongExpectedVersionError,
)

# Reconnects are logged as warnings on this logger; configure logging to see them.
_logging.getLogger("eventstore_client").addHandler(_logging.NullHandler())

__all__ = [
    "DEFAULT_MAX_BATCH",
    "AllPage",
    "AlreadyExists",
    "AlreadyExistsError",
    "AppendCondition",
    "AppendConditionFailedError",
    "AppendResult",
    "AsyncEventStoreClient",
    "AsyncSubscription",
    "CaughtUp",
    "Checkpoint",
    "DeadlineExceeded",
    "DeadlineExceededError",
    "Direction",
    "EventData",
    "EventStoreClient",
    "EventStoreError",
    "ExpectedVersion",
    "FellBehind",
    "Filter",
    "InvalidArgument",
    "InvalidArgumentError",
    "Query",
    "QueryItem",
    "ReconnectPolicy",
    "RecordedEvent",
    "ResourceExhausted",
    "ResourceExhaustedError",
    "StreamAppend",
    "StreamNotFound",
    "StreamNotFoundError",
    "StreamPage",
    "StreamTypeMismatch",
    "StreamTypeMismatchError",
    "Subscription",
    "SubscriptionMessage",
    "Unauthenticated",
    "UnauthenticatedError",
    "Unavailable",
    "UnavailableError",
    "UnimplementedError",
    "WrongExpectedVersion",
    "WrongExpectedVersionError",
    "__version__",
    "json_event",
]
