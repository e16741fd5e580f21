"""A lean HTTP/1.1 transport for ``httpx.AsyncClient``, built for many long server-sent-event streams.

Why: httpx's default transport (httpcore + h11) parses every HTTP chunk of a response in pure
Python through several layers - one chunk per streamed token - and httpcore retries a failing
``import sniffio`` on every request when that package is absent. Measured on this project's
tiny-model server, that made the load client spend about twice the CPU per request of
``vllm bench serve`` (aiohttp, C parser). This transport keeps the httpx API (requests,
responses, exceptions, timeouts, TLS) and does the wire work in an :class:`asyncio.Protocol`:
each network read is parsed in one pass with ``bytes.find``, and the response body is handed to
the reader as whole reads, not chunk by chunk.

Scope: HTTP/1.1 over TCP or TLS, keep-alive pooling with a connection cap, chunked,
content-length and close-delimited bodies. No HTTP/2, no proxies, no ``Expect: 100-continue``.
Errors surface as httpx exceptions (``ConnectError``, ``ConnectTimeout``, ``ReadTimeout``,
``RemoteProtocolError``, ``WriteError``) so callers handle both transports alike.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx

MAX_HEAD_BYTES = 64 * 1024
PAUSE_ABOVE_BYTES = 4 * 1024 * 1024
"""Stop reading from the socket while this much body is buffered and unread (flow control)."""

TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)
"""Linux's "acknowledge at once" socket option (None elsewhere), re-armed after every read.

