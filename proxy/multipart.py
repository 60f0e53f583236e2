"""Sans-IO incremental ``multipart/form-data`` parser.

Like h11, :class:`MultipartParser` is a plain object: the caller feeds it the request body in
chunks of any size and gets back a list of events (:class:`Field`, :class:`FileStart`,
:class:`FileData`, :class:`FileEnd`, :class:`Done`). It never does I/O and never buffers a
file part, so memory stays bounded whatever the upload size.

Hot path: file content is scanned with ``bytes.find`` for the delimiter
``b"\\r\\n--" + boundary``. Between feeds only a tail that could be the start of a delimiter is
kept (at most ``len(delimiter) - 1`` bytes, and only when that tail begins with ``\\r``), so
a chunk without a delimiter is usually passed on as the very same ``bytes`` object.

Events are the same whatever the split of the input: file content may arrive in different
``FileData`` pieces, but their concatenation is identical.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

__all__ = [
    "Done",
    "Field",
    "FileData",
    "FileEnd",
    "FileStart",
    "MultipartError",
    "MultipartParser",
    "boundary_from_content_type",
]


class MultipartError(Exception):
    """Malformed body. str(exc) is a clear one-sentence message suitable for a 400 error."""


@dataclass(slots=True)
class Field:
    """A complete non-file part (its Content-Disposition has no filename parameter)."""

    name: str
    value: str


@dataclass(slots=True)
class FileStart:
    """A part whose Content-Disposition has a filename parameter (possibly empty).

    ``headers`` are the part's headers in order, names lower-cased, values stripped.
    """

    name: str
    filename: str
    content_type: str | None
    headers: list[tuple[str, str]]


@dataclass(slots=True)
class FileData:
    """A non-empty piece of the current file part's content."""

    data: bytes | memoryview


@dataclass(slots=True)
class FileEnd:
    name: str


@dataclass(slots=True)
class Done:
    """The closing delimiter was seen; anything after it (the epilogue) is ignored."""


Event = Field | FileStart | FileData | FileEnd | Done

# --- header values --------------------------------------------------------------------------

# One ``; key=value`` parameter; the value is a quoted-string (group 2, backslash escapes
# allowed) or a token (group 3). An empty parameter (``;;`` or a trailing ``;``) is allowed.
_PARAM_RE = re.compile(
    r'\s*;\s*(?:([^\s=;"]+)\s*(?:=\s*(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^;"]*)))?)?\s*', re.S
)
_BACKSLASH_ESCAPE_RE = re.compile(r'\\([\\"])')
# Browsers and httpx (so the OpenAI SDK) write ", CR and LF in a quoted name/filename as
# %22, %0D and %0A; the WHATWG fetch spec's multipart parser decodes exactly these three.
_WHATWG_ESCAPE_RE = re.compile(r"%(0A|0D|22)")
_WHATWG_UNESCAPED = {"0A": "\n", "0D": "\r", "22": '"'}
_EXT_VALUE_RE = re.compile(r"([^']*)'[^']*'(.*)", re.S)  # RFC 5987: charset'language'pct-encoded
# RFC 2046 bcharsnospace plus space (a boundary must not end with a space).
_BOUNDARY_RE = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_PADDING_RE = re.compile(rb"[ \t]*")


def _parse_header_value(value: str) -> tuple[str, dict[str, str]]:
    """Split ``main; k1=v1; k2="v 2"`` into the lower-cased main value and its parameters.

    Parameter names are lower-cased; the first occurrence of a name wins.
    """
    main = value.split(";", 1)[0]
    params: dict[str, str] = {}
    pos, end = len(main), len(value)
    while pos < end:
        m = _PARAM_RE.match(value, pos)
        if m is None:
            raise MultipartError(f"Malformed parameters in header value {value!r}.")
        key, quoted, token = m.groups()
        if key is not None:
            if quoted is not None:
                v = _BACKSLASH_ESCAPE_RE.sub(r"\1", quoted)
                v = _WHATWG_ESCAPE_RE.sub(lambda e: _WHATWG_UNESCAPED[e.group(1)], v)
            else:
                v = (token or "").strip()
            params.setdefault(key.lower(), v)
        pos = m.end()
    return main.strip().lower(), params


def _decode_ext_value(value: str) -> str:
    """Decode an RFC 5987 ``filename*`` value such as ``UTF-8''na%C3%AFve.txt``."""
    m = _EXT_VALUE_RE.fullmatch(value)
    if m is None or not m.group(1):
        raise MultipartError(f"Malformed filename* parameter {value!r}.")
    try:
        return unquote_to_bytes(m.group(2)).decode(m.group(1))
    except (LookupError, UnicodeDecodeError):
        raise MultipartError(f"filename* parameter {value!r} cannot be decoded.") from None


