"""The private directory where every worker process writes its Prometheus samples.

prometheus_client's multiprocess mode keeps each process's samples in memory-mapped files
under ``PROMETHEUS_MULTIPROC_DIR``, and a scrape, served by whichever worker accepts it, merges
the files of all of them: ``/metrics`` reports the whole gateway, never one worker's share.
:func:`run` in proxy/server.py opens the directory before forking (the variable is inherited,
and must be set before the first metric exists), so one worker and N workers take the same path.
It is a fresh ``mkdtemp`` directory (mode 0700, under ``$TMPDIR``) for every run, so a restart
never reads counts a previous run left, and it is removed when the gateway exits. A run holds
an exclusive ``flock`` on its directory while any of its processes lives (workers share the
descriptor), so the directory of a run that was killed outright is the one nobody holds: the
next start removes it (pids are no use for this: in a container every run is pid 1).
"""
from __future__ import annotations

import fcntl
import glob
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator

from .startup import StartupError, reason

ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "sluicegate-metrics-"


@contextmanager
def private_metrics_dir() -> Iterator[str]:
    """Create the directory, point ``PROMETHEUS_MULTIPROC_DIR`` at it, remove it on exit; a
    :class:`StartupError` if it cannot be created."""
    try:
        tmp = tempfile.gettempdir()
        _remove_abandoned(tmp)
        # Locked under a name the clean-up above does not match, then renamed: another gateway
        # starting at the same moment never sees it unlocked.
        path = tempfile.mkdtemp(prefix="." + PREFIX, dir=tmp)
    except OSError as exc:  # no writable temporary directory (TMPDIR, /tmp, …)
        raise StartupError(f"cannot create the metrics directory: {reason(exc)}") from exc
    lock = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # it is new: nobody else holds it
    final = os.path.join(tmp, PREFIX + os.path.basename(path)[len(PREFIX) + 1:])
    os.rename(path, final)
    previous = os.environ.get(ENV)
    os.environ[ENV] = final
    try:
        yield final
    finally:
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
        shutil.rmtree(final, ignore_errors=True)
        os.close(lock)


def _remove_abandoned(tmp: str) -> None:
    """Remove the directories of runs that ended without removing theirs (SIGKILL, OOM)."""
    for path in glob.glob(os.path.join(glob.escape(tmp), PREFIX + "*")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:  # not ours (mode 0700), or just removed
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a running gateway's
            continue
        else:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)


def worker_exited(pid: int) -> None:
    """Drop the live gauges (in-flight requests, draining) of a worker that ended; its counters
    stay, since the requests it served are still the gateway's."""
    path = os.environ.get(ENV)
    if not path:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, path)
