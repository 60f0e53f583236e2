"""Zero-copy forwarding of a body from one socket to another: Linux ``splice(2)`` through a
pipe, so the bytes of a pass-through download never enter the process (HAProxy's and Envoy's
trick for large bodies).

Read and write through Python, a download costs two kernel copies per byte (socket → bytes
object → socket) plus a wake-up of the handler per socket read; on a 2-core VM that alone
held a 512 MiB pass-through download to ~0.75x of the upstream's direct rate. Spliced, the
upstream socket's pages are moved into a pipe and from the pipe into the client socket.

Only for what can be moved verbatim: a ``Content-Length`` body (its framing is the bytes
themselves) between two plain TCP/Unix sockets (TLS on either side needs the bytes in user
space) when no filter observes the response data. Everything else takes the normal path.

Both transports stay with the event loop: the upstream one with reading paused, the client
one with an empty write buffer (so the spliced bytes follow what aiohttp wrote, in order).
The loop watches duplicates of the two descriptors, never the transports' own.
"""
from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Callable

AVAILABLE = sys.platform.startswith("linux") and hasattr(os, "splice")
PIPE_SIZE = 1 << 20  # /proc/sys/fs/pipe-max-size's default: what an unprivileged process may ask
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
# Bytes are given to the destination a pipe-full at a time (or when the body is all taken, or
# the source has paused): fewer, larger writes, so the client wakes less often.
PUSH_AT = PIPE_SIZE
# How long the mover keeps polling an idle source, one event-loop turn per poll (so every other
# task still runs), before it sleeps on the source's readiness: while the loop keeps turning,
# the upstream's writes wake nobody, where waking a sleeping loop costs the sender a cross-core
# interrupt (the dearest part of a chunk on a VM). 512 MiB pass-through download, 2-core VM,
# bench/run.py --only download: 0.51-0.68x of direct MB/s without it, 0.64-0.94x with it (the
# box's speed drifts between runs; the direct column itself moved 1,200-1,700 MB/s).
# A source slower than that (SPIN_MISSES windows in a row with nothing) is not polled again
# until one of its pauses is short again (under SHORT_GAP): a trickling upstream costs a few
# windows, not a busy loop.
SPIN = 0.0002
SPIN_MISSES = 3
SHORT_GAP = 0.002  # a sleep on the source this short says polling is worth trying again
_YIELD_EVERY = 8  # rounds (up to a pipe-full each) between two turns of the event loop
_GONE = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN})


class SpliceClosed(ConnectionError):
    """A side closed or reset its connection before the whole body was moved."""


@dataclass(slots=True)
class BodyHandover:
    """The rest of a response body, handed over to be moved socket to socket.

    ``pieces``: body bytes already read (they go first, through the normal writer); then
    ``left`` bytes are to be spliced from ``fd``. ``done(moved_all)`` gives the upstream
    connection back (to its pool when the whole body was moved, else closed); call it once,
    whatever happened. ``idle`` / ``deadline``: the upstream read timeout (longest wait for a
    byte from it) and the absolute loop time the exchange must end by, or None.
    """

    fd: int
    left: int
    done: Callable[[bool], None]
    pieces: list[bytes] = field(default_factory=list)
    idle: float | None = None
    deadline: float | None = None


def plain_socket_fd(transport: asyncio.BaseTransport | None) -> int | None:
    """The descriptor of a transport's socket if its bytes are the wire's (no TLS), else None."""
    if not AVAILABLE or transport is None or transport.is_closing():
        return None
    if transport.get_extra_info("sslcontext") is not None or transport.get_extra_info("ssl_object") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_STREAM:
        return None
    fd = sock.fileno()
    return fd if fd >= 0 else None


async def _ready(loop: asyncio.AbstractEventLoop, read_fd: int | None, write_fd: int | None,
                 timeout: float | None) -> bool:
    """Wait until ``read_fd`` is readable or ``write_fd`` writable; False on timeout."""
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    if read_fd is not None:
        loop.add_reader(read_fd, wake)
    if write_fd is not None:
        loop.add_writer(write_fd, wake)
    try:
        async with asyncio.timeout(timeout):
            await fut
        return True
    except TimeoutError:
        return False
    finally:
        if read_fd is not None:
            loop.remove_reader(read_fd)
        if write_fd is not None:
            loop.remove_writer(write_fd)


