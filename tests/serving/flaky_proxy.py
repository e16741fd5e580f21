"""A loopback HTTP proxy in front of a real vLLM server that misbehaves on purpose (test helper).

It forwards every request to the upstream server (streamed responses chunk by chunk). Once
:meth:`FlakyProxy.arm` is called, every ``fail_every``-th POST gets HTTP 500 with an HTML-hostile
body, and every ``cut_every``-th streamed POST is cut after ``cut_after_events`` SSE events -
alternately by closing the connection abruptly (no terminating chunk) and by ending the body
cleanly without ``[DONE]``. ``inject`` rewrites non-streamed completions so their text starts
with a ``<script>`` (for the report-escaping tests). Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

INJECTED = '<script>document.title="pwned"</script>'
ERROR_BODY = b'{"error": {"message": "injected failure <script>document.title=\\"pwned\\"</script>", "code": 500}}'
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class FlakyProxy:
    """The proxy; use as a context manager.

    Args:
        upstream: Base URL of the real server (``http://127.0.0.1:PORT``).
        fail_every: Every N-th armed POST gets HTTP 500 (None: never).
        cut_every: Every N-th armed streamed POST is cut mid-stream (None: never).
        cut_after_events: SSE events forwarded before a cut.
        inject: Prefix the text of non-streamed completions with a ``<script>`` element.
        require_bearer: Answer 401 unless ``Authorization: Bearer <this>`` is sent (an API key).
    """

    def __init__(
        self,
        upstream: str,
        *,
        fail_every: int | None = None,
        cut_every: int | None = None,
        cut_after_events: int = 3,
        inject: bool = False,
        require_bearer: str | None = None,
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.fail_every = fail_every
        self.cut_every = cut_every
        self.cut_after_events = cut_after_events
        self.inject = inject
        self.require_bearer = require_bearer
        self.unauthorized = 0
        self.armed = False
        self.posts = 0
        self.failed = 0
        self.cut = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The proxy's base URL."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def arm(self) -> None:
        """Starts misbehaving (requests before this are forwarded untouched)."""
        with self._lock:
            self.armed = True

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _decide(self, streamed: bool) -> str:
        with self._lock:
            if not self.armed:
                return "forward"
            self.posts += 1
            if self.fail_every and self.posts % self.fail_every == 0:
                self.failed += 1
                return "fail"
            if streamed and self.cut_every and self.posts % self.cut_every == 0:
                self.cut += 1
                return "cut-abrupt" if self.cut % 2 else "cut-clean"
            return "forward"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if self._authorized():
                    self._forward(b"", "forward")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self._authorized():
                    return
                streamed = b'"stream": true' in body or b'"stream":true' in body
                self._forward(body, proxy._decide(streamed))

            def _authorized(self) -> bool:
                if (
                    proxy.require_bearer is None
                    or self.headers.get("Authorization") == f"Bearer {proxy.require_bearer}"
                ):
                    return True
                with proxy._lock:
                    proxy.unauthorized += 1
                body = b'{"error": "invalid API key"}'
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return False

            def _forward(self, body: bytes, action: str) -> None:
                if action == "fail":
                    self.send_response(500)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(ERROR_BODY)))
                    self.end_headers()
                    self.wfile.write(ERROR_BODY)
                    return
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                try:
                    if "text/event-stream" in (resp.getheader("Content-Type") or ""):
                        self._stream(resp, action)
                    else:
                        self._whole(resp)
                finally:
                    conn.close()

            def _whole(self, resp: http.client.HTTPResponse) -> None:
                data = resp.read()
                if proxy.inject and self.command == "POST" and resp.status == 200:
                    data = data.replace(b'"text":"', b'"text":"' + INJECTED.replace('"', '\\"').encode(), 1)
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in HOP_HEADERS:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, resp: http.client.HTTPResponse, action: str) -> None:
                self.send_response(resp.status)
                for key, value in resp.getheaders():
                    if key.lower() not in HOP_HEADERS:
                        self.send_header(key, value)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                events = 0
                buf = b""
                while True:
                    piece = resp.read1(65536)
                    if not piece:
                        break
                    if action.startswith("cut"):
                        buf += piece
                        out = b""
                        while b"\n\n" in buf and events < proxy.cut_after_events:
                            event, buf = buf.split(b"\n\n", 1)
                            out += event + b"\n\n"
                            events += 1
                        if out:
                            self._chunk(out)
                        if events >= proxy.cut_after_events:
                            if action == "cut-abrupt":
                                self.wfile.flush()
                                self.close_connection = True
                                self.connection.shutdown(socket.SHUT_RDWR)
                                return
                            break
                        continue
                    self._chunk(piece)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        return Handler
