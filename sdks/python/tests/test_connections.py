"""Each client has connections of its own: two clients of one address never share one. In
gRPC's default (a process-wide subchannel pool) they would, and a client created right after a
server restart could then send its first call on another client's dead connection to the old
server (UNAVAILABLE "Socket closed"; test_resumes_after_server_restart_at_the_right_position saw
it, most often with the oldest supported grpcio)."""

from __future__ import annotations

import pytest

from conftest import TcpProxy
from eventstore_client import AsyncEventStoreClient, EventStoreClient


def connections(proxy: TcpProxy) -> int:
    with proxy.lock:
        return len(proxy.conns) // 2  # each proxied connection is two sockets


def test_two_clients_open_two_connections(proxy: TcpProxy) -> None:
    with EventStoreClient(proxy.address) as first:
        first.read_all(max_count=1)
        assert connections(proxy) == 1
        with EventStoreClient(proxy.address) as second:
            second.read_all(max_count=1)
            assert connections(proxy) == 2


@pytest.mark.asyncio
async def test_two_async_clients_open_two_connections(proxy: TcpProxy) -> None:
    async with AsyncEventStoreClient(proxy.address) as first:
        await first.read_all(max_count=1)
        assert connections(proxy) == 1
        async with AsyncEventStoreClient(proxy.address) as second:
            await second.read_all(max_count=1)
            assert connections(proxy) == 2
