"""Faults the fake upstreams inject on cue: an error answer, a connection closed without one
(optionally after part of the body), or a delay. Each fault is consumed by the next request(s)
whose path starts with its ``path``; the test thread queues them while the server thread takes
them, hence the lock."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class Fault:
    kind: Literal["fail", "reset", "delay"]
    times: int
    path: str | None = None
    status: int = 500
    body: Any = None
    headers: dict[str, str] | None = None
    seconds: float = 0.0
    after_bytes: int | None = None

    def matches(self, path: str) -> bool:
        return self.path is None or path.startswith(self.path)


class FaultQueue:
    """Queued faults, oldest first; thread-safe."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        if fault.times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(fault)

    def take(self, path: str) -> Fault | None:
        """The oldest fault for ``path``, counted as used once (None when there is none)."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(path):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
