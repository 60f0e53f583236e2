"""What the model fakes (Bedrock runtime, Gemini) answer, and how their streams misbehave.

A test queues answers (``answer(...)``, consumed one per model call, oldest first; with none
queued the fake says a fixed greeting) and stream faults; the server thread takes them. Both
are thread-safe: the test thread queues while the fake's loop serves.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

A = TypeVar("A")


class AnswerQueue(Generic[A]):
    def __init__(self, default: A) -> None:
        self._default = default
        self._queue: deque[A] = deque()
        self._lock = threading.Lock()

    def put(self, answer: A) -> None:
        with self._lock:
            self._queue.append(answer)

    def take(self) -> A:
        with self._lock:
            return self._queue.popleft() if self._queue else self._default


@dataclass
class StreamFault:
    """Applies to the next stream: after ``after`` events, either send ``error`` (a provider
    error event) and end, or (``error`` None) close the connection without a terminal event."""
    after: int
    error: str | None = None
    message: str = "The model stream failed."


@dataclass
class StreamControl:
    faults: deque[StreamFault] = field(default_factory=deque)
    gates: deque[tuple[int, threading.Event]] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    open_streams: int = 0
    streams_completed: int = 0
    client_disconnects: int = 0

    def add_fault(self, fault: StreamFault) -> None:
        with self.lock:
            self.faults.append(fault)

    def add_gate(self, after: int) -> threading.Event:
        """The next stream sends ``after`` events, then waits (at most 30 s) until the returned
        event is set: a test can see what reached its client before the rest is sent."""
        gate = threading.Event()
        with self.lock:
            self.gates.append((after, gate))
        return gate

    def take(self) -> tuple[StreamFault | None, tuple[int, threading.Event] | None]:
        with self.lock:
            return (self.faults.popleft() if self.faults else None,
                    self.gates.popleft() if self.gates else None)


async def wait_gate(gate: threading.Event, gone: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Wait for a test's gate from the fake's loop without blocking it (bounded); True if the
    client went away meanwhile (what a gateway that closes the upstream call looks like)."""
    deadline = time.monotonic() + timeout
    while not gate.is_set() and time.monotonic() < deadline:
        if gone():
            return True
        await asyncio.sleep(0.005)
    return gone()


def chunks(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def json_chunks(value: Any, size: int) -> list[str]:
    import orjson
    return chunks(orjson.dumps(value).decode(), size)