Why: vLLM's OpenAI server writes one small chunk per token and its socket batches small writes
until the previous one is acknowledged (Nagle), while Linux delays the acknowledgement of a
lone incoming segment by up to 40 ms. With a request sent in one write (as here), measured on
the tiny-model server: every token of a stream arrived in one read 40-60 ms after the request
(TTFT ~50 ms instead of ~8 ms, inter-token gaps of 0), so the client measured TCP timers, not
the server. Quick acknowledgements give the stream token by token again (``TCP_QUICKACK`` is
not sticky: the kernel falls back to delayed ACKs, so it is set again after each read)."""


def _expire(fut: asyncio.Future[None], timeout: float) -> None:
    if not fut.done():
        fut.set_exception(httpx.ReadTimeout(f"no data within {timeout:g} s"))


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 connection: parses response heads and bodies as bytes arrive."""

    def __init__(self, pool_key: tuple[str, str, int]) -> None:
        self.pool_key = pool_key
        self.transport: asyncio.Transport | None = None
        self.sock: Any = None
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None
        self.method = b"GET"
        self.reset()

    def reset(self) -> None:
        self.buf = bytearray()
        self.state = "idle"  # idle -> head -> body -> done
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.mode = "none"  # chunked | length | close | none
        self.remaining = 0
        self.need_crlf = False
        self.trailers = False
        self.parts: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.keep_alive = True
        self.error: Exception | None = None
        self.any_bytes = False

    # asyncio callbacks ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sock = transport.get_extra_info("socket") if TCP_QUICKACK is not None else None
        self._ack_now()

    def _ack_now(self) -> None:
        """Acknowledges the next segments at once (see :data:`TCP_QUICKACK`); a no-op off Linux."""
        if self.sock is None:
            return
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
        except OSError:  # not a TCP socket (a proxy's Unix socket): nothing to acknowledge
            self.sock = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.state == "body" and self.mode == "close":
            self.state = "done"
        elif self.state in ("head", "body"):
            what = "response headers" if self.state == "head" else "complete message body"
            self.error = httpx.RemoteProtocolError(f"peer closed connection without sending {what}")
        self._wake()

    def data_received(self, data: bytes) -> None:
        self.any_bytes = True
        self._ack_now()
        if self.state == "head":
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD_BYTES:
                    self._fail(httpx.RemoteProtocolError("response headers too large"))
                return
            head = bytes(self.buf[:end])
            rest = bytes(self.buf[end + 4 :])
            self.buf = bytearray()
            try:
                self._parse_head(head)
            except (ValueError, IndexError) as err:
                self._fail(httpx.RemoteProtocolError(f"malformed response head: {err}"))
                return
            if self.state == "head":  # an interim 1xx response: the real one follows
                if rest:
                    self.data_received(rest)
                return
            self._wake()
            if rest and self.state == "body":
                self._body(rest)
        elif self.state == "body":
            self._body(data)
        else:
            self.keep_alive = False  # bytes nobody asked for: never reuse this connection

    # parsing ----------------------------------------------------------------------------------

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        version, status, *reason = lines[0].split(b" ", 2)
        if not version.startswith(b"HTTP/1."):
            raise ValueError(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
        code = int(status)
        if 100 <= code < 200:
            return
        self.status = code
        self.reason = reason[0] if reason else b""
        headers = []
        chunked = False
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip(), value.strip()
            headers.append((name, value))
            low = name.lower()
            if low == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif low == b"content-length":
                length = int(value)
            elif low == b"connection" and value.lower() == b"close":
                self.keep_alive = False
        if version == b"HTTP/1.0":
            self.keep_alive = False
        self.headers = headers
        if code in (204, 304) or self.method == b"HEAD":
            self.mode, self.state = "none", "done"
        elif chunked:
            self.mode, self.state = "chunked", "body"
        elif length is not None:
            self.mode, self.remaining = "length", length
            self.state = "body" if length else "done"
        else:
            self.mode, self.state, self.keep_alive = "close", "body", False

    def _body(self, data: bytes) -> None:
        if self.mode == "length":
            take = data[: self.remaining]
            self.remaining -= len(take)
            self._emit(take)
            if self.remaining == 0:
                self.state = "done"
        elif self.mode == "close":
            self._emit(data)
        else:
            try:
                self._chunked(data)
            except ValueError as err:
                self._fail(httpx.RemoteProtocolError(f"malformed chunked body: {err}"))
                return
        self._wake()

    def _chunked(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        end = len(buf)
        out = []
        while pos < end:
            if self.remaining:
                take = min(self.remaining, end - pos)
                out.append(bytes(buf[pos : pos + take]))
                pos += take
                self.remaining -= take
                if self.remaining:
                    break
                self.need_crlf = True
            if self.need_crlf:
                if end - pos < 2:
                    break
                pos += 2
                self.need_crlf = False
                continue
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                break
            if self.trailers:
                empty = nl == pos
                pos = nl + 2
                if empty:  # the blank line after the (ignored) trailers ends the body
                    self.state = "done"
                    pos = end
                    break
                continue
            size_field = bytes(buf[pos:nl]).split(b";", 1)[0].strip()
            size = int(size_field, 16)
            pos = nl + 2
            if size == 0:
                self.trailers = True
                continue
            self.remaining = size
        del buf[:pos]
        if out:
            self._emit(b"".join(out))

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        self.parts.append(data)
        self.buffered += len(data)
        if self.buffered > PAUSE_ABOVE_BYTES and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True

    def _fail(self, err: Exception) -> None:
        self.error = err
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # used by the transport -------------------------------------------------------------------

    def start(self, method: bytes, wire: bytes) -> None:
        self.reset()
        self.method = method
        self.state = "head"
        assert self.transport is not None
        self.transport.write(wire)
        # After the write: sending data puts the socket back into delayed-ACK ("pingpong") mode.
        self._ack_now()

    async def wait(self, timeout: float | None) -> None:
        """Waits for the next parser event (not ``asyncio.wait_for``: it can swallow a cancellation)."""
        loop = asyncio.get_running_loop()
        fut = self.waiter = loop.create_future()
        timer = loop.call_later(timeout, _expire, fut, timeout) if timeout is not None else None
        try:
            await fut
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def take(self) -> bytes:
        parts, self.parts, self.buffered = self.parts, [], 0
        if self.paused and self.transport is not None:
            self.transport.resume_reading()
            self.paused = False
        return parts[0] if len(parts) == 1 else b"".join(parts)

    @property
    def reusable(self) -> bool:
        return not self.closed and self.keep_alive and self.state == "done" and not self.buf


async def _iter_body(conn: _Conn, read_timeout: float | None) -> AsyncIterator[bytes]:
    """What arrived of a response body, one item per wake-up (not per HTTP chunk)."""
    while True:
        if conn.parts:
            yield conn.take()
            continue
        if conn.state == "done":
            return
        if conn.error is not None:
            raise conn.error
        if conn.closed:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")
        await conn.wait(read_timeout)


class _Body(httpx.AsyncByteStream):
    """The response body of a request sent through httpx."""

    def __init__(self, owner: LeanTransport, conn: _Conn, read_timeout: float | None) -> None:
        self._owner = owner
        self._conn = conn
        self._timeout = read_timeout
        self._released = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for data in _iter_body(self._conn, self._timeout):
            yield data

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._owner.release(self._conn)


class LeanTransport(httpx.AsyncBaseTransport):
    """An httpx async transport: HTTP/1.1 keep-alive pool, parsing in an asyncio protocol.

    Args:
        max_connections: Connections open at once (requests beyond wait for one).
        ssl_context: TLS settings for ``https`` URLs (None: the system defaults).
        connect_timeout_s: Longest wait for a TCP/TLS connection.
    """

    def __init__(
        self,
        max_connections: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._max = max_connections
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout_s
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._slots: asyncio.Semaphore | None = None
        self._all: set[_Conn] = set()
        self.templates: dict[str, tuple[tuple[str, str, int], bytes]] = {}
        """Pre-serialized request heads by URL (filled by the streaming client)."""

    def _slots_for_loop(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max)
        return self._slots

    async def _connect(self, key: tuple[str, str, int], timeout: float | None) -> _Conn:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        if scheme == "https":
            ctx = self._ssl or ssl.create_default_context()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(key), host, port, ssl=ctx, server_hostname=host if ctx else None),
                timeout,
            )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} took over {timeout} s") from None
        except (OSError, ssl.SSLError) as err:
            raise httpx.ConnectError(f"{host}:{port}: {err}") from None
        self._all.add(conn)
        return conn

    def release(self, conn: _Conn) -> None:
        """Returns a connection after its response was read (or abandoned) and frees its slot."""
        if conn.reusable:
            self._idle.setdefault(conn.pool_key, []).append(conn)
        else:
            self._drop(conn)
        if self._slots is not None:
            self._slots.release()

    def _drop(self, conn: _Conn) -> None:
        self._all.discard(conn)
        if conn.transport is not None and not conn.closed:
            conn.transport.close()

    @staticmethod
    def pool_key(url: httpx.URL) -> tuple[str, str, int]:
        """(scheme, host, port) of a URL; connections are pooled per key."""
        scheme = url.scheme
        if scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
        return scheme, url.host, url.port or (443 if scheme == "https" else 80)

    async def open(
        self,
        key: tuple[str, str, int],
        method: bytes,
        wire: bytes,
        *,
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> _Conn:
        """Sends a serialized request and waits for the response head.

        The caller reads the body with :meth:`body` and must call :meth:`release` afterwards.

        Args:
            key: :meth:`pool_key` of the URL.
            method: The request method (``HEAD`` responses have no body).
            wire: The whole request: request line, headers, blank line, body.
            connect_timeout: Longest wait for a new connection.
            read_timeout: Longest wait for the response head.

        Returns:
            The connection, with ``status`` and ``headers`` of the response.

        Raises:
            httpx.TransportError: Connect, timeout and protocol errors (the slot is freed).
        """
        slots = self._slots_for_loop()
        await slots.acquire()
        try:
            for attempt in (1, 2):
                conn = None
                idle = self._idle.get(key)
                while idle:
                    candidate = idle.pop()
                    if candidate.reusable:
                        conn = candidate
                        break
                    self._drop(candidate)
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(key, connect_timeout)
                try:
                    conn.start(method, wire)
                    while conn.state == "head" and conn.error is None and not conn.closed:
                        await conn.wait(read_timeout)
                except BaseException:
                    self._drop(conn)
                    raise
                if conn.state != "head":
                    return conn
                # The connection died before a response head: a stale keep-alive connection
                # (the server closed it while idle) gets one retry on a fresh connection.
                self._drop(conn)
                if not (reused and not conn.any_bytes and attempt == 1):
                    raise conn.error or httpx.RemoteProtocolError("connection closed before the response head")
            raise AssertionError("unreachable")
        except BaseException:
            slots.release()
            raise

    @staticmethod
    def body(conn: _Conn, read_timeout: float | None) -> AsyncIterator[bytes]:
        """The response body of an :meth:`open` connection, as it arrives."""
        return _iter_body(conn, read_timeout)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Sends one request and returns the response with a streaming body (httpx contract)."""
        url = request.url
        key = self.pool_key(url)
        timeouts = request.extensions.get("timeout", {})
        read_timeout = timeouts.get("read")
        body = request.content if isinstance(request.stream, httpx.ByteStream) else await request.aread()
        head = [request.method.encode(), b" ", url.raw_path, b" HTTP/1.1\r\n"]
        for name, value in request.headers.raw:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        conn = await self.open(
            key,
            request.method.encode(),
            b"".join(head) + body,
            connect_timeout=timeouts.get("connect", self._connect_timeout),
            read_timeout=read_timeout,
        )
        return httpx.Response(
            conn.status,
            headers=conn.headers,
            stream=_Body(self, conn, read_timeout),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": conn.reason},
        )

    async def aclose(self) -> None:
        """Closes every connection."""
        for conn in list(self._all):
            self._drop(conn)
        self._idle.clear()

    def stats(self) -> dict[str, Any]:
        """Open and idle connection counts (for tests)."""
        return {"open": len(self._all), "idle": sum(len(v) for v in self._idle.values())}
