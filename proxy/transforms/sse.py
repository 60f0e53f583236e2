"""Sans-IO Server-Sent Events splitter (WHATWG HTML §9.2 parsing rules, bytes in, events out).

The gateway never holds an SSE stream back: bytes go to the client first, and this parser
only *observes* a copy to learn response ids, usage and the last ``sequence_number``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SSEEvent:
    event: str | None      # the ``event:`` field, if any
    data: bytes            # ``data:`` lines joined with b"\n"
    id: str | None = None


class EventTooLarge(Exception):
    pass


class SSEParser:
    def __init__(self, max_event_size: int = 16 << 20) -> None:
        self.max_event_size = max_event_size
        self._buf = b""
        self._pending_cr = False

    def feed(self, data: bytes | memoryview) -> list[SSEEvent]:
        chunk = bytes(data)
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk.endswith(b"\r"):
            # Might be the first half of a CRLF split across feeds.
            chunk = chunk[:-1]
            self._pending_cr = True
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._buf + chunk if self._buf else chunk
        events: list[SSEEvent] = []
        start = 0
        while True:
            end = buf.find(b"\n\n", start)
            if end < 0:
                break
            ev = _parse_block(buf[start:end])
            if ev is not None:
                events.append(ev)
            start = end + 2
        self._buf = buf[start:]
        if len(self._buf) > self.max_event_size:
            self._buf = b""
            raise EventTooLarge(f"an SSE event exceeded {self.max_event_size} bytes")
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: an unterminated final event is dropped (per the WHATWG event-stream
        rules, which the SDK follows: docs/provider-facts.md §2.7).

        A CR held back as the possible first half of a CRLF is a line end now that nothing
        follows, and may complete the last event.
        """
        events = []
        if self._pending_cr:
            self._pending_cr = False
            events = self.feed(b"\n")
        self._buf = b""
        return events


def _parse_block(block: bytes) -> SSEEvent | None:
    event: str | None = None
    ident: str | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[:1] == b":":
            continue
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode("utf-8", "replace")
        elif name == b"id":
            ident = value.decode("utf-8", "replace")
    if not data and event is None:
        return None
    return SSEEvent(event=event, data=b"\n".join(data), id=ident)
