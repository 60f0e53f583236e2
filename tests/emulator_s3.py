"""A real ``moto_server`` process as the S3 emulator for tests.

Import the fixture into a test module (``from tests.emulator_s3 import moto_s3  # noqa: F401``).
It never skips: a missing or broken ``moto_server`` fails the tests that need it.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

_START_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class MotoS3:
    endpoint_url: str
    region: str = "us-east-1"
    access_key: str = "testing"
    secret_key: str = "testing"


def _moto_server_executable() -> str:
    beside_python = Path(sys.executable).with_name("moto_server")
    if beside_python.is_file():
        return str(beside_python)
    on_path = shutil.which("moto_server")
    if on_path is None:
        pytest.fail("moto_server not found next to the Python executable or on PATH; "
                    "install it with: pip install 'moto[server]'")
    return on_path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()
    except urllib.error.HTTPError:
        return True                      # any HTTP status means the server is up
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    port = _free_port()
    endpoint_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(
            [_moto_server_executable(), "-H", "127.0.0.1", "-p", str(port)],
            stdout=output, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + _START_TIMEOUT
            while not _answers(endpoint_url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    output.seek(0)
                    log = output.read().decode(errors="replace")[-2000:]
                    pytest.fail(f"moto_server did not start on {endpoint_url} "
                                f"(exit code {proc.poll()}):\n{log}")
                time.sleep(0.1)
            yield MotoS3(endpoint_url)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def fresh_bucket(client: Any) -> str:
    """Create an empty bucket with a unique name and return the name."""
    name = f"sg-test-{uuid.uuid4().hex[:16]}"
    await client.create_bucket(Bucket=name)
    return name
