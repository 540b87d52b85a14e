"""The asyncio client (grpc.aio)."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType
from typing import Any, AsyncIterator, Iterable, List, Optional, Type, Union

import grpc
import grpc.aio

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

__all__ = ["AsyncEventStoreClient", "AsyncSubscription"]

log = logging.getLogger("eventstore_client")


class AsyncEventStoreClient:
    """The asyncio twin of :class:`~eventstore_client.EventStoreClient`: same arguments,
    same methods, awaitable; ``iter_stream``, ``iter_all`` and ``subscribe`` return async
    iterators. Use it as ``async with AsyncEventStoreClient(...) as client:`` inside the
    event loop that will use it.
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
        # grpc.aio binds a channel to the event loop it is created in: create it on first
        # use, so that the client may be constructed outside the loop that uses it.
        self._channel: Optional[grpc.aio.Channel] = None
        self._stub_obj: Any = None
        self._subscriptions: "set[AsyncSubscription]" = set()
        self._closed = False

    @property
    def _stub(self) -> Any:
        if self._closed:
            raise ValueError("the client is closed")
        if self._stub_obj is None:
            s = self._settings
            if s.credentials is None:
                self._channel = grpc.aio.insecure_channel(s.address, options=s.options)
            else:
                self._channel = grpc.aio.secure_channel(
                    s.address, s.credentials, options=s.options
                )
            self._stub_obj = pb_grpc.EventStoreStub(self._channel)
        return self._stub_obj

    @property
    def address(self) -> str:
        return self._settings.address

    async def __aenter__(self) -> "AsyncEventStoreClient":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Ends open subscriptions and closes the connection."""
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subscriptions):
            await sub.aclose()
        if self._channel is not None:
            await self._channel.close()

    async def _unary(
        self, method: Any, request: Any, timeout: Optional[float], **ctx: Any
    ) -> Any:
        try:
            return await method(
                request,
                timeout=self._settings.call_timeout(timeout),
                metadata=self._settings.metadata,
            )
        except grpc.RpcError as e:
            raise from_rpc_error(e, **ctx) from None

    async def append(
        self,
        stream: str,
        events: Union[EventData, Iterable[EventData]],
        expected: ExpectedVersion = ExpectedVersion.any(),
        stream_type: Optional[str] = None,
        *,
        condition: Optional[AppendCondition] = None,
        timeout: Optional[float] = None,
    ) -> AppendResult:
        """See :meth:`EventStoreClient.append`."""
        if condition is not None:
            one = StreamAppend(stream, tuple(_convert.batch(events)), expected, stream_type)
            return (await self.append_many([one], condition, timeout=timeout))[0]
        req = _convert.append_request(stream, events, expected, stream_type)
        r = await self._unary(self._stub.Append, req, timeout, stream=stream, expected=expected)
        return _convert.append_result(r)

    async def append_many(
        self,
        appends: Iterable[StreamAppend],
        condition: Optional[AppendCondition] = None,
        *,
        timeout: Optional[float] = None,
    ) -> List[AppendResult]:
        """See :meth:`EventStoreClient.append_many`."""
        batch = list(appends)
        req = _convert.append_many_request(batch, condition)
        try:
            r = await self._stub.AppendMany(
                req,
                timeout=self._settings.call_timeout(timeout),
                metadata=self._settings.metadata,
            )
        except grpc.RpcError as e:
            raise from_append_many_error(e, [(a.stream, a.expected) for a in batch]) from None
        return [_convert.append_result(x) for x in r.results]

    async def read_stream(
        self,
        stream: str,
        from_version: int = 0,
        max_count: Optional[int] = None,
        direction: Union[Direction, str] = Direction.FORWARD,
        *,
        timeout: Optional[float] = None,
    ) -> StreamPage:
        """See :meth:`EventStoreClient.read_stream`."""
        req = _convert.read_stream_request(stream, from_version, max_count, direction)
        r = await self._unary(self._stub.ReadStream, req, timeout, stream=stream)
        return _convert.stream_page(r)

    def iter_stream(
        self,
        stream: str,
        from_version: int = 0,
        direction: Union[Direction, str] = Direction.FORWARD,
        *,
        page_size: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> AsyncIterator[RecordedEvent]:
        """See :meth:`EventStoreClient.iter_stream`; use with ``async for``."""
        _convert.read_stream_request(stream, from_version, page_size, direction)  # validate now
        return self._iter_stream(stream, from_version, direction, page_size, timeout)

    async def _iter_stream(
        self,
        stream: str,
        version: int,
        direction: Union[Direction, str],
        page_size: Optional[int],
        timeout: Optional[float],
    ) -> AsyncIterator[RecordedEvent]:
        while True:
            page = await self.read_stream(stream, version, page_size, direction, timeout=timeout)
            for e in page.events:
                yield e
            if page.is_end:
                return
            if not page.events and page.next_version == version:
                raise EventStoreError(
                    grpc.StatusCode.INTERNAL, f"ReadStream made no progress at {version}"
                )
            version = page.next_version

    async def read_all(
        self,
        from_position: int = 0,
        max_count: Optional[int] = None,
        direction: Union[Direction, str] = Direction.FORWARD,
        filter: Optional[Filter] = None,
        *,
        timeout: Optional[float] = None,
    ) -> AllPage:
        """See :meth:`EventStoreClient.read_all`."""
        req = _convert.read_all_request(from_position, max_count, direction, filter)
        return _convert.all_page(await self._unary(self._stub.ReadAll, req, timeout))

    def iter_all(
        self,
        from_position: int = 0,
        direction: Union[Direction, str] = Direction.FORWARD,
        filter: Optional[Filter] = None,
        *,
        page_size: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> AsyncIterator[RecordedEvent]:
        """See :meth:`EventStoreClient.iter_all`; use with ``async for``."""
        _convert.read_all_request(from_position, page_size, direction, filter)  # validate now
        return self._iter_all(from_position, direction, filter, page_size, timeout)

    async def _iter_all(
        self,
        position: int,
        direction: Union[Direction, str],
        filter: Optional[Filter],
        page_size: Optional[int],
        timeout: Optional[float],
    ) -> AsyncIterator[RecordedEvent]:
        while True:
            page = await self.read_all(position, page_size, direction, filter, timeout=timeout)
            for e in page.events:
                yield e
            if page.is_end:
                return
            if not page.events and page.next_position == position:
                raise EventStoreError(
                    grpc.StatusCode.INTERNAL, f"ReadAll made no progress at {position}"
                )
            position = page.next_position

    def subscribe(
        self,
        from_position: int = 0,
        *,
        from_end: bool = False,
        filter: Optional[Filter] = None,
        checkpoint_interval: int = 0,
        reconnect: Optional[ReconnectPolicy] = None,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> "AsyncSubscription":
        """See :meth:`EventStoreClient.subscribe`; use with ``async for`` (and ``async with``
        or :meth:`AsyncSubscription.aclose` to end it)."""
        if self._closed:
            raise ValueError("the client is closed")
        cursor = ResumeCursor(from_position, from_end, filter, checkpoint_interval, max_batch)
        _convert.filter_(filter)  # validate now
        sub = AsyncSubscription(self, cursor, reconnect or self._reconnect)
        self._subscriptions.add(sub)
        return sub


class AsyncSubscription(AsyncIterator[SubscriptionMessage]):
    """An open subscription: ``async for`` over it; :meth:`aclose` ends it."""

    def __init__(
        self, client: AsyncEventStoreClient, cursor: ResumeCursor, policy: ReconnectPolicy
    ) -> None:
        self._client = client
        self._cursor = cursor
        self._policy = policy
        self._call: Any = None
        self._closed = False
        self._wake: Optional[asyncio.Event] = None
        self._attempt = 0

    @property
    def next_position(self) -> int:
        """See :attr:`Subscription.next_position`."""
        return self._cursor.next_position

    @property
    def reconnects(self) -> int:
        return self._cursor.reconnects

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> "AsyncSubscription":
        return self

    async def __aenter__(self) -> "AsyncSubscription":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.aclose()

    def close(self) -> None:
        """Ends the subscription (also callable from sync code in the loop's thread)."""
        if self._closed:
            return
        self._closed = True
        if self._wake is not None:
            self._wake.set()
        call, self._call = self._call, None
        if call is not None:
            call.cancel()
        self._client._subscriptions.discard(self)

    async def aclose(self) -> None:
        """Ends the subscription; an ``async for`` in progress stops."""
        self.close()

    async def __anext__(self) -> SubscriptionMessage:
        while True:
            if self._closed:
                raise StopAsyncIteration
            # The rest of a batch first (see Subscription.__next__).
            pending = self._cursor.next_message()
            if pending is not None:
                return pending
            if self._call is None:
                s = self._client._settings
                self._call = self._client._stub.Subscribe(
                    self._cursor.request(), metadata=s.metadata
                )
            call = self._call
            failure: Optional[grpc.RpcError] = None
            try:
                resp = await call.read()
            except asyncio.CancelledError:
                # aclose() from another task cancels the call, which cancels this read;
                # a cancellation of this task itself must propagate.
                task = asyncio.current_task()
                cancelling = getattr(task, "cancelling", None)
                if self._closed and not (callable(cancelling) and cancelling()):
                    raise StopAsyncIteration from None
                raise
            except grpc.RpcError as e:
                if self._closed:
                    raise StopAsyncIteration from None
                if e.code() not in self._policy.retry_codes:
                    self.close()
                    raise from_rpc_error(e) from None
                failure = e
            else:
                if resp is grpc.aio.EOF:
                    if self._closed:
                        raise StopAsyncIteration
                    # Ended: with an error status we may read, or cleanly (not expected).
                    code = await call.code()
                    if code != grpc.StatusCode.OK and code not in self._policy.retry_codes:
                        details = await call.details()
                        self.close()
                        raise EventStoreError(code, details or "")
                else:
                    self._attempt = 0
                    self._cursor.feed(resp)
                    continue
            self._call = None
            await self._backoff(failure)

    async def _backoff(self, failure: Optional[grpc.RpcError]) -> None:
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
        if self._wake is None:
            self._wake = asyncio.Event()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=delay)
        except asyncio.TimeoutError:
            pass
        self._cursor.reconnects += 1
