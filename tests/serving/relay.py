"""What the loopback HTTP stand-ins in front of real vLLM servers share (test helper).

:class:`LoopbackServer` runs a threaded HTTP server on 127.0.0.1 (a free port) as a context
manager; :class:`RelayHandler` relays a request to an upstream server and its answer back,
streamed answers chunk by chunk. Used by :mod:`tests.serving.flaky_proxy` and
:mod:`tests.serving.pd_router`.
"""

from __future__ import annotations

import threading
from http.client import HTTPConnection, HTTPResponse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import urlsplit

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def hostport(url: str) -> tuple[str, int]:
    """``(host, port)`` of a base URL such as ``http://127.0.0.1:8000``."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1; subclasses set their state, then call ``__init__``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class RelayHandler(BaseHTTPRequestHandler):
    """A quiet HTTP/1.1 handler with the pieces of a relay."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def read_body(self) -> bytes:
        """The request body (by Content-Length)."""
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def ask(self, upstream: tuple[str, int], body: bytes) -> tuple[HTTPConnection, HTTPResponse]:
        """Sends this request upstream (hop-by-hop headers dropped); the caller closes the connection."""
        conn = HTTPConnection(*upstream, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        conn.request(self.command, self.path, body=body or None, headers=headers)
        return conn, conn.getresponse()

    @staticmethod
    def streamed(resp: HTTPResponse) -> bool:
        """Whether the upstream answer is a server-sent event stream."""
        return "text/event-stream" in (resp.getheader("Content-Type") or "")

    def send_whole(self, resp: HTTPResponse, data: bytes) -> None:
        """Answers with the upstream status and headers and ``data`` as the body."""
        self._send_head(resp)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_chunks(self, resp: HTTPResponse) -> None:
        """Starts a chunked answer with the upstream status and headers."""
        self._send_head(resp)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data: bytes) -> None:
        """Sends one chunk at once."""
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_chunks(self) -> None:
        """Ends a chunked answer cleanly."""
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def send_json(self, status: int, body: bytes) -> None:
        """Answers with a JSON body of its own."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_head(self, resp: HTTPResponse) -> None:
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in HOP_HEADERS:
                self.send_header(key, value)
