"""Python client for the eventstore server (gRPC API ``eventstore.v1``).

>>> from eventstore_client import EventStoreClient, ExpectedVersion, json_event
>>> with EventStoreClient("127.0.0.1:50051") as client:          # doctest: +SKIP
...     client.append("order-42", [json_event("OrderPlaced", {"total": 42})],
...                   expected=ExpectedVersion.no_stream())
"""

import logging as _logging

from ._common import VERSION as __version__
from ._common import ReconnectPolicy
from ._types import (
    AllPage,
    AppendResult,
    CaughtUp,
    Checkpoint,
    Direction,
    EventData,
    ExpectedVersion,
    FellBehind,
    Filter,
    RecordedEvent,
    StreamPage,
    SubscriptionMessage,
    json_event,
)
from .aio import AsyncEventStoreClient, AsyncSubscription
from .client import EventStoreClient, Subscription
from .errors import (
    AlreadyExists,
    DeadlineExceeded,
    EventStoreError,
    InvalidArgument,
    ResourceExhausted,
    StreamNotFound,
    StreamTypeMismatch,
    Unauthenticated,
    Unavailable,
    WrongExpectedVersion,
)

# Reconnects are logged as warnings on this logger; configure logging to see them.
_logging.getLogger("eventstore_client").addHandler(_logging.NullHandler())

__all__ = [
    "AllPage",
    "AlreadyExists",
    "AppendResult",
    "AsyncEventStoreClient",
    "AsyncSubscription",
    "CaughtUp",
    "Checkpoint",
    "DeadlineExceeded",
    "Direction",
    "EventData",
    "EventStoreClient",
    "EventStoreError",
    "ExpectedVersion",
    "FellBehind",
    "Filter",
    "InvalidArgument",
    "ReconnectPolicy",
    "RecordedEvent",
    "ResourceExhausted",
    "StreamNotFound",
    "StreamPage",
    "StreamTypeMismatch",
    "Subscription",
    "SubscriptionMessage",
    "Unauthenticated",
    "Unavailable",
    "WrongExpectedVersion",
    "__version__",
    "json_event",
]
