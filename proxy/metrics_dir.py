"""The private directory where every worker process writes its Prometheus samples.

prometheus_client's multiprocess mode keeps each process's samples in memory-mapped files
under ``PROMETHEUS_MULTIPROC_DIR``, and a scrape, served by whichever worker accepts it, merges
the files of all of them: ``/metrics`` reports the whole gateway, never one worker's share.
:func:`run` in proxy/server.py opens the directory before forking (the variable is inherited,
and must be set before the first metric exists), so one worker and N workers take the same path.
It is a fresh ``mkdtemp`` directory (mode 0700, under ``$TMPDIR``) for every run, so a restart
never reads counts a previous run left, and it is removed when the gateway exits.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator

from .startup import StartupError, reason

ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def private_metrics_dir() -> Iterator[str]:
    """Create the directory, point ``PROMETHEUS_MULTIPROC_DIR`` at it, remove it on exit; a
    :class:`StartupError` if it cannot be created."""
    try:
        path = tempfile.mkdtemp(prefix=f"sluicegate-metrics-{os.getpid()}-")
    except OSError as exc:  # no writable temporary directory (TMPDIR, /tmp, …)
        raise StartupError(f"cannot create the metrics directory: {reason(exc)}") from exc
    previous = os.environ.get(ENV)
    os.environ[ENV] = path
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
        shutil.rmtree(path, ignore_errors=True)


def worker_exited(pid: int) -> None:
    """Drop the live gauges (in-flight requests, draining) of a worker that ended; its counters
    stay, since the requests it served are still the gateway's."""
    path = os.environ.get(ENV)
    if not path:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)