async def flush(transport: asyncio.WriteTransport, fd: int) -> None:
    """Until the transport's write buffer is empty (what it holds must precede spliced bytes)."""
    loop = asyncio.get_running_loop()
    dup = os.dup(fd)
    try:
        while transport.get_write_buffer_size():
            if transport.is_closing():
                raise SpliceClosed("the client connection closed")
            await _ready(loop, None, dup, None)
            await asyncio.sleep(0)  # let the transport's own writer run first
    finally:
        os.close(dup)


def _splice(fd_in: int, fd_out: int, n: int, side: str) -> int:
    """One non-blocking splice(2): bytes moved, 0 at the source's EOF, -1 when it would block."""
    try:
        return os.splice(fd_in, fd_out, n, flags=_FLAGS)
    except BlockingIOError:
        return -1
    except OSError as exc:
        if exc.errno in _GONE:
            raise SpliceClosed(f"the {side} connection closed or was reset mid-body") from exc
        raise


async def move(src_fd: int, dst_fd: int, length: int, *, idle: float | None = None,
               deadline: float | None = None) -> None:
    """Move exactly ``length`` bytes from socket ``src_fd`` to socket ``dst_fd`` (both
    non-blocking, neither read nor written by anyone else meanwhile). Raises
    :class:`SpliceClosed` when a side goes away first, :class:`TimeoutError` when the source
    sends nothing for ``idle`` seconds (not counting waits for the destination, the slow
    side then) or ``deadline`` (loop time) passes."""
    loop = asyncio.get_running_loop()
    src = os.dup(src_fd)
    dst = os.dup(dst_fd)
    rd, wr = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        try:
            room = fcntl.fcntl(wr, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:
            room = 64 * 1024  # the default pipe size
        push_at = min(PUSH_AT, room)
        left = length   # still to take from the source
        held = 0        # in the pipe, still to give to the destination
        last = loop.time()
        since_yield = 0  # rounds that moved bytes since the loop last ran something else
        spin_until: float | None = None  # polling the source without sleeping until then
        misses = 0      # polling windows in a row that ended with nothing from the source
        push = False    # give what the pipe holds to the destination even if below push_at
        while left or held:
            moved = False
            if left and held < room:
                n = _splice(src, wr, min(left, room - held), "upstream")
                if n == 0:
                    raise SpliceClosed("the upstream closed the connection mid-body")
                if n > 0:
                    left -= n
                    held += n
                    moved = True
                    last = loop.time()
                    if spin_until is not None:
                        misses = 0  # the poll paid off
            if held and (push or held >= push_at or not left):
                n = _splice(rd, dst, held, "client")
                if n > 0:
                    held -= n
                    moved = True
            if moved:
                spin_until = None
                push = False
                since_yield += 1
                if since_yield >= _YIELD_EVERY:
                    # Both sides keep up: let the rest of the loop run now and then (and the
                    # total deadline bite), as a read/write loop would at each await.
                    since_yield = 0
                    if deadline is not None and loop.time() >= deadline:
                        raise TimeoutError("the exchange took longer than its total timeout")
                    await asyncio.sleep(0)
                continue
            since_yield = 0
            # Nothing moved. Poll a little longer before sleeping: bytes arriving while this
            # task runs wake nobody, where a sleeping loop costs the sender a cross-core wake-up
            # per write (on a VM the dearest part of moving a chunk).
            now = loop.time()
            if misses < SPIN_MISSES and (left or held):
                if spin_until is None:
                    spin_until = now + SPIN
                if now < spin_until:
                    await asyncio.sleep(0)
                    continue
                misses += 1
            spin_until = None
            if held and not push:
                push = True  # the source has paused: what the pipe holds goes out before any sleep
                continue
            push = False
            # Wait for the source (room in the pipe) or the destination (bytes held).
            want_src = bool(left) and held < room
            wait = None if deadline is None else deadline - now
            if idle is not None and want_src and not held:
                gap = last + idle - now
                wait = gap if wait is None else min(wait, gap)
            if wait is not None and wait <= 0 or not await _ready(
                    loop, src if want_src else None, dst if held else None, wait):
                if deadline is not None and loop.time() >= deadline:
                    raise TimeoutError("the exchange took longer than its total timeout")
                if idle is not None and loop.time() >= last + idle:
                    raise TimeoutError(f"no data from the upstream for {idle:g} s")
            elif want_src and loop.time() - now < SHORT_GAP:
                misses = 0  # the source came back soon after all: poll it again next time
    finally:
        for fd in (rd, wr, src, dst):
            os.close(fd)
