"""Sans-IO HTTP/1.1 response parsing: feed bytes, get an :class:`H1Response` back when it is
complete (``feed``), or the head then the body pieces as they come (``feed_stream``). The
framing of a body -- Content-Length, chunked, until close -- is decided by the head, as in h11."""
from __future__ import annotations

import re
from typing import Any

import orjson
from multidict import CIMultiDict

from .errors import H1ProtocolError


class H1Response:
    """A response (or, from ``feed_stream``, its head with an empty body). ``headers`` is cut
    from the validated head block when first read: the gateway's hot paths never read an
    upstream's headers on success (issue 10), and an OpenAI answer carries twenty of them."""

    __slots__ = ("status", "reason", "body", "keep_alive", "_headers", "_block", "_start")

    def __init__(self, status: int, reason: str, body: bytes, keep_alive: bool, block: str, start: int) -> None:
        self.status = status
        self.reason = reason
        self.body = body
        self.keep_alive = keep_alive
        self._headers: CIMultiDict[str] | None = None
        self._block = block   # the head, validated (its fields from ``start``), until headers is read
        self._start = start

    @property
    def headers(self) -> CIMultiDict[str]:
        headers = self._headers
        if headers is None:
            headers = self._headers = CIMultiDict(_fields(self._block, self._start))
            self._block = ""
        return headers

    def json(self) -> Any:
        return orjson.loads(self.body)


def _fields(text: str, start: int) -> list[tuple[str, str]]:
    """The (name, value) pairs of a validated head's field lines from ``start`` (through the
    last line's CRLF), the optional whitespace around each value dropped (RFC 9112 §5)."""
    if start == len(text):
        return []
    pairs: list[tuple[str, str]] = []
    append = pairs.append
    for line in text[start:-2].split("\r\n"):
        name, _, value = line.partition(":")
        append((name, value.strip(" \t")))
    return pairs


def _joined_values(text: str, low: str, key: str, at: int) -> str:
    """The values of every field named by ``key`` (``"\\nname:"``, lower case) in an ASCII
    head ``text`` (``low`` its lower case, same offsets), from the first at ``at``, joined
    with ``","`` as repeated fields combine (RFC 9110 §5.3)."""
    values = []
    while at >= 0:
        at += len(key)
        end = text.index("\r", at)
        values.append(text[at:end].strip(" \t"))
        at = low.find(key, end)
    return values[0] if len(values) == 1 else ",".join(values)


_TOKEN = r"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
# Header lines: a token, a colon, a value without CTLs (HTAB allowed), CRLF. One C-level pass
# validates the whole block; str.split/partition then cut it (faster than capturing groups).
_HEADER_BLOCK_RE = re.compile(rf"(?:{_TOKEN}:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*")
_STATUS_RE = re.compile(r"HTTP/1\.[01] [0-9]{3}(?: [^\x00-\x08\x0a-\x1f\x7f]*)?\r\n")
_HEAD_RE = re.compile(_STATUS_RE.pattern + _HEADER_BLOCK_RE.pattern)  # a whole head, in one pass
_CHUNK_SIZE_RE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?\r?")

_MAX_CHUNK_LINE = 4096
UNBOUNDED = 1 << 62  # max_body_size for streams: no limit (a Content-Length has at most 18 digits)

# parser states
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _EOF, _DONE, _ERROR = range(9)


