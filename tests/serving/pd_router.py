"""A loopback stand-in for llm-d's P/D request path, in front of two real vLLM servers (test helper).

In llm-d, the endpoint picker chooses a prefill pod and a decode pod; the routing sidecar beside
decode first sends the request to prefill with ``max_tokens=1`` (prefill computes the prompt's KV
cache and hands it to the connector), then lets decode generate, and decode's KV connector pulls
the prompt's KV instead of recomputing it. This router does the same two hops:

* ``mode="pd"``: every completion goes to the prefill server with ``max_tokens=1`` (not
  streamed), then unchanged to the decode server, whose streamed answer is passed through.
* ``mode="decode-only"``: everything goes to decode alone - what a mis-wired P/D deployment
  silently does.

The two vLLM servers really move KV between them: prefill runs with
``--kv-transfer-config {"kv_connector": "ExampleConnector", "kv_role": "kv_producer", ...}`` and
decode with ``kv_consumer`` on the same storage directory (vLLM's own shared-storage example
connector stands in for NIXL, which needs RDMA/UCX). GETs (``/v1/models``, ``/health``) go to
decode. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


def _hostport(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


class PDRouter:
    """The router; use as a context manager.

    Args:
        prefill_url: Base URL of the prefill vLLM server.
        decode_url: Base URL of the decode vLLM server.
        mode: ``pd`` (prefill hop, then decode) or ``decode-only``.
    """

    def __init__(self, prefill_url: str, decode_url: str, mode: str = "pd") -> None:
        self.prefill = _hostport(prefill_url)
        self.decode = _hostport(decode_url)
        self.mode = mode
        self.prefill_hops = 0
        self.prefill_errors = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The router's base URL (what the validator is pointed at)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> PDRouter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _prefill_hop(self, path: str, body: bytes) -> None:
        try:
            req = json.loads(body)
        except ValueError:
            return
        req.update({"max_tokens": 1, "stream": False})
        req.pop("stream_options", None)
        req.pop("max_completion_tokens", None)
        conn = http.client.HTTPConnection(*self.prefill, timeout=120)
        try:
            conn.request("POST", path, body=json.dumps(req), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            ok = resp.status == 200
        except OSError:
            ok = False
        finally:
            conn.close()
        with self._lock:
            self.prefill_hops += 1
            self.prefill_errors += not ok

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        router = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                self._forward(b"")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if router.mode == "pd" and self.path.startswith("/v1/") and "completions" in self.path:
                    router._prefill_hop(self.path, body)
                self._forward(body)

            def _forward(self, body: bytes) -> None:
                conn = http.client.HTTPConnection(*router.decode, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                try:
                    streamed = "text/event-stream" in (resp.getheader("Content-Type") or "")
                    self.send_response(resp.status)
                    for key, value in resp.getheaders():
                        if key.lower() not in HOP_HEADERS:
                            self.send_header(key, value)
                    if not streamed:
                        data = resp.read()
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    while piece := resp.read1(65536):
                        self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                finally:
                    conn.close()

        return Handler
