"""The examples run against the real server; the checked-in generated code is what
//sdks/python:stubs produces; the package is typed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SDK_DIR, ServerProcess, require_module

GEN_DIR = SDK_DIR / "src" / "eventstore_client" / "_gen"
STUB_FILES = ["__init__.py", "eventstore_pb2.py", "eventstore_pb2.pyi", "eventstore_pb2_grpc.py"]
PROTO = SDK_DIR.parent.parent / "proto" / "eventstore" / "v1" / "eventstore.proto"
# The stubs generator (requirements-stubs.txt) has a venv of its own: see setup.sh.
STUBS_PYTHON = SDK_DIR / ".venv-stubs" / "bin" / "python"


@pytest.mark.parametrize("example", ["quickstart", "quickstart_async"])
def test_example_runs(server: ServerProcess, example: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(SDK_DIR / "src"))
    out = subprocess.run(
        [sys.executable, "-m", f"eventstore_client.examples.{example}", server.address],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith(": OK")
    assert "OrderShipped" in out.stdout


def bazel_stubs_dir() -> Path:
    raw = os.environ.get("ES_STUBS_DIR")
    return Path(raw) if raw else SDK_DIR.parent.parent / "bazel-bin" / "sdks" / "python" / "_gen"


def test_checked_in_stubs_match_the_bazel_target() -> None:
    built = bazel_stubs_dir()
    if not (built / "__init__.py").exists():
        pytest.fail(
            f"{built} is missing: run `bazel build //sdks/python:stubs` (or set ES_STUBS_DIR)",
            pytrace=False,
        )
    stale = [f for f in STUB_FILES if (built / f).read_bytes() != (GEN_DIR / f).read_bytes()]
    extra = sorted(p.name for p in GEN_DIR.iterdir() if p.name not in STUB_FILES + ["__pycache__"])
    assert not stale and not extra, (
        f"src/eventstore_client/_gen differs from //sdks/python:stubs ({stale=}, {extra=}): "
        "run sdks/python/gen.sh"
    )


def test_checked_in_messages_match_the_proto(tmp_path: Path) -> None:
    """Independent of Bazel: protoc from the pinned grpcio-tools on the current proto gives
    the checked-in messages (catches a proto change even when bazel-bin is stale)."""
    if not STUBS_PYTHON.exists():
        pytest.fail(f"{STUBS_PYTHON} is missing: run sdks/python/setup.sh", pytrace=False)
    subprocess.run(
        [str(STUBS_PYTHON), "-m", "grpc_tools.protoc", f"-I{PROTO.parent.parent.parent}",
         f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", "eventstore/v1/eventstore.proto"],
        check=True,
    )
    for f in ["eventstore_pb2.py", "eventstore_pb2.pyi"]:
        assert (tmp_path / "eventstore" / "v1" / f).read_bytes() == (GEN_DIR / f).read_bytes(), (
            f"{f} is stale: run sdks/python/gen.sh"
        )


def test_package_is_typed_and_passes_mypy_strict() -> None:
    assert (SDK_DIR / "src" / "eventstore_client" / "py.typed").exists()
    require_module("mypy")
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir=/dev/null", "src/eventstore_client"],
        cwd=SDK_DIR, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