class ResponseParser:
    """Sans-IO parser for ONE HTTP/1.x response (interim 1xx responses are skipped).

    ``feed(data)`` returns the :class:`H1Response` once it is complete, else ``None``.
    ``feed_eof()`` completes a close-delimited body (returns the response) and raises
    :class:`H1ProtocolError` if the response is incomplete; after completion it returns None.
    Bytes past the end of the response are kept in :attr:`surplus`; on a keep-alive response
    they are an error (we never pipeline, so the server sent something unasked for).
    ``head_request=True``: the response answers a HEAD request and has no body.
    ``feed_stream(data)`` is the incremental mode (head, then body pieces as they come).
    """

    __slots__ = (
        "max_header_size", "max_body_size", "head_request", "surplus",
        "_buf", "_scan", "_state", "_need", "_parts", "_size", "_trailer_size",
        "_status", "_reason", "_block", "_start", "_keep_alive", "_seen",
    )

    def __init__(self, max_header_size: int = 64 * 1024, max_body_size: int = 64 * 1024 * 1024, *,
                 head_request: bool = False) -> None:
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self.head_request = head_request
        self.surplus = b""
        self._buf = bytearray()  # unconsumed bytes (only while a head / line is incomplete)
        self._scan = 0  # where to resume searching for the end of the head in _buf
        self._state = _HEAD
        self._need = 0
        self._parts: list[bytes | bytearray] = []
        self._size = 0
        self._trailer_size = 0
        self._status = 0
        self._reason = ""
        self._block = ""  # the validated head; its fields begin at _start
        self._start = 0
        self._keep_alive = False
        self._seen = False

    # -- public

    @property
    def complete(self) -> bool:
        return self._state == _DONE

    @property
    def needs_eof(self) -> bool:
        """The body is close-delimited: only the end of the connection completes it."""
        return self._state == _EOF

    @property
    def started(self) -> bool:
        """Any byte has been received."""
        return self._seen

    @property
    def length_left(self) -> int:
        """Bytes of a Content-Length body still to come (0 for any other framing or state):
        the bytes a caller may move past the parser (:meth:`skip_length`)."""
        return self._need if self._state == _LENGTH and not self._buf and not self._parts else 0

    def skip_length(self, n: int) -> None:
        """``n`` bytes of a Content-Length body were consumed elsewhere (spliced to the
        client, proxy/splice.py): account for them as if fed."""
        if self._state != _LENGTH or not 0 < n <= self._need:
            raise H1ProtocolError("skipped bytes beyond the body")
        self._need -= n
        if not self._need:
            self._state = _DONE

    def feed(self, data: bytes) -> H1Response | None:
        state = self._state
        if state == _DONE:
            if data:
                self.surplus += data
                if self._keep_alive:
                    self._state = _ERROR
                    raise H1ProtocolError("unexpected data after response")
            return None
        if state == _ERROR:
            raise H1ProtocolError("parser is in an error state")
        if not data:
            return None
        if state == _HEAD and not self._buf and type(data) is bytes:
            return self._feed_first(data)
        self._advance(data)
        return self._response() if self._state == _DONE else None

    def _feed_first(self, data: bytes) -> H1Response | None:
        """``feed`` of a response's first bytes (nothing held yet): a small response mostly
        arrives whole in one read, so its head is read here and a ``Content-Length`` body (or
        none) is cut straight from ``data``; anything else continues in the state machine."""
        self._seen = True
        n = len(data)
        try:
            pos = self._head(data, 0, n)
        except H1ProtocolError:
            self._state = _ERROR
            raise
        state = self._state
        if state == _LENGTH and n - pos >= self._need or state == _DONE:
            end = pos + self._need if state == _LENGTH else pos
            self._state = _DONE
            if end < n:
                self.surplus = data[end:]
                if self._keep_alive:
                    self._state = _ERROR
                    raise H1ProtocolError("unexpected data after response")
            return self._answer(data[pos:end])
        if state == _HEAD and pos == 0:  # the head is incomplete: kept, as _advance keeps it
            self._buf += data
            return None
        self._advance(data, pos)  # a skipped 1xx head, or another framing, or a partial body
        return self._response() if self._state == _DONE else None

    def _advance(self, data: bytes | bytearray, start: int = 0) -> None:
        """Run the state machine over the held bytes plus ``data`` (from ``start``, with nothing
        held); keep what is unconsumed."""
        self._seen = True
        buf = self._buf
        if buf:
            buf += data
            data = buf
        try:
            pos = self._run(data, start)
        except H1ProtocolError:
            self._state = _ERROR
            raise
        n = len(data)
        if self._state == _DONE:
            if pos < n:
                self.surplus = bytes(data[pos:])
                if self._keep_alive:
                    self._state = _ERROR
                    raise H1ProtocolError("unexpected data after response")
            if data is buf:
                buf.clear()
        elif data is buf:
            if pos:
                del buf[:pos]
        elif pos < n:
            buf += memoryview(data)[pos:]

    def feed_stream(self, data: bytes) -> tuple[H1Response | None, bytes]:
        """Incremental mode: ``(head, body)`` for what ``data`` completed.

        ``head`` is an :class:`H1Response` with an empty body, returned once, by the call that
        completes the head (else None). ``body`` is all the body data (framing stripped) this
        call decoded, b"" if none; a chunk's data is returned as it arrives, not when the chunk
        is whole. :attr:`complete` tells when the body is done; a close-delimited body
        (:attr:`needs_eof`) is ended by :meth:`feed_eof`. Errors and surplus bytes as for
        :meth:`feed` (body data decoded by the failing call is dropped). Use one mode per
        parser; create it with ``max_body_size=UNBOUNDED`` for an unbounded stream.
        """
        state = self._state
        if state == _DONE or state == _ERROR or not data:
            self.feed(data)  # surplus (an error on a keep-alive response) / sticky error / no-op
            return None, b""
        self._advance(data)
        head = None
        if state == _HEAD and self._state != _HEAD:
            head = self._answer(b"")
        parts = self._parts
        if not parts:
            return head, b""
        self._parts = []
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        return head, body if type(body) is bytes else bytes(body)

    def feed_eof(self) -> H1Response | None:
        state = self._state
        if state == _EOF:
            self._state = _DONE
            return self._response()
        if state == _DONE:
            return None
        if state == _HEAD and not self.started:
            raise H1ProtocolError("connection closed before any response byte")
        self._state = _ERROR
        raise H1ProtocolError("connection closed before the response was complete")

    # -- internals

    def _response(self) -> H1Response:
        parts = self._parts
        if not parts:
            body = b""
        elif len(parts) == 1:
            body = bytes(parts[0])
        else:
            body = b"".join(parts)
        self._parts = []
        return self._answer(body)

    def _answer(self, body: bytes) -> H1Response:
        return H1Response(self._status, self._reason, body, self._keep_alive, self._block, self._start)

    def _run(self, buf: bytes | bytearray, pos: int = 0) -> int:
        """Consume as much of ``buf`` from ``pos`` as possible; return the position reached.
        The head is read first; then the reader its framing chose (h11's model: one reader per
        framing, Content-Length, chunked or until close) takes the body."""
        n = len(buf)
        while self._state == _HEAD:
            new = self._head(buf, pos, n)
            if new == pos:  # incomplete head (a skipped 1xx head moves on)
                return pos
            pos = new
        state = self._state
        if state == _LENGTH:
            return self._read_length(buf, pos, n)
        if state == _EOF:
            return self._read_until_close(buf, pos, n)
        if state == _DONE:
            return pos
        return self._read_chunked(buf, pos, n)

    # -- body readers, one per framing

    def _read_length(self, buf: bytes | bytearray, pos: int, n: int) -> int:
        """Content-Length: exactly ``_need`` more bytes."""
        avail = n - pos
        need = self._need
        if avail < need:
            if avail:
                self._parts.append(buf[pos:])
                self._need = need - avail
            return n
        self._parts.append(buf[pos:pos + need])
        self._state = _DONE
        return pos + need

    def _read_until_close(self, buf: bytes | bytearray, pos: int, n: int) -> int:
        """No framing: everything until the connection closes (:meth:`feed_eof`)."""
        if pos < n:
            self._size += n - pos
            if self._size > self.max_body_size:
                raise H1ProtocolError("response body too large")
            self._parts.append(buf[pos:])
        return n

    def _read_chunked(self, buf: bytes | bytearray, pos: int, n: int) -> int:
        """Transfer-Encoding: chunked -- size line, data, CRLF, ..., a zero size, trailers."""
        while True:
            state = self._state
            if state == _CHUNK_SIZE:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    if n - pos > _MAX_CHUNK_LINE:
                        raise H1ProtocolError("chunk size line too long")
                    return pos
                if nl - pos > _MAX_CHUNK_LINE:
                    raise H1ProtocolError("chunk size line too long")
                m = _CHUNK_SIZE_RE.fullmatch(buf, pos, nl)
                if m is None:
                    raise H1ProtocolError("bad chunk size line")
                size = int(m.group(1), 16)
                pos = nl + 1
                if size == 0:
                    self._state = _TRAILERS
                    self._trailer_size = 0
                else:
                    self._size += size
                    if self._size > self.max_body_size:
                        raise H1ProtocolError("response body too large")
                    self._need = size
                    self._state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                avail = n - pos
                if not avail:
                    return pos
                need = self._need
                if avail < need:
                    self._parts.append(buf[pos:])
                    self._need = need - avail
                    return n
                self._parts.append(buf[pos:pos + need])
                pos += need
                self._state = _CHUNK_END
            elif state == _CHUNK_END:
                if pos >= n:
                    return pos
                c = buf[pos]
                if c == 10:  # bare LF
                    pos += 1
                elif c == 13:
                    if pos + 1 >= n:
                        return pos
                    if buf[pos + 1] != 10:
                        raise H1ProtocolError("bad chunk terminator")
                    pos += 2
                else:
                    raise H1ProtocolError("bad chunk terminator")
                self._state = _CHUNK_SIZE
            else:  # _TRAILERS
                nl = buf.find(b"\n", pos)
                limit = self.max_header_size - self._trailer_size
                if nl < 0:
                    if n - pos > limit:
                        raise H1ProtocolError("trailer section too large")
                    return pos
                if nl - pos > limit:
                    raise H1ProtocolError("trailer section too large")
                line_len = nl - pos
                if line_len == 0 or (line_len == 1 and buf[pos] == 13):
                    self._state = _DONE
                    return nl + 1
                self._trailer_size += line_len + 1  # trailer fields are skipped
                pos = nl + 1

    # -- head

    def _head(self, buf: bytes | bytearray, pos: int, n: int) -> int:
        # The head ends at the first empty line: "\n\r\n" (CRLF heads) or "\n\n" (bare LF).
        start = pos + self._scan
        i = buf.find(b"\n\r\n", start)
        if i >= 0:
            end, nxt = i + 1, i + 3
        else:
            j = buf.find(b"\n\n", start)
            if j < 0:
                if n - pos > self.max_header_size:
                    raise H1ProtocolError("response header section too large")
                self._scan = max(0, n - pos - 2)  # relative to the start of the kept bytes
                return pos
            end, nxt = j + 1, j + 2
        self._scan = 0
        if nxt - pos > self.max_header_size:
            raise H1ProtocolError("response header section too large")
        text = buf[pos:end].decode("utf-8", "surrogateescape")
        if _HEAD_RE.fullmatch(text) is None:
            # Not a clean CRLF head: maybe bare-LF line ends (the head may then end earlier,
            # at a "\n\n" the CRLF search skipped), else an error.
            if i >= 0:
                j = buf.find(b"\n\n", pos, i + 2)
                if j >= 0:
                    end, nxt = j + 1, j + 2
                    text = buf[pos:end].decode("utf-8", "surrogateescape")
            text = _normalize_head(text)
            if _HEAD_RE.fullmatch(text) is None:
                if _STATUS_RE.match(text) is None:
                    raise H1ProtocolError(f"bad status line: {text.partition(chr(13))[0][:60]!r}")
                block = text[text.index("\n") + 1:]
                if block[:1] in (" ", "\t") or "\n " in block or "\n\t" in block:
                    raise H1ProtocolError("obs-fold header line not supported")
                raise H1ProtocolError("invalid header line")
        # validated: "HTTP/1.x NNN[ reason]\r\n" then "name:value\r\n" lines
        hstart = text.index("\n") + 1
        status = int(text[9:12])
        if status < 200:
            if status == 101:
                raise H1ProtocolError("unexpected 101 Switching Protocols")
            if status < 100:
                raise H1ProtocolError(f"bad status code {status}")
            return nxt  # interim 1xx: skipped, the real response follows
        self._status = status
        self._reason = text[13:hstart - 2]
        http11 = text[7] == "1"

        # The framing fields, found in the (validated) block without cutting every line: in an
        # ASCII head each field line follows a "\n" and lower() keeps every offset; the fields
        # themselves are cut only if someone reads H1Response.headers.
        self._block, self._start = text, hstart
        content_length = transfer_encoding = connection = None
        if hstart != len(text):
            if text.isascii():
                low = text.lower()
                if (at := low.find("\ncontent-length:", hstart - 1)) >= 0:
                    content_length = _joined_values(text, low, "\ncontent-length:", at)
                if (at := low.find("\ntransfer-encoding:", hstart - 1)) >= 0:
                    transfer_encoding = _joined_values(text, low, "\ntransfer-encoding:", at)
                if (at := low.find("\nconnection:", hstart - 1)) >= 0:
                    connection = _joined_values(text, low, "\nconnection:", at)
            else:  # non-ASCII values: lower() may change lengths; read the lines one by one
                for name, value in _fields(text, hstart):
                    name = name.lower()
                    if name == "content-length":
                        content_length = value if content_length is None else f"{content_length},{value}"
                    elif name == "transfer-encoding":
                        transfer_encoding = value if transfer_encoding is None else f"{transfer_encoding},{value}"
                    elif name == "connection":
                        connection = value if connection is None else f"{connection},{value}"
        if connection is None:
            keep_alive = http11
        else:
            connection = connection.lower()
            tokens = [t.strip() for t in connection.split(",")] if "," in connection else (connection,)
            keep_alive = "close" not in tokens and (http11 or "keep-alive" in tokens)

        if self.head_request or status == 204 or status == 304:
            self._keep_alive = keep_alive
            self._state = _DONE
            return nxt
        if transfer_encoding is not None:
            codings = [t.strip() for t in transfer_encoding.lower().split(",")]
            if content_length is not None:
                keep_alive = False  # both present: TE wins, but never reuse (smuggling hazard)
            if codings[-1] == "chunked":
                self._state = _CHUNK_SIZE
            else:
                keep_alive = False
                self._state = _EOF
        elif content_length is not None:
            v = content_length
            if "," in v:  # repeated (header or list): all copies must agree
                values = {x.strip() for x in v.split(",")}
                if len(values) != 1:
                    raise H1ProtocolError("conflicting Content-Length values")
                v = values.pop()
            if not (v.isascii() and v.isdigit()) or len(v) > 18:
                raise H1ProtocolError("bad Content-Length")
            length = int(v)
            if length > self.max_body_size:
                raise H1ProtocolError("response body too large")
            if length == 0:
                self._state = _DONE
            else:
                self._need = length
                self._state = _LENGTH
        else:
            keep_alive = False
            self._state = _EOF
        self._keep_alive = keep_alive
        return nxt


def _normalize_head(text: str) -> str:
    """A head with bare-LF line ends, rewritten with CRLF (a stray CR is an error)."""
    lf = text.replace("\r\n", "\n")
    if "\r" in lf:
        raise H1ProtocolError("bare CR in response head")
    return lf.replace("\n", "\r\n")
