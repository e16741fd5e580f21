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
from http.server import BaseHTTPRequestHandler

from tests.serving.relay import LoopbackServer, RelayHandler, hostport

INJECTED = '<script>document.title="pwned"</script>'
ERROR_BODY = b'{"error": {"message": "injected failure <script>document.title=\\"pwned\\"</script>", "code": 500}}'


class FlakyProxy(LoopbackServer):
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
        self.upstream = hostport(upstream)
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
        super().__init__()

    def arm(self) -> None:
        """Starts misbehaving (requests before this are forwarded untouched)."""
        with self._lock:
            self.armed = True

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

        class Handler(RelayHandler):
            def do_GET(self) -> None:
                if self._authorized():
                    self._forward(b"", "forward")

            def do_POST(self) -> None:
                body = self.read_body()
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
                self.send_json(401, b'{"error": "invalid API key"}')
                return False

            def _forward(self, body: bytes, action: str) -> None:
                if action == "fail":
                    self.send_json(500, ERROR_BODY)
                    return
                conn, resp = self.ask(proxy.upstream, body)
                try:
                    if self.streamed(resp):
                        self._stream(resp, action)
                    else:
                        self._whole(resp)
                finally:
                    conn.close()

            def _whole(self, resp: http.client.HTTPResponse) -> None:
                data = resp.read()
                if proxy.inject and self.command == "POST" and resp.status == 200:
                    data = data.replace(b'"text":"', b'"text":"' + INJECTED.replace('"', '\\"').encode(), 1)
                self.send_whole(resp, data)

            def _stream(self, resp: http.client.HTTPResponse, action: str) -> None:
                self.start_chunks(resp)
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
                            self.chunk(out)
                        if events >= proxy.cut_after_events:
                            if action == "cut-abrupt":
                                self.wfile.flush()
                                self.close_connection = True
                                self.connection.shutdown(socket.SHUT_RDWR)
                                return
                            break
                        continue
                    self.chunk(piece)
                self.end_chunks()

        return Handler