def boundary_from_content_type(content_type: str | None) -> bytes:
    """Parse 'multipart/form-data; boundary=...' (quoted or not, any param order, case-insensitive
    media type). Raise MultipartError if not multipart/form-data or no/invalid boundary
    (RFC 2046: 1..70 chars)."""
    if not content_type:
        raise MultipartError("Content-Type must be multipart/form-data.")
    media_type, params = _parse_header_value(content_type)
    if media_type != "multipart/form-data":
        raise MultipartError(f"Content-Type must be multipart/form-data, not {media_type!r}.")
    boundary = params.get("boundary")
    if boundary is None:
        raise MultipartError("Content-Type multipart/form-data has no boundary parameter.")
    if not _BOUNDARY_RE.fullmatch(boundary):
        raise MultipartError(f"Invalid multipart boundary {boundary!r} (RFC 2046 allows 1-70 characters).")
    return boundary.encode("ascii")


def _parse_part_headers(block: bytes) -> tuple[str, str | None, str | None, list[tuple[str, str]]]:
    """Parse a part's header block (without the blank line that ends it).

    Returns (name, filename or None for a plain field, content type or None, headers).
    """
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        # Not UTF-8: keep every byte as one character rather than reject the upload.
        text = block.decode("latin-1")
    headers: list[tuple[str, str]] = []
    for line in text.split("\r\n") if text else ():
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not name:
            raise MultipartError(f"Malformed part header line {line[:100]!r}.")
        headers.append((name.lower(), value.strip()))

    disposition = next((v for n, v in headers if n == "content-disposition"), None)
    if disposition is None:
        raise MultipartError("A multipart part has no Content-Disposition header.")
    disp_type, params = _parse_header_value(disposition)
    if disp_type != "form-data" or "name" not in params:
        raise MultipartError(
            f"A multipart part's Content-Disposition must be form-data with a name, not {disposition!r}."
        )
    if "filename*" in params:  # RFC 5987 form takes precedence over the plain one
        filename: str | None = _decode_ext_value(params["filename*"])
    else:
        filename = params.get("filename")
    content_type = next((v for n, v in headers if n == "content-type"), None)
    return params["name"], filename, content_type, headers


# --- the parser -----------------------------------------------------------------------------

# Parser states.
_PREAMBLE = 0  # before the first delimiter; bytes are discarded
_DELIMITER = 1  # just after "\r\n--boundary": "--" closes, anything else starts a boundary line
_BOUNDARY_LINE = 2  # skipping transport padding up to the CRLF that ends the boundary line
_HEADERS = 3  # collecting a part's header block up to CRLF CRLF
_BODY = 4  # a part's content, up to the next delimiter
_DONE = 5  # closing delimiter seen; everything else is ignored
_FAILED = 6  # a MultipartError was raised; the parser cannot continue

_CR = 0x0D
_LF = 0x0A
_DASH = 0x2D


