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
from http.server import BaseHTTPRequestHandler

from tests.serving.relay import LoopbackServer, RelayHandler, hostport


class PDRouter(LoopbackServer):
    """The router; use as a context manager.

    Args:
        prefill_url: Base URL of the prefill vLLM server.
        decode_url: Base URL of the decode vLLM server.
        mode: ``pd`` (prefill hop, then decode) or ``decode-only``.
    """

    def __init__(self, prefill_url: str, decode_url: str, mode: str = "pd") -> None:
        self.prefill = hostport(prefill_url)
        self.decode = hostport(decode_url)
        self.mode = mode
        self.prefill_hops = 0
        self.prefill_errors = 0
        super().__init__()

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

        class Handler(RelayHandler):
            def do_GET(self) -> None:
                self._forward(b"")

            def do_POST(self) -> None:
                body = self.read_body()
                if router.mode == "pd" and self.path.startswith("/v1/") and "completions" in self.path:
                    router._prefill_hop(self.path, body)
                self._forward(body)

            def _forward(self, body: bytes) -> None:
                conn, resp = self.ask(router.decode, body)
                try:
                    if not self.streamed(resp):
                        self.send_whole(resp, resp.read())
                        return
                    self.start_chunks(resp)
                    while piece := resp.read1(65536):
                        self.chunk(piece)
                    self.end_chunks()
                finally:
                    conn.close()

        return Handler
