"""Typed errors. Every error raised for a failed call is an :class:`EventStoreError`
carrying the gRPC status code; match on the class (or ``code``), not on the message.

The classes end in ``Error`` (PEP 8). Their earlier names (``WrongExpectedVersion``,
``StreamNotFound``, ...) remain as aliases of the same classes, so ``except`` clauses written
against them keep working; new code should use the ``Error`` names."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import grpc

from ._types import ExpectedVersion

__all__ = [
    "AlreadyExists",
    "AlreadyExistsError",
    "AppendConditionFailedError",
    "DeadlineExceeded",
    "DeadlineExceededError",
    "EventStoreError",
    "InvalidArgument",
    "InvalidArgumentError",
    "ResourceExhausted",
    "ResourceExhaustedError",
    "StreamNotFound",
    "StreamNotFoundError",
    "StreamTypeMismatch",
    "StreamTypeMismatchError",
    "Unauthenticated",
    "UnauthenticatedError",
    "Unavailable",
    "UnavailableError",
    "UnimplementedError",
    "WrongExpectedVersion",
    "WrongExpectedVersionError",
]

ACTUAL_VERSION_TRAILER = "es-actual-version"
CONDITION_POSITION_TRAILER = "es-condition-position"
APPEND_INDEX_TRAILER = "es-append-index"


class EventStoreError(Exception):
    """A call to the event store failed.

    ``code`` is the gRPC status code, ``details`` the server's message (written for humans).
    ``append_index`` names the append at fault in a failed ``append_many`` (0-based, from the
    trailing metadata ``es-append-index``); None when no single append is (or for other calls).
    """

    code: grpc.StatusCode
    append_index: Optional[int] = None

    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        self.code = code
        self.details = details
        super().__init__(f"{code.name}: {details}" if details else code.name)


class WrongExpectedVersionError(EventStoreError):
    """ABORTED: the append's expected-version check failed; nothing was written.

    ``actual`` is the stream's current last version (0 = no events), from the trailing
    metadata ``es-actual-version``; None if the server did not send it.
    """

    def __init__(
        self,
        details: str = "",
        *,
        stream: str = "",
        expected: Optional[ExpectedVersion] = None,
        actual: Optional[int] = None,
    ) -> None:
        super().__init__(grpc.StatusCode.ABORTED, details)
        self.stream = stream
        self.expected = expected
        self.actual = actual


class AppendConditionFailedError(EventStoreError):
    """ABORTED: an event matching the append's condition was committed after its ``after``
    position; nothing was written. Read again (from ``after + 1``), decide again, retry.

    ``position`` is the global position of the first matching event after ``after``, from the
    trailing metadata ``es-condition-position``.
    """

    def __init__(self, details: str = "", *, position: int = 0) -> None:
        super().__init__(grpc.StatusCode.ABORTED, details)
        self.position = position


class UnimplementedError(EventStoreError):
    """UNIMPLEMENTED: the server (or its storage backend) does not offer what the call needs,
    e.g. ``append_many`` or a conditional append on a server without tags and conditions.
    Nothing was written."""

    def __init__(self, details: str = "") -> None:
        super().__init__(grpc.StatusCode.UNIMPLEMENTED, details)


class StreamNotFoundError(EventStoreError):
    """NOT_FOUND: the stream has no events."""

    def __init__(self, details: str = "", *, stream: str = "") -> None:
        super().__init__(grpc.StatusCode.NOT_FOUND, details)
        self.stream = stream


class AlreadyExistsError(EventStoreError):
    """ALREADY_EXISTS: an event id that is already stored was reused outside an exact retry."""

    def __init__(self, details: str = "") -> None:
        super().__init__(grpc.StatusCode.ALREADY_EXISTS, details)


class InvalidArgumentError(EventStoreError):
    """INVALID_ARGUMENT: the request broke a rule or a limit; the message names the field."""

    def __init__(self, details: str = "") -> None:
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, details)


class StreamTypeMismatchError(EventStoreError):
    """FAILED_PRECONDITION: the append's stream_type differs from the stream's."""

    def __init__(self, details: str = "") -> None:
        super().__init__(grpc.StatusCode.FAILED_PRECONDITION, details)


class ResourceExhaustedError(EventStoreError):
    """RESOURCE_EXHAUSTED: the request or an event is larger than the server's limit."""

    def __init__(self, details: str = "") -> None:
        super().__init__(grpc.StatusCode.RESOURCE_EXHAUSTED, details)


