"""What the sync and the asyncio client share: connection settings, the reconnect
policy and the resume cursor of a subscription (internal, except ReconnectPolicy)."""

from __future__ import annotations

import os
import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, FrozenSet, List, Optional, Sequence, Tuple, Union

import grpc

from . import _convert
from ._gen import eventstore_pb2 as pb
from ._types import CaughtUp, Checkpoint, Filter, RecordedEvent, SubscriptionMessage

__all__ = ["ReconnectPolicy"]

VERSION = "0.1.0"

# Events per Subscribe response that subscriptions ask for unless told otherwise
# (max_batch; the server allows up to 1000).
DEFAULT_MAX_BATCH = 256

PemSource = Union[bytes, str, "os.PathLike[str]"]
ChannelOptions = Sequence[Tuple[str, Any]]

# Reconnect quickly after a restart (gRPC's own default waits 1 s and grows to 120 s), and
# accept a page that holds one maximal event (the server's request limit is 4 MiB).
# Each client has connections of its own (a local subchannel pool): in gRPC's default global
# pool, a client created right after the server restarted could send its first call on another
# client's connection to the old server and fail with UNAVAILABLE "Socket closed" -- often with
# older grpcio releases, now and then with the newest.
DEFAULT_CHANNEL_OPTIONS: List[Tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.primary_user_agent", f"eventstore-client-python/{VERSION}"),
    ("grpc.use_local_subchannel_pool", 1),
]


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a subscription reconnects after a dropped connection or a server restart.

    Delays grow from ``initial_backoff`` by ``multiplier`` up to ``max_backoff`` seconds,
    each randomised by ±``jitter`` (a fraction). After a message arrives the delay starts
    over. ``max_attempts`` consecutive failed attempts (None: no limit) end the
    subscription with :class:`~eventstore_client.UnavailableError`.
    """

    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.2
    max_attempts: Optional[int] = None
    retry_codes: FrozenSet[grpc.StatusCode] = frozenset(
        {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL}
    )
    """Status codes after which the subscription resumes; any other ends it with the typed
    error. (A stream that the server ends without an error is resumed too.)"""

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect attempt number ``attempt`` (1-based)."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** max(0, attempt - 1))
        if self.jitter:
            base *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(0.0, base)

    def gives_up(self, attempt: int) -> bool:
        return self.max_attempts is not None and attempt > self.max_attempts


def _read_pem(src: Optional[PemSource]) -> Optional[bytes]:
    if src is None:
        return None
    if isinstance(src, bytes):
        return src
    if isinstance(src, str) and src.lstrip().startswith("-----BEGIN"):
        return src.encode("ascii")
    with open(os.fspath(src), "rb") as f:
        return f.read()


@dataclass(frozen=True)
class ConnectionSettings:
    address: str
    credentials: Optional[grpc.ChannelCredentials]  # None: plaintext
    metadata: Tuple[Tuple[str, str], ...]
    timeout: Optional[float]
    options: List[Tuple[str, Any]]

    @classmethod
    def create(
        cls,
        address: str,
        *,
        tls: Optional[bool],
        ca_cert: Optional[PemSource],
        client_cert: Optional[PemSource],
        client_key: Optional[PemSource],
        token: Optional[str],
        timeout: Optional[float],
        channel_options: Optional[ChannelOptions],
    ) -> "ConnectionSettings":
        if not address:
            raise ValueError("address must be 'host:port'")
        use_tls = tls if tls is not None else (ca_cert is not None or client_cert is not None)
        if not use_tls and (ca_cert is not None or client_cert is not None):
            raise ValueError("ca_cert / client_cert given with tls=False")
        if (client_cert is None) != (client_key is None):
            raise ValueError("client_cert and client_key go together")
        creds = (
            grpc.ssl_channel_credentials(
                root_certificates=_read_pem(ca_cert),
                private_key=_read_pem(client_key),
                certificate_chain=_read_pem(client_cert),
            )
            if use_tls
            else None
        )
        metadata: Tuple[Tuple[str, str], ...] = ()
        if token:
            metadata = (("authorization", f"Bearer {token}"),)
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive (or None for no deadline)")
        opts = dict(DEFAULT_CHANNEL_OPTIONS)
        opts.update(dict(channel_options or ()))
        return cls(address, creds, metadata, timeout, list(opts.items()))

    def call_timeout(self, timeout: Optional[float]) -> Optional[float]:
        return timeout if timeout is not None else self.timeout


class ResumeCursor:
    """Tracks where a subscription must resume so that it never skips or repeats.

    The resume point is the last delivered event's position + 1, or the last checkpoint's
    + 1 if that is further. A ``from_end`` subscription that has seen neither resumes after
    the head its first CaughtUp reported; before that it can only ask for the end again.

    Responses go in with :meth:`feed` and messages come out one at a time with
    :meth:`next_message`. The events of an ``EventBatch`` wait in a queue and move the
    resume point only as each is handed out, so a caller that stops in the middle of a
    batch resumes right after the last event it received. The subscriptions read the
    next response only once the queue is empty.
    """

    def __init__(
        self,
        from_position: int,
        from_end: bool,
        filter: Optional[Filter],
        checkpoint_interval: int,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        _convert.check_uint("from_position", from_position)
        _convert.check_uint("checkpoint_interval", checkpoint_interval, 32)
        _convert.check_uint("max_batch", max_batch, 32)
        self.filter = filter
        self.checkpoint_interval = checkpoint_interval
        self.max_batch = max_batch
        self.from_end = from_end
        self.next_position = max(1, from_position)
        self.last_event_position = 0  # 0: none delivered yet
        self.reconnects = 0
        # Received, not yet handed out: events of a batch (pb.RecordedEvent) or whole
        # responses of another kind.
        self._pending: Deque[Union[pb.RecordedEvent, pb.SubscribeResponse]] = deque()

    def request(self) -> pb.SubscribeRequest:
        return _convert.subscribe_request(
            0 if self.from_end else self.next_position,
            self.from_end,
            self.filter,
            self.checkpoint_interval,
            self.max_batch,
        )

    def feed(self, resp: pb.SubscribeResponse) -> None:
        """Queues what ``resp`` carries: each event of a batch, or the response itself."""
        if resp.WhichOneof("message") == "batch":
            self._pending.extend(resp.batch.events)
        else:
            self._pending.append(resp)

    def next_message(self) -> Optional[SubscriptionMessage]:
        """The next message to hand out; None when nothing received is left to hand out."""
        while self._pending:
            item = self._pending.popleft()
            msg: Optional[SubscriptionMessage]
            if isinstance(item, pb.RecordedEvent):
                msg = self.observe_event(_convert.recorded_event(item))
            else:
                msg = self.observe(item)
            if msg is not None:
                return msg
        return None

    def observe_event(self, event: RecordedEvent) -> Optional[RecordedEvent]:
        """``event`` if it is to be handed out now (None: delivered before)."""
        if event.global_position <= self.last_event_position:
            return None  # already delivered before a reconnect: never twice
        self.last_event_position = event.global_position
        self.next_position = max(self.next_position, event.global_position + 1)
        self.from_end = False
        return event

    def observe(self, resp: pb.SubscribeResponse) -> Optional[SubscriptionMessage]:
        """The message to hand out for ``resp`` (None: nothing to hand out)."""
        msg = _convert.subscription_message(resp)
        if isinstance(msg, RecordedEvent):
            return self.observe_event(msg)
        if isinstance(msg, Checkpoint):
            self.next_position = max(self.next_position, msg.position + 1)
            self.from_end = False
        elif isinstance(msg, CaughtUp) and self.from_end:
            self.next_position = max(self.next_position, msg.head_position + 1)
            self.from_end = False
        return msg
