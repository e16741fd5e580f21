"""Small helpers shared by the cluster tests of the kube layer, the waiter and the rollout steps."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from llm_rollout.kube import INFERENCE_SERVICES, LLM_INFERENCE_SERVICES, SERVING_RUNTIMES, KubeClient
from llm_rollout.spec import RolloutSpec, deep_merge, parse_spec


def make_spec(namespace: str, name: str = "chat", **overrides: Any) -> RolloutSpec:
    """A valid kserve-platform spec in ``namespace`` (overrides merge into the document)."""
    doc: dict[str, Any] = {"name": name, "namespace": namespace, "platform": "kserve"}
    return parse_spec(deep_merge(doc, overrides))


def llmd_spec(namespace: str, name: str = "chat", **overrides: Any) -> RolloutSpec:
    """A valid llm-d spec (LLMInferenceService members) in ``namespace``."""
    base = {"llmd": {"enabled": True}, "scaling": None, "replicas": 1}
    return make_spec(namespace, name, **deep_merge(base, overrides))


def kube(cluster, via=None, **kwargs: Any) -> KubeClient:
    """A :class:`KubeClient` for the test cluster (optionally through a fault proxy)."""
    return KubeClient(cluster.api_client(via=via), **kwargs)


def objects_in(client: KubeClient, namespace: str) -> dict[str, list[str]]:
    """Names of every KServe object of ours in ``namespace``, by plural (what a test asserts on)."""
    out: dict[str, list[str]] = {}
    for res in (SERVING_RUNTIMES, INFERENCE_SERVICES, LLM_INFERENCE_SERVICES):
        items = client.list(res, namespace).get("items") or []
        out[res.plural] = sorted(i["metadata"]["name"] for i in items)
    return out


def rv(obj: dict[str, Any]) -> str:
    """``metadata.resourceVersion``."""
    return obj["metadata"]["resourceVersion"]


class _ModelsHandler(http.server.BaseHTTPRequestHandler):
    models: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            body = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})
            self.send_response(200)
        else:
            body = json.dumps({"error": "not found"})
            self.send_response(404)
        data = body.encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def models_server(models: list[str]) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering ``GET /v1/models`` with ``models``; yields its URL.

    The OpenAI ``/v1/models`` shape only: for tests of "ready is not serving" that need an endpoint
    but not a model (the serving tier uses a real vLLM).
    """
    handler = type("Handler", (_ModelsHandler,), {"models": list(models)})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