class UnavailableError(EventStoreError):
    """UNAVAILABLE: the server cannot be reached or is shutting down; retry with backoff
    (appends with your own event ids are safe to retry)."""

    def __init__(self, details: str = "") -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, details)


class UnauthenticatedError(EventStoreError):
    """UNAUTHENTICATED: missing or wrong credentials."""

    def __init__(self, details: str = "") -> None:
        super().__init__(grpc.StatusCode.UNAUTHENTICATED, details)


class DeadlineExceededError(EventStoreError):
    """DEADLINE_EXCEEDED: the call did not finish within its timeout. An append may or may
    not have been committed: retry it with the same event ids."""

    def __init__(self, details: str = "") -> None:
        super().__init__(grpc.StatusCode.DEADLINE_EXCEEDED, details)



# The earlier names, kept as aliases: the same class objects, so isinstance checks and
# except clauses written with either name match the same errors.
WrongExpectedVersion = WrongExpectedVersionError
StreamNotFound = StreamNotFoundError
AlreadyExists = AlreadyExistsError
InvalidArgument = InvalidArgumentError
StreamTypeMismatch = StreamTypeMismatchError
ResourceExhausted = ResourceExhaustedError
Unavailable = UnavailableError
Unauthenticated = UnauthenticatedError
DeadlineExceeded = DeadlineExceededError


def _trailer(err: grpc.RpcError, key: str) -> Optional[str]:
    trailing = getattr(err, "trailing_metadata", None)
    items = trailing() if callable(trailing) else None
    for k, v in items or ():
        if k == key:
            return v.decode("ascii", "replace") if isinstance(v, bytes) else str(v)
    return None


def _int_trailer(err: grpc.RpcError, key: str) -> Optional[int]:
    raw = _trailer(err, key)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def from_append_many_error(
    err: grpc.RpcError, appends: Sequence[Tuple[str, ExpectedVersion]]
) -> EventStoreError:
    """The typed error for a failed AppendMany of ``appends`` ((stream, expected) each):
    ``append_index`` from ``es-append-index``, and the stream and expected version of that
    append on a :class:`WrongExpectedVersionError` or :class:`StreamNotFoundError`."""
    index = _int_trailer(err, APPEND_INDEX_TRAILER)
    stream, expected = "", None
    if index is not None and 0 <= index < len(appends):
        stream, expected = appends[index]
    e = from_rpc_error(err, stream=stream, expected=expected)
    e.append_index = index
    return e


def from_rpc_error(
    err: grpc.RpcError,
    *,
    stream: str = "",
    expected: Optional[ExpectedVersion] = None,
) -> EventStoreError:
    """The typed error for a failed gRPC call."""
    code_fn = getattr(err, "code", None)
    details_fn = getattr(err, "details", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details = (details_fn() if callable(details_fn) else None) or ""
    if code is None:
        code = grpc.StatusCode.UNKNOWN
    if code == grpc.StatusCode.ABORTED:
        position = _int_trailer(err, CONDITION_POSITION_TRAILER)
        if position is not None:
            return AppendConditionFailedError(details, position=position)
        actual = _int_trailer(err, ACTUAL_VERSION_TRAILER)
        return WrongExpectedVersionError(details, stream=stream, expected=expected, actual=actual)
    if code == grpc.StatusCode.NOT_FOUND:
        return StreamNotFoundError(details, stream=stream)
    simple = {
        grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
        grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
        grpc.StatusCode.FAILED_PRECONDITION: StreamTypeMismatchError,
        grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
        grpc.StatusCode.UNAVAILABLE: UnavailableError,
        grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
        grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
        grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    }
    cls = simple.get(code)
    if cls is not None:
        return cls(details)
    return EventStoreError(code, details)
