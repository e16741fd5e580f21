"""llm-d objects against the real API server (KServe's CRDs with their CEL rules) and the waiter.

Every rendered llm-d object - the P/D member with its scheduler, the multi-node members (data and
pipeline parallel workers), per-role autoscaling, a canary member, the shared preset - is applied
with server-side apply and ``fieldValidation=Strict``: the server's schema, pruning and CEL rules
accept it and nothing is dropped. Readiness waits on ``Ready``/``WorkloadsReady``/
``PrefillWorkloadReady``/``RouterReady`` and, on timeout, names each failing condition with its
reason and what it means (a gateway that is not programmed is a gateway problem, not the model's).
"""

from __future__ import annotations

import pytest

from llm_rollout.errors import DeadlineExceeded, PermanentError
from llm_rollout.kserve import builders
from llm_rollout.kserve.wait import Readiness, wait_ready
from llm_rollout.kube import LLM_INFERENCE_SERVICES, KubeClient
from tests.cluster._support import kube, llmd_spec
from tests.webhook_check import llmisvc_webhook_errors

pytestmark = pytest.mark.cluster

PD = {
    "decode": {"replicas": 2, "tensor": 2},
    "prefill": {"replicas": 1, "tensor": 1},
    "scheduler": {"profile": "pd", "pd_threshold_tokens": 256},
}


