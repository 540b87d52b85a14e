"""TLS with a CA, the bearer token, UNAUTHENTICATED and deadlines.

The real server has no TLS or authentication yet, so these tests run the client against a
small in-process gRPC server (the same generated service, TLS with a throwaway CA made by
openssl) that checks `authorization: Bearer <token>` the way the server is going to.
"""

from __future__ import annotations

import subprocess
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import grpc
import pytest

from eventstore_client import (
    AsyncEventStoreClient,
    DeadlineExceeded,
    EventStoreClient,
    EventStoreError,
    ExpectedVersion,
    Unauthenticated,
    Unavailable,
    WrongExpectedVersion,
    json_event,
)
from eventstore_client._gen import eventstore_pb2 as pb
from eventstore_client._gen import eventstore_pb2_grpc as pb_grpc

from conftest import require_program

TOKEN = "s3cret-token"


def make_certs(d: Path) -> Tuple[Path, Path, Path]:
    """A CA and a server certificate for localhost / 127.0.0.1 signed by it."""
    openssl = require_program("openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
        "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem")
    return d / "ca.pem", d / "server.pem", d / "server.key"


class FakeStore(pb_grpc.EventStoreServicer):  # type: ignore[misc]
    """Append checks the token; ReadStream is slow (for deadlines)."""

    def __init__(self) -> None:
        self.seen_auth: List[str] = []

    def _auth(self, context: Any) -> None:
        auth = dict(context.invocation_metadata()).get("authorization", "")
        self.seen_auth.append(auth)
        if auth != f"Bearer {TOKEN}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    def Append(self, request: Any, context: Any) -> Any:
        self._auth(context)
        if request.expected_kind == pb.EXPECTED_EXACT and request.expected_version != 0:
            context.set_trailing_metadata((("es-actual-version", "0"),))
            context.abort(grpc.StatusCode.ABORTED, "expected version mismatch")
        n = len(request.events)
        return pb.AppendResponse(
            first_stream_version=1, last_stream_version=n,
            first_global_position=1, last_global_position=n, recorded_at_unix_ms=1,
        )

    def ReadStream(self, request: Any, context: Any) -> Any:
        time.sleep(1.0)
        return pb.ReadStreamResponse()

    def ReadAll(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, "not for you")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tuple[str, Path, FakeStore]]:
    ca, cert, key = make_certs(tmp_path_factory.mktemp("certs"))
    store = FakeStore()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_EventStoreServicer_to_server(store, server)
    creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    yield f"localhost:{port}", ca, store
    server.stop(None)


def test_tls_with_ca_and_token(tls_server: Tuple[str, Path, FakeStore]) -> None:
    address, ca, store = tls_server
    with EventStoreClient(address, ca_cert=ca, token=TOKEN) as c:  # a path
        assert c.append("s", [json_event("A", 1)]).last_stream_version == 1
    assert store.seen_auth[-1] == f"Bearer {TOKEN}"
    with EventStoreClient(address, ca_cert=ca.read_bytes(), token=TOKEN) as c:  # PEM bytes
        c.append("s", [json_event("A", 1)])
    with EventStoreClient(address, ca_cert=ca.read_text(), tls=True, token=TOKEN) as c:  # PEM text
        with pytest.raises(WrongExpectedVersion) as e:
            c.append("s", [json_event("A", 1)], ExpectedVersion.exact(3))
        assert e.value.actual == 0


def test_unauthenticated(tls_server: Tuple[str, Path, FakeStore]) -> None:
    address, ca, store = tls_server
    for token in (None, "wrong"):
        with EventStoreClient(address, ca_cert=ca, token=token) as c:
            with pytest.raises(Unauthenticated) as e:
                c.append("s", [json_event("A", 1)])
            assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
            assert isinstance(e.value, EventStoreError)


async def test_async_tls_and_unauthenticated(tls_server: Tuple[str, Path, FakeStore]) -> None:
    address, ca, _ = tls_server
    async with AsyncEventStoreClient(address, ca_cert=ca, token=TOKEN) as c:
        assert (await c.append("s", [json_event("A", 1)])).last_stream_version == 1
    async with AsyncEventStoreClient(address, ca_cert=ca, token="nope") as c:
        with pytest.raises(Unauthenticated):
            await c.append("s", [json_event("A", 1)])


def test_untrusted_or_plaintext_is_unavailable(
    tls_server: Tuple[str, Path, FakeStore], tmp_path: Path
) -> None:
    address, _, _ = tls_server
    other_ca, _, _ = make_certs(tmp_path)  # a CA that did not sign the server's certificate
    with EventStoreClient(address, ca_cert=other_ca, token=TOKEN, timeout=5) as c:
        with pytest.raises(Unavailable):
            c.append("s", [json_event("A", 1)])
    with EventStoreClient(address, token=TOKEN, timeout=5) as c:  # plaintext to a TLS port
        with pytest.raises(Unavailable):
            c.append("s", [json_event("A", 1)])


def test_default_and_per_call_deadline(tls_server: Tuple[str, Path, FakeStore]) -> None:
    address, ca, _ = tls_server
    with EventStoreClient(address, ca_cert=ca, token=TOKEN, timeout=0.2) as c:
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded) as e:
            c.read_stream("s")
        assert time.monotonic() - t0 < 0.9
        assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert c.read_stream("s", timeout=5).events == []  # a per-call timeout wins


def test_other_codes_are_plain_event_store_errors(tls_server: Tuple[str, Path, FakeStore]) -> None:
    address, ca, _ = tls_server
    with EventStoreClient(address, ca_cert=ca) as c:
        with pytest.raises(EventStoreError) as e:
            c.read_all()
    assert type(e.value) is EventStoreError
    assert e.value.code == grpc.StatusCode.PERMISSION_DENIED and "not for you" in str(e.value)


def test_connection_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        EventStoreClient("localhost:1", tls=False, ca_cert=b"pem")
    with pytest.raises(ValueError):
        EventStoreClient("localhost:1", client_cert=b"pem")
    with pytest.raises(ValueError):
        EventStoreClient("")
