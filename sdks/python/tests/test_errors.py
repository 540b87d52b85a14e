"""The error classes' names: each ends in ``Error`` (PEP 8), and the earlier names without the
suffix still work, as aliases of the same classes, for code written against them."""

from __future__ import annotations

import grpc
import pytest

import eventstore_client
from eventstore_client import (
    EventStoreClient,
    EventStoreError,
    ExpectedVersion,
    WrongExpectedVersion,
    WrongExpectedVersionError,
    errors,
    json_event,
)

# Earlier name -> status code of the class.
EARLIER_NAMES = {
    "WrongExpectedVersion": grpc.StatusCode.ABORTED,
    "StreamNotFound": grpc.StatusCode.NOT_FOUND,
    "AlreadyExists": grpc.StatusCode.ALREADY_EXISTS,
    "InvalidArgument": grpc.StatusCode.INVALID_ARGUMENT,
    "StreamTypeMismatch": grpc.StatusCode.FAILED_PRECONDITION,
    "ResourceExhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "Unavailable": grpc.StatusCode.UNAVAILABLE,
    "Unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "DeadlineExceeded": grpc.StatusCode.DEADLINE_EXCEEDED,
}


def test_every_exported_exception_class_ends_in_error() -> None:
    classes = {
        name: obj
        for name in eventstore_client.__all__
        if isinstance(obj := getattr(eventstore_client, name), type) and issubclass(obj, BaseException)
    }
    assert classes, "no exception classes exported"
    for name, cls in classes.items():
        assert cls.__name__.endswith("Error"), f"{cls.__name__} lacks the Error suffix"
        assert name == cls.__name__ or name in EARLIER_NAMES, f"{name} is an unexpected alias"


@pytest.mark.parametrize("earlier", sorted(EARLIER_NAMES))
def test_the_earlier_name_is_the_same_class(earlier: str) -> None:
    new = getattr(eventstore_client, earlier + "Error")
    assert new.__name__ == earlier + "Error"
    assert issubclass(new, EventStoreError)
    assert getattr(eventstore_client, earlier) is new
    assert getattr(errors, earlier) is new
    assert earlier in eventstore_client.__all__ and earlier + "Error" in eventstore_client.__all__


@pytest.mark.parametrize("earlier, code", sorted(EARLIER_NAMES.items(), key=lambda kv: kv[0]))
def test_a_status_maps_to_the_error_class(earlier: str, code: grpc.StatusCode) -> None:
    class Failed(grpc.RpcError):
        def code(self) -> grpc.StatusCode:
            return code

        def details(self) -> str:
            return "why"

    err = errors.from_rpc_error(Failed())
    assert type(err).__name__ == earlier + "Error"
    assert isinstance(err, getattr(eventstore_client, earlier))
    assert err.code == code and err.details == "why"


def test_except_clauses_with_either_name_catch_the_real_error(
    client: EventStoreClient, stream: str
) -> None:
    client.append(stream, [json_event("A", {})])
    for catch in (WrongExpectedVersionError, WrongExpectedVersion):
        try:
            client.append(stream, [json_event("B", {})], expected=ExpectedVersion.no_stream())
        except catch as e:
            assert type(e) is WrongExpectedVersionError and e.actual == 1
        else:
            pytest.fail(f"no {catch.__name__} raised")
