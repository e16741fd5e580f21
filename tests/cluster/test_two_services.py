"""Two services in one namespace: each registers its own runtime and rolls out (issue 25 item 7).

The test API server runs no admission webhooks, so before each register-runtime the object is put
through the mirror of KServe's ServingRuntime webhook (:func:`tests.webhook_check.servingruntime_webhook_errors`,
``servingruntime_webhook.go`` ``validateServingRuntimePriority``) against the runtimes already live
in the namespace, as the webhook checks them; a refusal fails the test as the 403 would on a cluster.
"""

from __future__ import annotations

import pytest

from llm_rollout.kserve import builders
from llm_rollout.kserve.deploy import deploy, register_runtime
from llm_rollout.kserve.promote import promote
from llm_rollout.kube import INFERENCE_SERVICES, SERVING_RUNTIMES
from tests.cluster._support import kube, make_spec
from tests.webhook_check import servingruntime_webhook_errors

pytestmark = pytest.mark.cluster


def _admitted_register(spec, client):
    live = client.list(SERVING_RUNTIMES, spec.namespace).get("items") or []
    assert servingruntime_webhook_errors(builders.serving_runtime(spec), live) == []
    register_runtime(spec, client)


def test_two_services_in_one_namespace_both_register_and_roll_out(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    chat, code = make_spec(kube_namespace, name="chat"), make_spec(kube_namespace, name="code")
    for spec in (chat, code):
        _admitted_register(spec, client)
    names = sorted(r["metadata"]["name"] for r in client.list(SERVING_RUNTIMES, kube_namespace)["items"])
    assert names == ["chat-vllm", "code-vllm"]
    for spec in (chat, code):
        first = deploy(
            spec, client, model_uri=f"s3://m/{spec.name}/a", revision="ra", run_id="r1", timeout_s=30, probe=False
        )
        promote(spec, client, first, verdict="pass", summary="ok", run_id="r1")
        live = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)
        assert live["spec"]["predictor"]["model"]["runtime"] == spec.runtime_name  # each names its own
    # A rerun of register-runtime updates its own object and is admitted again.
    _admitted_register(chat, client)
