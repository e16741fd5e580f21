"""A canary under the default autoscaling (Standard mode, KEDA on vLLM's request rate), through the
lifecycle, against the real API server with KEDA's CRD and the stand-in (issue 25 items 2 and 8).

KServe builds a canary with fixed replicas (``predictor.go`` ``buildCanaryPredictor`` zeroes the
autoscaling fields) but its metadata inherits the InferenceService's autoscaler class
(``getAutoscalerClass``); under ``keda`` that is a ScaledObject without triggers
(``createKedaScaledObject``), which KEDA 2.18 refuses, and the predictor's reconcile stops before any
canary status is written. The stand-in applies the ScaledObjects KServe builds
(:mod:`tests.standin_autoscaler`), so it fails the way a cluster does.
"""

from __future__ import annotations

import pytest

from llm_rollout.kserve.deploy import deploy, register_runtime
from llm_rollout.kserve.promote import promote
from llm_rollout.kserve.rollback import rollback
from llm_rollout.kube import INFERENCE_SERVICES
from tests.cluster._support import kube, make_spec

pytestmark = pytest.mark.cluster


def _deploy(spec, client, uri, revision, run):
    return deploy(spec, client, model_uri=uri, revision=revision, run_id=run, timeout_s=30, probe=False)


def _scaled_objects(reconciler, namespace):
    return {
        name: (o["spec"]["scaleTargetRef"]["name"], [t["metadata"].get("query") for t in o["spec"].get("triggers", [])])
        for name, o in reconciler.scaled_objects(namespace).items()
    }


def test_a_second_rollout_under_default_keda_autoscaling_reaches_ready_and_promotes(
    kube_cluster, kube_namespace, reconciler
):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    assert spec.scaling is not None and spec.scaling.metric == "request-rate"  # the default: KEDA
    register_runtime(spec, client)
    first = _deploy(spec, client, "s3://m/a", "ra", "run-1")
    promote(spec, client, first, verdict="pass", summary="ok", run_id="run-1")
    stable_so = _scaled_objects(reconciler, kube_namespace)
    assert list(stable_so) == ["chat-predictor"]
    assert stable_so["chat-predictor"][0] == "chat-predictor"
    assert 'service="chat-predictor"' in stable_so["chat-predictor"][1][0]

    # The canary is reconciled (canaryStatuses), a rollback leaves the stable's autoscaler alone.
    second = _deploy(spec, client, "s3://m/b", "rb", "run-2")
    assert second.canary and second.member == "rb"
    assert reconciler.events == []
    assert _scaled_objects(reconciler, kube_namespace) == stable_so  # the canary has fixed replicas
    rollback(spec, client, second, reason="validation failed", run_id="run-2")
    assert _scaled_objects(reconciler, kube_namespace) == stable_so

    third = _deploy(spec, client, "s3://m/c", "rc", "run-3")
    promote(spec, client, third, verdict="pass", summary="ok", run_id="run-3")
    live = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    assert live["spec"]["predictor"]["name"] == "rc" and not live["spec"].get("canary")
    assert reconciler.events == []
    # Autoscaling after promotion: the promoted predictor scales on its own Service's series, and
    # nothing is left of the old predictor's autoscaler.
    after = _scaled_objects(reconciler, kube_namespace)
    assert list(after) == ["chat-rc-predictor"]
    target, queries = after["chat-rc-predictor"]
    assert target == "chat-rc-predictor" and 'service="chat-rc-predictor"' in queries[0]
    # The autoscaler class is the same in every phase, so promotion keeps the validated pods: the
    # promoted Deployment's pod template (buildObjectMeta) never changed.
    assert reconciler.pod_template_versions(spec.service_name)["chat-rc-predictor"] == 1


def test_runtime_accelerator_pins_the_stable_and_the_canary_pods(kube_cluster, kube_namespace, reconciler):
    """Issue 25 item 9: the pods KServe builds carry the GPU product node selector, canary included."""
    from tests.reconciler import pod_templates

    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, runtime={"accelerator": "nvidia-a10g"})
    register_runtime(spec, client)
    first = _deploy(spec, client, "s3://m/a", "ra", "run-1")
    promote(spec, client, first, verdict="pass", summary="ok", run_id="run-1")
    _deploy(spec, client, "s3://m/b", "rb", "run-2")
    live = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    templates = pod_templates(live)
    assert sorted(templates) == ["chat-predictor", "chat-rb-predictor"]
    for template in templates.values():
        assert template["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A10G"}
