"""The README's quick start, run as written against the installed console script.

The blocks are read out of README.md itself, so the test fails as soon as the README and the
program part ways: the run command, the shell block that writes ``requests.jsonl`` and the
Python block that uploads, lists, downloads and deletes it. The only change made to what the
README says is the port (a free one instead of 8080, so the test never collides with
anything listening there).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.gateway_proc import free_port

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S)]


def _quick_start() -> tuple[str, str, str]:
    """The run command, the shell block and the Python block of 'The two commands'."""
    text = README.read_text()
    section = text[text.index("## The two commands"):]
    section = section[:section.index("\n## ", 1)]
    blocks = _blocks(section)
    run = next(body for lang, body in blocks if lang == "sh" and "sluicegate" in body and "pytest" not in body)
    shell = next(body for lang, body in blocks if lang == "sh" and "requests.jsonl" in body)
    python = next(body for lang, body in blocks if lang == "python")
    return run.strip(), shell, python


def test_readme_quick_start_runs_as_written(tmp_path: Path) -> None:
    run, shell, python = _quick_start()
    # "pip install . && sluicegate": the suite runs against the installed package, so only the
    # part after the install is started here, through the console script on PATH.
    command = run.split("&&")[-1].strip()
    assert command.split()[0] == "sluicegate", run
    exe = shutil.which("sluicegate")
    assert exe is not None, "the sluicegate console script is not installed (pip install -e .)"
    assert "127.0.0.1:8080" in python
    port = free_port()
    env = dict(os.environ)
    env.pop("SLUICEGATE_CONFIG", None)
    log = open(tmp_path / "gateway.log", "wb")
    proc = subprocess.Popen([exe, *command.split()[1:], "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (tmp_path / "gateway.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "gateway did not become ready"
                time.sleep(0.05)
        subprocess.run(["bash", "-euo", "pipefail", "-c", shell], cwd=tmp_path, check=True, timeout=30)
        lines = (tmp_path / "requests.jsonl").read_text().splitlines()
        assert len(lines) == 2
        script = python.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
        out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        # The listing shows the file and the content printed is the file's own bytes.
        assert "requests.jsonl" in out.stdout
        assert '"custom_id": "r1"' in out.stdout
        # The delete went through: nothing is left in the gateway's listing.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/files", timeout=5) as r:
            assert b'"data":[]' in r.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
