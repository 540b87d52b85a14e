"""Fixtures: the real eventstore server as a child process on a free loopback port.

The binary comes from ES_SERVER_BIN (default: ../../bazel-bin/server/eventstore, relative
to sdks/python). Build it with `bazel build //server:eventstore`.

No test is ever skipped: a tool a test needs that is missing (grpc_tools, mypy, openssl) is an
incomplete setup, and a skipped test would hide it, so `require_module` / `require_program` fail
instead, and any skip that slips in (pytest.skip, a skip mark, an xfail) is turned into a failure
by `pytest_runtest_makereport` below. The one way out is for a person running a subset by hand:
ES_ALLOW_SKIPS=1 keeps skips as skips, and is ignored under Bazel (`bazel test //sdks/python:test`,
and so `make test`, never takes it).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Generator, Iterator, List, Optional

import pytest

from eventstore_client import AsyncEventStoreClient, EventStoreClient, ReconnectPolicy

SDK_DIR = Path(__file__).resolve().parent.parent
DEFAULT_SERVER_BIN = SDK_DIR / ".." / ".." / "bazel-bin" / "server" / "eventstore"

# Reconnect fast in tests (a restart takes well under a second).
FAST_RECONNECT = ReconnectPolicy(initial_backoff=0.05, max_backoff=0.5, max_attempts=200)


def skips_allowed() -> bool:
    """True only when a person asked for skips by hand, outside Bazel."""
    return os.environ.get("ES_ALLOW_SKIPS") == "1" and "TEST_SRCDIR" not in os.environ


def require_module(name: str) -> None:
    """Fails the calling test when the module is not installed (never skips)."""
    if importlib.util.find_spec(name) is None:
        pytest.fail(
            f"{name} is not installed in {sys.executable}: run sdks/python/setup.sh",
            pytrace=False,
        )


def require_program(name: str) -> str:
    """The path of a program the calling test runs; fails the test when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: run tools/setup.sh", pytrace=False)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A skipped (or xfailed) test becomes a failed one, unless skips_allowed()."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not skips_allowed():
        if hasattr(report, "wasxfail"):
            why = f"expected to fail: {report.wasxfail}"
        elif isinstance(report.longrepr, tuple):
            why = report.longrepr[2]
        else:
            why = str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} was skipped ({why}): a skip hides a missing tool or an untested "
            "case, so it fails here (ES_ALLOW_SKIPS=1 for a subset run by hand)"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    """A module skipped as a whole (a module-level skip or importorskip) fails as well."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not skips_allowed():
        why = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (
            f"{collector.nodeid} was skipped at collection ({why}): a skip hides a missing tool, "
            "so it fails here (ES_ALLOW_SKIPS=1 for a subset run by hand)"
        )


def server_binary() -> Path:
    raw = os.environ.get("ES_SERVER_BIN")
    path = Path(raw) if raw else DEFAULT_SERVER_BIN
    if not path.is_absolute():
        path = (SDK_DIR / path) if not raw else Path.cwd() / path
    path = path.resolve()
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"server binary {path} not found: build it with `bazel build //server:eventstore` "
            "or set ES_SERVER_BIN",
            pytrace=False,
        )
    return path


class ServerProcess:
    """One eventstore server process (memory backend)."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.port = 0
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> "ServerProcess":
        """Starts the server on ``port`` (0: a free one) and waits until it serves."""
        assert self.proc is None, "already running"
        self.starts += 1
        port_file = self.workdir / f"port-{self.starts}"
        log = open(self.workdir / f"server-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(
            [
                str(self.binary),
                "--backend",
                "memory",
                "--bind",
                f"127.0.0.1:{port}",
                "--port-file",
                str(port_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if port_file.exists():
                text = port_file.read_text().strip()
                if text:
                    self.port = int(text)
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"server did not start on port {port}:\n{self.log_tail()}")

    def stop(self) -> Optional[int]:
        """SIGTERM (graceful: subscriptions end with UNAVAILABLE) and wait."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def restart_same_port(self) -> "ServerProcess":
        """Stops the server and starts a new one (empty: memory backend) on the same port."""
        port = self.port
        self.stop()
        last: Optional[Exception] = None
        for _ in range(50):  # the port can take a moment to be free again
            try:
                return self.start(port)
            except RuntimeError as e:
                last = e
                time.sleep(0.1)
        raise RuntimeError(f"could not restart on port {port}") from last

    def log_tail(self, lines: int = 30) -> str:
        out: List[str] = []
        for f in sorted(self.workdir.glob("server-*.log")):
            out += [f"--- {f.name}"] + f.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)


@pytest.fixture(scope="session")
def server_bin() -> Path:
    return server_binary()


@pytest.fixture(scope="session")
def server(server_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server shared by the tests of the session (tests use unique stream names)."""
    s = ServerProcess(server_bin, tmp_path_factory.mktemp("server"))
    s.start()
    yield s
    s.stop()


@pytest.fixture
def own_server(server_bin: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of this test alone (for stop / restart)."""
    s = ServerProcess(server_bin, tmp_path)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[EventStoreClient]:
    with EventStoreClient(server.address, timeout=10, reconnect=FAST_RECONNECT) as c:
        yield c


@pytest.fixture
async def aclient(server: ServerProcess) -> AsyncIterator[AsyncEventStoreClient]:
    async with AsyncEventStoreClient(server.address, timeout=10, reconnect=FAST_RECONNECT) as c:
        yield c


@pytest.fixture
def stream() -> str:
    """A stream name no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


def unique(prefix: str = "p") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}-"


class TcpProxy:
    """A loopback TCP proxy whose connections a test can cut (a dropped connection
    without a server restart: the server keeps its data)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.conns: List[socket.socket] = []
        self.drops = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.target)
            except OSError:
                down.close()
                continue
            with self.lock:
                self.conns += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop(self) -> None:
        """Cuts every open connection (both directions)."""
        with self.lock:
            conns, self.conns = self.conns, []
            self.drops += 1
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        self.drop()


@pytest.fixture
def proxy(server: ServerProcess) -> Iterator[TcpProxy]:
    p = TcpProxy(server.port)
    yield p
    p.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: stops and restarts servers")

