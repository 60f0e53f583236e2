"""What-if patches for a gateway process started by bench/whatif.py — experiments, not fixes.

Loaded through PYTHONPATH as ``sitecustomize``; ``BENCH_PATCHES`` (comma-separated) selects:

* ``gcstats``     – record every GC pause per generation; written at exit to ``$BENCH_GCSTATS``
* ``gcthreshold`` – ``gc.set_threshold(100_000, 50, 100)`` (fewer, larger young collections)
* ``freeze``      – ``gc.collect(); gc.freeze()`` 2.5 s after start (stands in for a call at the
                    end of start-up), so start-up objects are never scanned again
* ``rawclient``   – small buffered upstream calls (``Upstream.open`` for bytes/no body, except
                    ``/content`` and ``"stream":true`` bodies) go through a minimal keep-alive
                    HTTP/1.1 client on ``asyncio.Protocol`` instead of ``aiohttp.ClientSession``:
                    an upper bound for what a lean upstream client saves. No TLS, no timeouts,
                    no retries, Content-Length bodies only — loopback experiments only.

These monkeypatch gateway internals by name and may stop applying when the code changes;
bench/whatif.py checks that every variant still answers correctly before measuring.
"""
import os

_P = set(filter(None, os.environ.get("BENCH_PATCHES", "").split(",")))

if "gcthreshold" in _P:
    import gc

    gc.set_threshold(100_000, 50, 100)

if "gcstats" in _P:
    import atexit
    import collections
    import gc
    import time

    _pauses = collections.defaultdict(list)
    _t0 = [0.0]

    def _gc_cb(phase, info):
        if phase == "start":
            _t0[0] = time.perf_counter()
        else:
            _pauses[info["generation"]].append(time.perf_counter() - _t0[0])

    gc.callbacks.append(_gc_cb)

    def _dump():
        import json

        out = {}
        for g, xs in sorted(_pauses.items()):
            xs.sort()
            out[f"gen{g}"] = {"n": len(xs), "total_ms": sum(xs) * 1e3, "max_ms": xs[-1] * 1e3,
                              "p50_ms": xs[len(xs) // 2] * 1e3}
        with open(os.environ.get("BENCH_GCSTATS", "/tmp/sluicegate-gcstats.json"), "w") as fh:
            json.dump(out, fh)

    atexit.register(_dump)

if "freeze" in _P:
    import gc
    import threading

    def _freeze():
        gc.collect()
        gc.freeze()

    threading.Timer(2.5, _freeze).start()

if "rawclient" in _P:
    import importlib.abc
    import sys

    class _Hook(importlib.abc.MetaPathFinder):
        done = False

        def find_spec(self, name, path, target=None):
            if name == "proxy.gateway" and not self.done:
                self.done = True
                from proxy.providers import upstream

                _install_rawclient(upstream)
            return None

    sys.meta_path.insert(0, _Hook())


def _install_rawclient(U):
    import asyncio
    import re

    from multidict import CIMultiDict
    from yarl import URL

    cl_re = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.I)

    class _Conn(asyncio.Protocol):
        def __init__(self):
            self.buf = bytearray()
            self.waiter = None
            self.end = -1
            self.t = None
            self.closed = False

        def connection_made(self, t):
            self.t = t

        def data_received(self, d):
            b = self.buf
            b += d
            if self.end < 0:
                i = b.find(b"\r\n\r\n")
                if i < 0:
                    return
                self.head = bytes(b[:i])
                self.hl = i + 4
                self.end = i + 4 + int(cl_re.search(self.head).group(1))
            if len(b) >= self.end:
                body = bytes(b[self.hl:self.end])
                del b[: self.end]
                self.end = -1
                w, self.waiter = self.waiter, None
                if w is not None and not w.done():
                    w.set_result((self.head, body))

        def connection_lost(self, exc):
            self.closed = True
            w, self.waiter = self.waiter, None
            if w is not None and not w.done():
                w.set_exception(ConnectionResetError("upstream closed the connection"))

    class _Resp:
        def __init__(self, head, body):
            lines = head.decode("latin-1").split("\r\n")
            self.status = int(lines[0][9:12])
            self.headers = CIMultiDict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            self._body = body
            self.content_length = len(body)

        async def read(self):
            return self._body

        def release(self):
            pass

        def close(self):
            pass

    pools = {}

    async def call(self, method, url, params, data, headers):
        u = url if isinstance(url, URL) else URL(url)
        if params:
            u = u.update_query(params)
        pool = pools.setdefault((u.host, u.port), [])
        conn = None
        while pool:
            c = pool.pop()
            if not c.closed:
                conn = c
                break
        loop = asyncio.get_running_loop()
        if conn is None:
            _, conn = await loop.create_connection(_Conn, u.host, u.port)
        hdrs = dict(self.headers)
        hdrs.update(headers or {})
        body = data or b""
        lines = [f"{method} {u.raw_path_qs} HTTP/1.1", f"Host: {u.host}:{u.port}"]
        lines += [f"{k}: {v}" for k, v in hdrs.items()]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        fut = loop.create_future()
        conn.waiter = fut
        conn.t.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        head, rbody = await fut
        pool.append(conn)
        return _Resp(head, rbody)

    def small(url, data):
        s = str(url)
        if s.endswith("/content") or "/content?" in s:
            return False
        if data is not None and not isinstance(data, (bytes, bytearray)):
            return False
        return not (data and b'"stream":true' in data)

    orig_open = U.Upstream.open

    async def open(self, method, url, *, params=None, data=None, headers=None, idempotent=True, timeout=None):
        if small(url, data):
            resp = await call(self, method, url, params, data, headers)
            if resp.status < 400:
                return resp
            raise self.error_from_response(resp.status, resp._body, resp.headers)
        return await orig_open(self, method, url, params=params, data=data, headers=headers,
                               idempotent=idempotent, timeout=timeout)

    U.Upstream.open = open