class MultipartParser:
    """Incremental multipart/form-data parser; see the module docstring.

    ``feed()`` returns the events completed by the data so far. A :class:`Field` is emitted
    once its whole value is known; a file part is :class:`FileStart`, zero or more
    :class:`FileData`, :class:`FileEnd`. Any :class:`MultipartError` is final: later calls to
    ``feed()`` raise again.
    """

    def __init__(
        self,
        boundary: bytes,
        *,
        max_field_size: int = 1 << 20,
        max_header_size: int = 16 << 10,
        max_parts: int = 1000,
    ) -> None:
        self._delimiter = b"\r\n--" + bytes(boundary)
        self._max_field_size = max_field_size
        self._max_header_size = max_header_size
        self._max_parts = max_parts
        self._state = _PREAMBLE
        # Unconsumed input carried to the next feed. It starts as a virtual CRLF so that a
        # first delimiter at offset 0 (no CRLF before "--boundary") matches like any other.
        self._pending = b"\r\n"
        self._bytes_fed = 0
        self._parts = 0
        self._header_scan = 0  # bytes of a pending header block already searched for CRLF CRLF
        self._part_name = ""
        self._is_file = False
        self._field_value = bytearray()

    @property
    def done(self) -> bool:
        return self._state == _DONE

    @property
    def bytes_fed(self) -> int:
        return self._bytes_fed

    def close(self) -> None:
        """Call at end of body. Raise MultipartError('... truncated ...') unless Done was emitted."""
        if self._state != _DONE:
            raise MultipartError("The multipart body is truncated: its closing boundary is missing.")

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        self._bytes_fed += len(data)
        if self._state == _DONE or not data:
            return []
        if self._state == _FAILED:
            raise MultipartError("The multipart body is malformed.")
        # Own an immutable copy of mutable input: emitted FileData may be a view of it.
        if type(data) is not bytes:
            data = bytes(data)
        if self._pending:
            data = self._pending + data
        events: list[Event] = []
        try:
            self._pending = data[self._parse(data, events) :]
        except MultipartError:
            self._state = _FAILED
            raise
        return events

    def _parse(self, data: bytes, events: list[Event]) -> int:
        """Consume as much of ``data`` as possible; return the offset of the unconsumed rest."""
        delimiter = self._delimiter
        end = len(data)
        pos = 0
        while pos < end:
            state = self._state
            if state == _BODY or state == _PREAMBLE:
                found = data.find(delimiter, pos)
                if found < 0:
                    keep = self._delimiter_prefix_start(data, pos)
                    if state == _BODY:
                        self._content(data, pos, keep, events)
                    return keep
                if state == _BODY:
                    self._content(data, pos, found, events)
                    self._end_part(events)
                pos = found + len(delimiter)
                self._state = _DELIMITER
            elif state == _DELIMITER:
                if data[pos] == _DASH:
                    if pos + 1 == end:
                        return pos
                    if data[pos + 1] != _DASH:
                        raise MultipartError("The multipart boundary appears inside a part's content.")
                    self._state = _DONE
                    events.append(Done())
                    return end
                self._state = _BOUNDARY_LINE
            elif state == _BOUNDARY_LINE:
                padding = _PADDING_RE.match(data, pos)
                assert padding is not None  # "[ \t]*" matches, if only the empty string
                pos = padding.end()
                if pos == end:
                    return pos
                if data[pos] != _CR:
                    raise MultipartError("The multipart boundary appears inside a part's content.")
                if pos + 1 == end:
                    return pos
                if data[pos + 1] != _LF:
                    raise MultipartError("A multipart boundary line does not end with CRLF.")
                pos += 2
                self._parts += 1
                if self._parts > self._max_parts:
                    raise MultipartError(f"The multipart body has more than max_parts={self._max_parts} parts.")
                self._header_scan = 0
                self._state = _HEADERS
            else:  # _HEADERS
                if end - pos < 2:
                    return pos
                if data[pos] == _CR and data[pos + 1] == _LF:  # empty header block
                    block_end = pos
                else:
                    # Resume the search where the last feed stopped (minus a possible partial
                    # terminator) so byte-at-a-time input stays linear.
                    block_end = data.find(b"\r\n\r\n", pos + self._header_scan)
                    if block_end < 0:
                        # Any terminator still to come ends at least at end - 3.
                        if end - 3 - pos > self._max_header_size:
                            self._header_too_large()
                        self._header_scan = max(0, end - pos - 3)
                        return pos
                if block_end - pos > self._max_header_size:
                    self._header_too_large()
                self._start_part(data[pos:block_end], events)
                pos = block_end + (2 if block_end == pos else 4)
                self._state = _BODY
        return pos

    def _delimiter_prefix_start(self, data: bytes, start: int) -> int:
        """Offset (>= start) of the longest suffix of ``data`` that could be the beginning of a
        delimiter, or ``len(data)`` if there is none.

        A delimiter starts with its only CR, so only a CR among the last ``len - 1`` bytes
        can begin one.
        """
        delimiter = self._delimiter
        end = len(data)
        cr = data.find(b"\r", max(start, end - len(delimiter) + 1))
        while cr >= 0:
            if delimiter.startswith(data[cr:]):
                return cr
            cr = data.find(b"\r", cr + 1)
        return end

    def _header_too_large(self) -> None:
        raise MultipartError(
            f"A multipart part's headers are larger than max_header_size={self._max_header_size} bytes."
        )

    def _start_part(self, block: bytes, events: list[Event]) -> None:
        name, filename, content_type, headers = _parse_part_headers(block)
        self._part_name = name
        self._is_file = filename is not None
        if filename is not None:
            events.append(FileStart(name, filename, content_type, headers))
        else:
            self._field_value = bytearray()

    def _content(self, data: bytes, start: int, stop: int, events: list[Event]) -> None:
        """Deliver ``data[start:stop]``, confirmed content of the current part."""
        if start == stop:
            return
        if self._is_file:
            # The common case of a whole chunk is passed on without a copy.
            events.append(FileData(data if stop - start == len(data) else data[start:stop]))
            return
        self._field_value += memoryview(data)[start:stop]
        if len(self._field_value) > self._max_field_size:
            raise MultipartError(
                f"Multipart field {self._part_name!r} is larger than max_field_size={self._max_field_size} bytes."
            )

    def _end_part(self, events: list[Event]) -> None:
        if self._is_file:
            events.append(FileEnd(self._part_name))
            return
        try:
            value = self._field_value.decode("utf-8")
        except UnicodeDecodeError:
            raise MultipartError(f"Multipart field {self._part_name!r} is not valid UTF-8.") from None
        self._field_value = bytearray()
        events.append(Field(self._part_name, value))
