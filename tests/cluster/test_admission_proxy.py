"""KServe's webhook mirror at the wire (issue 25: every object the e2e tier applies passes it).

:class:`tests.fixtures.admission.AdmissionProxy` stands between a plain :class:`KubeClient` (what the
pipeline's steps build from ``$KUBECONFIG``) and the test API server: a write the mirror refuses is
answered as a cluster answers a webhook's denial (403, ``admission webhook "..." denied the
request: ...``) and nothing is stored; a good one passes unchanged, whatever the verb (apply,
create, merge patch).
"""

from __future__ import annotations

import json

import kubernetes
import pytest

from llm_rollout.kserve.deploy import register_runtime
from llm_rollout.kube import SERVING_RUNTIMES, ForbiddenError, KubeClient
from tests.cluster._support import make_spec, upstream_test_runtime
from tests.fixtures.admission import AdmissionProxy

pytestmark = pytest.mark.cluster

SR_WEBHOOK = 'admission webhook "servingruntime.kserve-webhook-server.validator" denied the request'


def _runtime(name: str, namespace: str, priority: int = 1) -> dict:
    """``getServingRuntime`` of upstream's controller tests with a priority on its auto-selected format
    and a protocol version (the priority rule compares runtimes that share one)."""
    obj = upstream_test_runtime(name, namespace)
    obj["spec"].update(_formats(priority), protocolVersions=["v2"])
    return obj


def _formats(priority: int) -> dict:
    return {"supportedModelFormats": [{"name": "tensorflow", "version": "1", "autoSelect": True, "priority": priority}]}


@pytest.fixture
def admission(kube_cluster):
    from tests.fixtures.cluster import RealCluster, needs_test_apiserver

    if isinstance(kube_cluster, RealCluster):
        needs_test_apiserver("the admission proxy (a real cluster runs KServe's own webhooks)")
    with AdmissionProxy(kube_cluster) as proxy:
        yield proxy


def test_the_proxy_refuses_what_the_webhook_mirror_refuses_and_passes_the_rest(kube_cluster, kube_namespace, admission):
    client = KubeClient(kube_cluster.api_client(via=admission.proxy))
    direct = KubeClient(kube_cluster.api_client())

    # A good object passes: the product's own runtime, applied as register-runtime applies it.
    register_runtime(make_spec(kube_namespace), client)
    client.apply(_runtime("first", kube_namespace))
    assert [(k, n) for _m, k, n in admission.admitted] == [("ServingRuntime", "chat-vllm"), ("ServingRuntime", "first")]

    # servingruntime_webhook.go validateServingRuntimePriority: a second auto-selected runtime of the
    # same format, version and priority is refused (apply), and nothing is stored.
    with pytest.raises(ForbiddenError) as refused:
        client.apply(_runtime("second", kube_namespace))
    assert SR_WEBHOOK in str(refused.value)
    assert "same priority assigned for the model format tensorflow" in str(refused.value)
    assert direct.get_or_none(SERVING_RUNTIMES, "second", kube_namespace) is None

    # The same refusal for a create (POST) from another client, with the API server's Status shape.
    api = kubernetes.client.CustomObjectsApi(kube_cluster.api_client(via=admission.proxy))
    with pytest.raises(kubernetes.client.ApiException) as created:
        api.create_namespaced_custom_object(
            "serving.kserve.io", "v1alpha1", kube_namespace, "servingruntimes", _runtime("third", kube_namespace)
        )
    status = json.loads(created.value.body)
    assert created.value.status == 403 and (status["reason"], status["code"]) == ("Forbidden", 403)
    assert status["message"].startswith(SR_WEBHOOK + ": ServingRuntime ")
    assert direct.get_or_none(SERVING_RUNTIMES, "third", kube_namespace) is None

    # A merge patch is judged on the object as the server would store it: another priority passes,
    # the clashing one does not.
    api.patch_namespaced_custom_object(
        "serving.kserve.io",
        "v1alpha1",
        kube_namespace,
        "servingruntimes",
        "first",
        {"spec": _formats(2)},
    )
    client.apply(_runtime("second", kube_namespace))  # priority 1 is free now
    with pytest.raises(kubernetes.client.ApiException) as patched:
        api.patch_namespaced_custom_object(
            "serving.kserve.io",
            "v1alpha1",
            kube_namespace,
            "servingruntimes",
            "first",
            {"spec": _formats(1)},
        )
    assert patched.value.status == 403 and SR_WEBHOOK in json.loads(patched.value.body)["message"]
    live = direct.get(SERVING_RUNTIMES, "first", kube_namespace)
    assert live["spec"]["supportedModelFormats"][0]["priority"] == 2
    assert [d[2] for d in admission.denied] == ["second", "third", "first"]


def test_the_proxy_refuses_an_inference_service_the_webhook_refuses(kube_cluster, kube_namespace, admission):
    client = KubeClient(kube_cluster.api_client(via=admission.proxy))
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "chat", "namespace": kube_namespace},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "huggingface"}, "storageUri": "s3://m/a"}}},
    }
    client.apply(isvc)
    # inference_service_validation.go validateReplicas: minReplicas above maxReplicas.
    bad = {**isvc, "spec": {"predictor": {**isvc["spec"]["predictor"], "minReplicas": 3, "maxReplicas": 2}}}
    with pytest.raises(ForbiddenError) as refused:
        client.apply(bad)
    assert 'admission webhook "inferenceservice.kserve-webhook-server.validator" denied the request' in str(
        refused.value
    )
    assert "MinReplicas cannot be greater than MaxReplicas" in str(refused.value)
    assert ("PATCH", "InferenceService", "chat") in admission.admitted
