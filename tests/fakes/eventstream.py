"""AWS event-stream framing (``application/vnd.amazon.eventstream``), the encoder side.

botocore only decodes (``botocore/eventstream.py``), so the frames are built here from AWS's
spec of the binary format (tests/fakes/README.md, "Bedrock runtime"): one message is

    prelude   total length (uint32) | headers length (uint32) | CRC32 of those 8 bytes (uint32)
    headers   per header: name length (uint8) | name (UTF-8) | value type (uint8, 7 = string)
              | value length (uint16) | value (UTF-8)
    payload   the event's JSON
    CRC32     of everything before it (prelude included)

all big-endian. ``tests/test_bridge_converse.py`` checks every frame against botocore's own
``EventStreamBuffer`` decoder.
"""
from __future__ import annotations

import struct
from binascii import crc32

import orjson

_STRING = 7


def encode_headers(headers: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        out += struct.pack("!B", len(raw_name)) + raw_name
        out += struct.pack("!BH", _STRING, len(raw_value)) + raw_value
    return bytes(out)


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    raw_headers = encode_headers(headers)
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(raw_headers))
    prelude += struct.pack("!I", crc32(prelude) & 0xFFFFFFFF)
    message = prelude + raw_headers + payload
    return message + struct.pack("!I", crc32(message) & 0xFFFFFFFF)


def event_frame(event_type: str, body: dict[str, object]) -> bytes:
    """An ``event`` message: what botocore parses into ``{event_type: body}``."""
    return encode_message({":event-type": event_type, ":content-type": "application/json",
                           ":message-type": "event"}, orjson.dumps(body))


def exception_frame(exception_type: str, message: str) -> bytes:
    """An ``exception`` message: botocore raises it as ``EventStreamError`` with
    ``Error.Code == exception_type``."""
    return encode_message({":exception-type": exception_type, ":content-type": "application/json",
                           ":message-type": "exception"}, orjson.dumps({"message": message}))
