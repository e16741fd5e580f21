"""Small helpers shared by the cluster tests of the kube layer, the waiter and the rollout steps."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from llm_rollout.kube import INFERENCE_SERVICES, LLM_INFERENCE_SERVICES, SERVING_RUNTIMES, InvalidError, KubeClient
from llm_rollout.spec import RolloutSpec, deep_merge, parse_spec
from tests.fixtures.admission import WEBHOOKS, mirror_errors


def make_spec(namespace: str, name: str = "chat", **overrides: Any) -> RolloutSpec:
    """A valid kserve-platform spec in ``namespace`` (overrides merge into the document)."""
    doc: dict[str, Any] = {"name": name, "namespace": namespace, "platform": "kserve"}
    return parse_spec(deep_merge(doc, overrides))


def llmd_spec(namespace: str, name: str = "chat", **overrides: Any) -> RolloutSpec:
    """A valid llm-d spec (LLMInferenceService members) in ``namespace``."""
    base = {"llmd": {"enabled": True}, "scaling": None, "replicas": 1}
    return make_spec(namespace, name, **deep_merge(base, overrides))


class AdmittedClient(KubeClient):
    """A :class:`KubeClient` whose writes of KServe objects pass KServe's admission webhooks first.

    The test API server runs no webhooks (KServe's are Go code in its controller), so every
    ``InferenceService``, ``ServingRuntime``, ``LLMInferenceService`` and
    ``LLMInferenceServiceConfig`` this client applies (the library's writes in every phase:
    register, deploy, the Knative canary, promotion steps, retirement, rollback, restore) goes
    through the mirror (:func:`tests.fixtures.admission.mirror_errors`, the code the e2e tier's
    :class:`~tests.fixtures.admission.AdmissionProxy` runs at the wire; ``tests/webhook_check.py``:
    ``inference_service_validation.go``
    ``ValidateCreate``/``ValidateUpdate`` against what the server holds,
    ``servingruntime_webhook.go`` ``Handle`` against the namespace's runtimes,
    ``llm_inference_service_validation.go`` and the config validator) and is refused as the webhook
    would refuse it: a 422 :class:`InvalidError` naming the rules.
    What the server holds is read on a connection of its own, so an audit of this client's
    requests (``kube_audit``) sees only the library's calls.

    Attributes:
        admitted: ``(kind, name)`` of every object the mirror admitted, in order.
    """

    def __init__(self, api_client: Any, *, lookup: KubeClient, **kwargs: Any) -> None:
        super().__init__(api_client, **kwargs)
        self._lookup = lookup
        self.admitted: list[tuple[str, str]] = []

    def apply(self, obj: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        kind, meta = obj.get("kind"), obj.get("metadata") or {}
        if kind in WEBHOOKS:
            # The webhook judges the object as the apply leaves it: what the server holds with this
            # apply's fields over it (another manager's fields stay).
            errors = mirror_errors(obj, self._lookup, applied_by=self.field_manager)
            if errors:
                # The API server's own checks (schema, strict fields, CEL) come before validating
                # admission: its refusal, when it has one, is the answer (a dry run persists nothing).
                super().apply(obj, **{**kwargs, "dry_run": True})
                raise InvalidError(
                    f'admission webhook "{WEBHOOKS[kind]}" (mirror) denied {kind} '
                    f"{meta.get('namespace')}/{meta.get('name')}: " + "; ".join(errors),
                    status=422,
                    fields=[e.split(":")[0] for e in errors],
                )
            self.admitted.append((kind, meta.get("name", "")))
        return super().apply(obj, **kwargs)


def kube(cluster, via=None, **kwargs: Any) -> KubeClient:
    """A client for the test cluster (optionally through a fault proxy) whose llm-d writes pass
    KServe's webhook mirror first (:class:`AdmittedClient`)."""
    lookup = KubeClient(cluster.api_client())
    return AdmittedClient(cluster.api_client(via=via), lookup=lookup, **kwargs)


def with_runtime(spec: RolloutSpec, client: KubeClient) -> None:
    """The register step before a deploy, as the pipeline runs them: an InferenceService spec's
    ServingRuntime (``register_runtime``, a no-op when it is already there). KServe reconciles no
    InferenceService whose runtime is missing (``predictor.go`` ``reconcileModel``), nor does the
    stand-in; llm-d specs are left as they are (their tests decide about the preset)."""
    if not spec.llmd.enabled:
        from llm_rollout.kserve.deploy import register_runtime

        register_runtime(spec, client)


def upstream_test_runtime(name: str, namespace: str) -> dict[str, Any]:
    """The ServingRuntime upstream's controller tests create before their InferenceServices
    (``pkg/controller/v1beta1/inferenceservice/tests_common.go`` ``getServingRuntime``): tensorflow
    version 1, auto-selected."""
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "supportedModelFormats": [{"name": "tensorflow", "version": "1", "autoSelect": True}],
            "containers": [
                {
                    "name": "kserve-container",
                    "image": "tensorflow/serving:1.14.0",
                    "command": ["/usr/bin/tensorflow_model_server"],
                    "args": ["--port=9000", "--rest_api_port=8080", "--model_base_path=/mnt/models"],
                }
            ],
            "disabled": False,
        },
    }


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
    # poll_interval: shutdown() returns within 0.05 s instead of up to 0.5 s (each test's teardown)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
