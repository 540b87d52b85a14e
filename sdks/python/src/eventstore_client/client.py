"""The synchronous client."""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any, Iterable, Iterator, List, Optional, Type, Union

import grpc

from . import _convert
from ._common import (
    DEFAULT_MAX_BATCH,
    ChannelOptions,
    ConnectionSettings,
    PemSource,
    ReconnectPolicy,
    ResumeCursor,
)
from ._gen import eventstore_pb2_grpc as pb_grpc
from ._types import (
    AllPage,
    AppendCondition,
    AppendResult,
    Direction,
    EventData,
    ExpectedVersion,
    Filter,
    RecordedEvent,
    StreamAppend,
    StreamPage,
    SubscriptionMessage,
)
from .errors import EventStoreError, UnavailableError, from_append_many_error, from_rpc_error

__all__ = ["EventStoreClient", "Subscription"]

log = logging.getLogger("eventstore_client")


class EventStoreClient:
    """A connection to an event store server (thread-safe; use it as a context manager).

    ``address`` is ``host:port``. The connection is plaintext unless ``tls`` is true or a
    ``ca_cert`` is given (PEM bytes, PEM text or a file path; without one, TLS uses the
    system's roots). ``client_cert``/``client_key`` add a client certificate. ``token`` is
    sent as ``authorization: Bearer <token>`` on every call. ``timeout`` is the default
    deadline of every unary call in seconds (None: none); subscriptions have no deadline.
    ``reconnect`` is the default :class:`ReconnectPolicy` of subscriptions.
    ``channel_options`` are extra gRPC channel arguments.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        tls: Optional[bool] = None,
        ca_cert: Optional[PemSource] = None,
        client_cert: Optional[PemSource] = None,
        client_key: Optional[PemSource] = None,
        token: Optional[str] = None,
        timeout: Optional[float] = 10.0,
        reconnect: ReconnectPolicy = ReconnectPolicy(),
        channel_options: Optional[ChannelOptions] = None,
    ) -> None:
        self._settings = ConnectionSettings.create(
            address,
            tls=tls,
            ca_cert=ca_cert,
            client_cert=client_cert,
            client_key=client_key,
            token=token,
            timeout=timeout,
            channel_options=channel_options,
        )
        self._reconnect = reconnect
        s = self._settings
        if s.credentials is None:
            self._channel = grpc.insecure_channel(s.address, options=s.options)
        else:
            self._channel = grpc.secure_channel(s.address, s.credentials, options=s.options)
        self._stub = pb_grpc.EventStoreStub(self._channel)
        self._subscriptions: "set[Subscription]" = set()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def address(self) -> str:
        return self._settings.address

    def __enter__(self) -> "EventStoreClient":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def close(self) -> None:
        """Ends open subscriptions and closes the connection."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            subs = list(self._subscriptions)
        for sub in subs:
            sub.close()
        self._channel.close()

    def _unary(self, method: Any, request: Any, timeout: Optional[float], **ctx: Any) -> Any:
        try:
            return method(
                request,
                timeout=self._settings.call_timeout(timeout),
                metadata=self._settings.metadata,
            )
        except grpc.RpcError as e:
            raise from_rpc_error(e, **ctx) from None

    # -- Append ----------------------------------------------------------------------------

    def append(
        self,
        stream: str,
        events: Union[EventData, Iterable[EventData]],
        expected: ExpectedVersion = ExpectedVersion.any(),
        stream_type: Optional[str] = None,
        *,
        condition: Optional[AppendCondition] = None,
        timeout: Optional[float] = None,
    ) -> AppendResult:
        """Atomically appends ``events`` (one or many) to ``stream`` if ``expected`` holds
        and, with a ``condition``, if no event matching it was committed after its ``after``.

        Raises :class:`WrongExpectedVersionError` (with ``.actual``), :class:`AlreadyExistsError`,
        :class:`StreamTypeMismatchError` (``stream_type`` differs from the stream's),
        :class:`AppendConditionFailedError` (with ``.position``), :class:`InvalidArgumentError`,
        ... A batch whose event ids were already committed together returns the original result
        with ``duplicate=True``.

        A conditional append is sent as an AppendMany of one append, so that a server without
        conditions raises :class:`UnimplementedError` instead of ignoring the condition.
        """
        if condition is not None:
            one = StreamAppend(stream, tuple(_convert.batch(events)), expected, stream_type)
            return self.append_many([one], condition, timeout=timeout)[0]
        req = _convert.append_request(stream, events, expected, stream_type)
        r = self._unary(self._stub.Append, req, timeout, stream=stream, expected=expected)
        return _convert.append_result(r)

    def append_many(
        self,
        appends: Iterable[StreamAppend],
        condition: Optional[AppendCondition] = None,
        *,
        timeout: Optional[float] = None,
    ) -> List[AppendResult]:
        """Atomically commits several appends (1..100, to one or several streams, each with
        its own expected version) and checks ``condition`` once for the whole request against
        the log as it was before it: all are written, in one contiguous run of global
        positions in request order, or none is. Returns one result per append, in order.

        Raises the error the failing append alone would have got; its ``append_index`` names
        that append (None for the request-wide condition or limits), and a
        :class:`WrongExpectedVersionError` carries its ``.stream``, ``.expected`` and
        ``.actual`` (counting the earlier appends of the request). A server without the
        extension raises :class:`UnimplementedError`.
        """
        batch = list(appends)
        req = _convert.append_many_request(batch, condition)
        try:
            r = self._stub.AppendMany(
                req,
                timeout=self._settings.call_timeout(timeout),
                metadata=self._settings.metadata,
            )
        except grpc.RpcError as e:
            raise from_append_many_error(e, [(a.stream, a.expected) for a in batch]) from None
        return [_convert.append_result(x) for x in r.results]

    # -- ReadStream ------------------------------------------------------------------------

    def read_stream(
        self,
        stream: str,
        from_version: int = 0,
        max_count: Optional[int] = None,
        direction: Union[Direction, str] = Direction.FORWARD,
        *,
        timeout: Optional[float] = None,
    ) -> StreamPage:
        """One page of ``stream``. ``from_version`` is inclusive (FORWARD: 0 or 1 = first
        event; BACKWARD: 0 = last event); ``max_count`` None = the server's default (100).

        Raises :class:`StreamNotFoundError` when the stream has no events.
        """
        req = _convert.read_stream_request(stream, from_version, max_count, direction)
        return _convert.stream_page(self._unary(self._stub.ReadStream, req, timeout, stream=stream))

    def iter_stream(
        self,
        stream: str,
        from_version: int = 0,
        direction: Union[Direction, str] = Direction.FORWARD,
        *,
        page_size: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Iterator[RecordedEvent]:
        """Every event of ``stream`` from ``from_version`` on, in ``direction``, fetched
        page by page (``page_size`` events a page; ``timeout`` applies to each page).

        Raises :class:`StreamNotFoundError` (on the first ``next()``) when the stream has no events.
        """
        _convert.read_stream_request(stream, from_version, page_size, direction)  # validate now
        return self._iter_stream(stream, from_version, direction, page_size, timeout)

    def _iter_stream(
        self,
        stream: str,
        version: int,
        direction: Union[Direction, str],
        page_size: Optional[int],
        timeout: Optional[float],
    ) -> Iterator[RecordedEvent]:
        while True:
            page = self.read_stream(stream, version, page_size, direction, timeout=timeout)
            yield from page.events
            if page.is_end:
                return
            if not page.events and page.next_version == version:
                raise EventStoreError(
                    grpc.StatusCode.INTERNAL, f"ReadStream made no progress at {version}"
                )
            version = page.next_version

    # -- ReadAll ---------------------------------------------------------------------------

    def read_all(
        self,
        from_position: int = 0,
        max_count: Optional[int] = None,
        direction: Union[Direction, str] = Direction.FORWARD,
        filter: Optional[Filter] = None,
        *,
        timeout: Optional[float] = None,
    ) -> AllPage:
        """One page of the global log. ``from_position`` is inclusive (FORWARD: 0 or 1 =
        start; BACKWARD: 0 = end). A filtered page may be empty with ``is_end`` false."""
        req = _convert.read_all_request(from_position, max_count, direction, filter)
        return _convert.all_page(self._unary(self._stub.ReadAll, req, timeout))

    def iter_all(
        self,
        from_position: int = 0,
        direction: Union[Direction, str] = Direction.FORWARD,
        filter: Optional[Filter] = None,
        *,
        page_size: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Iterator[RecordedEvent]:
        """Every (matching) event of the global log from ``from_position`` on, in
        ``direction``, up to the head as it is when the last page is read."""
        _convert.read_all_request(from_position, page_size, direction, filter)  # validate now
        return self._iter_all(from_position, direction, filter, page_size, timeout)

    def _iter_all(
        self,
        position: int,
        direction: Union[Direction, str],
        filter: Optional[Filter],
        page_size: Optional[int],
        timeout: Optional[float],
    ) -> Iterator[RecordedEvent]:
        while True:
            page = self.read_all(position, page_size, direction, filter, timeout=timeout)
            yield from page.events
            if page.is_end:
                return
            if not page.events and page.next_position == position:
                raise EventStoreError(
                    grpc.StatusCode.INTERNAL, f"ReadAll made no progress at {position}"
                )
            position = page.next_position

    # -- Subscribe -------------------------------------------------------------------------

    def subscribe(
        self,
        from_position: int = 0,
        *,
        from_end: bool = False,
        filter: Optional[Filter] = None,
        checkpoint_interval: int = 0,
        reconnect: Optional[ReconnectPolicy] = None,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> "Subscription":
        """Events of the global log with ``global_position >= from_position`` (0 or 1: from
        the beginning; ``from_end``: only events committed from now on), then live.

        Returns an iterator of :class:`RecordedEvent`, :class:`CaughtUp`,
        :class:`Checkpoint` (filtered subscriptions; ``checkpoint_interval`` 0 = the
        server's default) and :class:`FellBehind`. After a dropped connection or a server
        restart it reconnects by itself (``reconnect`` policy) from the last delivered
        event's position + 1 (or the last checkpoint's + 1): no gap, no duplicate. A
        :class:`CaughtUp` is yielded again after each reconnect. Close it with
        :meth:`Subscription.close` or a ``with`` block.

        The server is asked for up to ``max_batch`` events per message (default 256; 0 or 1:
        one per message; above 1000 the server answers :class:`InvalidArgumentError`); it
        sends what is ready without waiting to fill a batch, and the iterator still yields
        one event at a time. :attr:`Subscription.next_position` moves past an event when it
        is yielded, also in the middle of a batch.
        """
        cursor = ResumeCursor(from_position, from_end, filter, checkpoint_interval, max_batch)
        _convert.filter_(filter)  # validate now
        sub = Subscription(self, cursor, reconnect or self._reconnect)
        with self._lock:
            if self._closed:
                raise ValueError("the client is closed")
            self._subscriptions.add(sub)
        return sub

    def _forget(self, sub: "Subscription") -> None:
        with self._lock:
            self._subscriptions.discard(sub)


class Subscription(Iterator[SubscriptionMessage]):
    """An open subscription: iterate it; :meth:`close` ends it (from any thread)."""

    def __init__(self, client: EventStoreClient, cursor: ResumeCursor, policy: ReconnectPolicy):
        self._client = client
        self._cursor = cursor
        self._policy = policy
        self._call: Any = None
        self._closed = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._attempt = 0

    @property
    def next_position(self) -> int:
        """Where the subscription would resume: last delivered event's (or checkpoint's)
        position + 1. Store it to continue later with ``subscribe(from_position=...)``."""
        return self._cursor.next_position

    @property
    def reconnects(self) -> int:
        """How many times the subscription has reconnected."""
        return self._cursor.reconnects

    @property
    def closed(self) -> bool:
        return self._closed

    def __iter__(self) -> "Subscription":
        return self

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def close(self) -> None:
        """Ends the subscription; an iteration in progress stops (StopIteration)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            call = self._call
        self._wake.set()
        if call is not None:
            call.cancel()
        self._client._forget(self)

    def _open(self) -> Any:
        s = self._client._settings
        call = self._client._stub.Subscribe(self._cursor.request(), metadata=s.metadata)
        with self._lock:
            if self._closed:
                call.cancel()
                raise StopIteration
            self._call = call
        return call

    def __next__(self) -> SubscriptionMessage:
        while True:
            if self._closed:
                raise StopIteration
            # What was received (the rest of a batch) first: the next response is read,
            # and a dropped connection noticed, only when nothing received is left.
            pending = self._cursor.next_message()
            if pending is not None:
                return pending
            call = self._call if self._call is not None else self._open()
            failure: Optional[grpc.RpcError] = None
            try:
                resp = next(call)
            except StopIteration:
                pass  # ended without an error: not expected from the server; resume
            except grpc.RpcError as e:
                if self._closed:
                    raise StopIteration from None
                if e.code() not in self._policy.retry_codes:
                    self.close()
                    raise from_rpc_error(e) from None
                failure = e
            else:
                self._attempt = 0
                self._cursor.feed(resp)
                continue
            with self._lock:
                self._call = None
            self._backoff(failure)

    def _backoff(self, failure: Optional[grpc.RpcError]) -> None:
        self._attempt += 1
        if self._policy.gives_up(self._attempt):
            self.close()
            if failure is not None:
                raise from_rpc_error(failure) from None
            raise UnavailableError("subscription: the server kept ending the stream")
        delay = self._policy.delay(self._attempt)
        log.warning(
            "subscription interrupted (%s); resuming from position %d in %.2fs (attempt %d)",
            failure.code().name if failure is not None else "stream ended",
            self._cursor.next_position,
            delay,
            self._attempt,
        )
        self._wake.wait(delay)
        self._cursor.reconnects += 1