def _strip(obj):
    """What we sent, minus server-added metadata (for comparing with what the server kept)."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


@pytest.mark.parametrize(
    "llmd",
    [
        pytest.param(PD, id="pd"),
        pytest.param({"decode": {"tensor": 8, "data": 2, "data_local": 1, "nodes": 2}}, id="multi-node-data"),
        pytest.param({"decode": {"tensor": 8, "pipeline": 2, "nodes": 2}}, id="multi-node-pipeline"),
        pytest.param(
            {
                **PD,
                "decode": {"tensor": 2, "scaling": {"min_replicas": 1, "max_replicas": 6}},
                "prefill": {"tensor": 1, "scaling": {"min_replicas": 1, "max_replicas": 3, "metric": "concurrency"}},
            },
            id="pd-autoscaled",
        ),
        pytest.param({"scheduler": {"profile": "load"}, "gateway_refs": ["inference-gw"]}, id="load-named-gateway"),
        pytest.param({"prefill": {"replicas": 1}}, id="pd-kserve-default-picker"),
    ],
)
def test_rendered_llmd_objects_are_accepted_as_rendered(kube_cluster, kube_namespace, llmd):
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace, llmd=llmd)
    member = builders.default_member(spec, "hf://org/model", "ra")
    for obj in (builders.llm_inference_service_config(spec), builders.llm_inference_service(spec, member, weight=100)):
        assert llmisvc_webhook_errors(obj) == []
        applied = client.apply(obj)
        # Strict field validation and pruning kept every field we sent, exactly.
        kept = _strip(applied)
        assert kept == _strip(obj), obj["kind"]


def test_pd_member_and_canary_share_the_group_and_reference_the_preset(kube_cluster, kube_namespace):
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace, llmd=PD)
    client.apply(builders.llm_inference_service_config(spec))
    stable = builders.default_member(spec, "hf://org/a", "ra")
    canary = builders.default_member(spec, "hf://org/b", "rb")
    client.apply(builders.llm_inference_service(spec, stable, weight=100))
    client.apply(builders.llm_inference_service(spec, canary, weight=11))
    items = client.list(LLM_INFERENCE_SERVICES, kube_namespace)["items"]
    routes = {i["metadata"]["name"]: i["spec"]["router"]["route"] for i in items}
    assert {r["group"] for r in routes.values()} == {spec.route_group}
    assert sorted(r["weight"] for r in routes.values()) == [11, 100]
    assert all(i["spec"]["baseRefs"] == [{"name": builders.preset_name(spec)}] for i in items)
    for item in items:
        body = item["spec"]
        for role, workload in (("kv_consumer", body), ("kv_producer", body["prefill"])):
            env = {e["name"]: e for e in workload["template"]["containers"][0]["env"]}
            assert env["VLLM_NIXL_SIDE_CHANNEL_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
            assert f'"kv_role":"{role}"' in env["VLLM_ADDITIONAL_ARGS"]["value"]


def test_the_servers_cel_rules_refuse_what_the_spec_checks_catch_first(kube_cluster, kube_namespace):
    """The CRD's own CEL rules are live here: replicas and scaling together are refused (422).

    A plain client: the webhook mirror (:func:`kube`) would refuse the object before the server sees it.
    """
    client = KubeClient(kube_cluster.api_client())
    spec = llmd_spec(kube_namespace, llmd=PD)
    obj = builders.llm_inference_service(spec, builders.default_member(spec, "hf://org/a", "ra"), weight=100)
    obj["spec"]["prefill"]["scaling"] = {"maxReplicas": 3, "keda": {"triggers": [{"type": "cpu", "metadata": {}}]}}
    with pytest.raises(PermanentError) as info:  # 422: permanent, never retried
        client.apply(obj)
    assert "replicas and scaling are mutually exclusive" in str(info.value)


def _wait(client, name, namespace, timeout_s=2.0):
    return wait_ready(client, name, namespace, Readiness.llm_inference_service(prefill=True), timeout_s=timeout_s)


def test_ready_pd_member_needs_every_condition(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace, llmd=PD)
    client.apply(builders.llm_inference_service_config(spec))  # its preset: ConfigNotFound without it
    obj = builders.llm_inference_service(spec, builders.default_member(spec, "hf://org/a", "ra"), weight=100)
    reconciler.set_default(ready_after_ms=200)
    client.apply(obj)
    ready = _wait(client, obj["metadata"]["name"], kube_namespace, timeout_s=20)
    conds = {c["type"]: c["status"] for c in ready["status"]["conditions"]}
    for kind in ("Ready", "WorkloadsReady", "PrefillWorkloadReady", "RouterReady"):
        assert conds[kind] == "True"


def test_gateway_not_ready_is_named_a_gateway_problem(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace, llmd=PD)
    client.apply(builders.llm_inference_service_config(spec))  # its preset: ConfigNotFound without it
    obj = builders.llm_inference_service(spec, builders.default_member(spec, "hf://org/a", "ra"), weight=100)
    name = obj["metadata"]["name"]
    reconciler.behave(
        name,
        mode="never",
        failing=("GatewaysReady",),
        reason="WaitingForGateway",
        message="Gateway kserve/kserve-ingress-gateway is not Programmed",
    )
    client.apply(obj)
    with pytest.raises(DeadlineExceeded) as info:
        _wait(client, name, kube_namespace)
    text = str(info.value)
    # Each condition with its own reason: the workloads are fine, the router is not.
    assert "WorkloadsReady=True" in text and "PrefillWorkloadReady=True" in text
    assert "RouterReady=False (WaitingForGateway" in text and "GatewaysReady=False (WaitingForGateway" in text
    assert "gateway/route is not programmed" in text and "llmd.gateway_refs" in text
    assert "image pull" not in text and "OOM" not in text


def test_prefill_workload_not_ready_is_named_with_its_reason(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace, llmd=PD)
    client.apply(builders.llm_inference_service_config(spec))  # its preset: ConfigNotFound without it
    obj = builders.llm_inference_service(spec, builders.default_member(spec, "hf://org/a", "ra"), weight=100)
    name = obj["metadata"]["name"]
    reconciler.behave(
        name,
        mode="never",
        failing=("PrefillWorkloadReady",),
        reason="FailedScheduling",
        message="0/4 nodes are available: 4 Insufficient nvidia.com/gpu",
    )
    client.apply(obj)
    with pytest.raises(DeadlineExceeded) as info:
        _wait(client, name, kube_namespace)
    text = str(info.value)
    assert "PrefillWorkloadReady=False (FailedScheduling" in text and "MainWorkloadReady=True" in text
    assert "RouterReady=True" in text
    assert "pods cannot be scheduled" in text
