"""A response whose body is bytes the gateway already has, sent in one write.

Most of the gateway's answers are a few hundred bytes of JSON it holds whole (a file object,
an error, a Responses object). aiohttp's ``Response`` sends them through its general machinery
— ``prepare`` → ``_start`` → ``_prepare_headers`` → ``_write_headers`` → ``write_eof`` →
``StreamWriter.write_eof`` → ``_send_headers_with_payload``, five coroutines and the checks
for compression, chunking, cookies and streamed payloads that such a body never needs. That
machinery is a third of a bare aiohttp server's CPU per request (bench: 40 → 29 µs/request
answering the same bytes; issue 10).

:class:`BytesResponse` is an ``aiohttp.web.Response`` (headers, status, ``force_close``,
``keep_alive`` behave the same), whose ``prepare`` does the same work inline when nothing
unusual applies: the same headers (``Content-Length``, ``Content-Type`` default, ``Date``,
``Server``, ``Connection`` by HTTP version and keep-alive) serialised by aiohttp's own
``_serialize_headers``, then the head and the body handed to the request's ``StreamWriter``
in one ``writelines`` (so its byte counts and back-pressure stay right). Anything else — a
HEAD request, a status without a body (1xx, 204, 304), cookies, compression, chunking, a
payload object — goes through aiohttp's path unchanged. tests/unit/test_bytes_response.py
compares the bytes on the wire with aiohttp's ``Response`` for every case.

This uses aiohttp's private attributes, like :mod:`proxy.http_server`; setup.cfg pins the
aiohttp series for both.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web
from aiohttp.compression_utils import MAX_SYNC_CHUNK_SIZE
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10, HttpVersion11
from aiohttp.http_writer import _serialize_headers
from aiohttp.web_response import REASON_PHRASES
from multidict import CIMultiDict

if TYPE_CHECKING:
    from aiohttp.typedefs import LooseHeaders
    from aiohttp.abc import AbstractStreamWriter
    from aiohttp.http_writer import StreamWriter


_NO_PREPARE_HOOK = web.BaseRequest._prepare_hook  # the low-level server's request: nothing to run


class BytesResponse(web.Response):
    __slots__ = ()

    def __init__(self, *, body: Any = None, status: int = 200, headers: "LooseHeaders | None" = None,
                 content_type: str | None = None, **kwargs: Any) -> None:
        """``Response(body=bytes, status=…, headers=…, content_type=…)`` set up as aiohttp's
        constructor would (the same attributes, the same checks), without its general path
        (``text``, ``charset``, payload bodies, the status's ``int()``): the gateway builds
        one per answer. Anything else goes to aiohttp's constructor."""
        if (kwargs or type(body) is not bytes or type(status) is not int
                or (content_type is not None and "charset" in content_type)):
            super().__init__(body=body, status=status, headers=headers, content_type=content_type, **kwargs)
            return
        real_headers: CIMultiDict[str] = CIMultiDict() if headers is None else CIMultiDict(headers)
        if content_type is not None:
            if hdrs.CONTENT_TYPE in real_headers:
                raise ValueError("passing both Content-Type header and content_type or charset params is forbidden")
            real_headers[hdrs.CONTENT_TYPE] = content_type
        # What StreamResponse.__init__, _set_status and the body setter assign; every other
        # attribute keeps its class default, as with aiohttp's constructor.
        self._state = {}
        self._headers = real_headers
        self._status = status
        self._reason = REASON_PHRASES.get(status, "")
        self._body = body
        self._compressed_body = None
        self._zlib_executor_size = MAX_SYNC_CHUNK_SIZE
        self._zlib_executor = None

    async def prepare(self, request: web.BaseRequest) -> "AbstractStreamWriter | None":
        body = self._body
        status = self._status
        if (self._eof_sent or self._payload_writer is not None or type(body) is not bytes
                or status < 200 or status == 204 or status == 304 or request.method == hdrs.METH_HEAD
                or self._cookies or self._compression or self._chunked):
            return await super().prepare(request)
        version = request.version
        if version != HttpVersion11 and version != HttpVersion10:
            return await super().prepare(request)
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = request.keep_alive
        self._keep_alive = keep_alive
        self._must_be_empty_body = False
        headers = self._headers
        # What Response._start and StreamResponse._prepare_headers set, in their order.
        length: int | None
        if hdrs.CONTENT_LENGTH not in headers:
            length = len(body)
            headers[hdrs.CONTENT_LENGTH] = str(length)
        else:
            length = self.content_length
        if length != 0:
            headers.setdefault(hdrs.CONTENT_TYPE, "application/octet-stream")
        if hdrs.DATE not in headers:
            headers[hdrs.DATE] = rfc822_formatted_time()
        headers.setdefault(hdrs.SERVER, SERVER_SOFTWARE)
        if hdrs.CONNECTION not in headers:
            if keep_alive:
                if version == HttpVersion10:
                    headers[hdrs.CONNECTION] = "keep-alive"
            elif version == HttpVersion11:
                headers[hdrs.CONNECTION] = "close"
        self._req = request
        writer: "StreamWriter" = request._payload_writer  # type: ignore[assignment]  # always a StreamWriter
        self._payload_writer = writer
        if type(request)._prepare_hook is not _NO_PREPARE_HOOK:  # a web.Application's signals
            await request._prepare_hook(self)
        head = _serialize_headers(f"HTTP/{version[0]}.{version[1]} {status} {self._reason}", headers)
        writer.length = length
        writer._writelines((head, body) if body else (head,))
        if body and (notify := writer.on_body_write) is not None:
            notify(len(body), writer.output_size)
        protocol = writer._protocol  # StreamWriter.drain, without its coroutine when not paused
        if protocol.transport is not None and protocol._paused:
            await writer.drain()
        writer._eof = True
        self._eof_sent = True
        self._req = None
        self._body_length = writer.output_size
        self._payload_writer = None
        return writer
