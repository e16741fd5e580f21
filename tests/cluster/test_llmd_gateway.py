"""A gateway-aware llm-d canary (issue 28 item 5), against the real API server with Gateway API's
Gateway and GatewayClass types installed (``tests/fixtures/crds/``).

Upstream's canary e2e (``test/e2e/llmisvc/test_llm_canary_lifecycle.py``) runs the Service-backend
scenario on any gateway but marks the InferencePool and mixed scenarios
``requires_weighted_inference_pool`` (Istio only: the Envoy AI Gateway disables ext_proc for routes
with several weighted InferencePool backendRefs). So deploy reads the class of the route's Gateway
and refuses a picker-routed weighted canary elsewhere, before anything is written; and a 0 % dark
launch says whether weight 0 is dark there (``router_group_routing.go`` keeps weight-0 backends,
which Envoy Gateway still sends traffic to).
"""

from __future__ import annotations

import logging

import pytest
from kubernetes import client as k8s_client

from llm_rollout.errors import SpecError
from llm_rollout.kserve.deploy import deploy, register_runtime
from llm_rollout.kserve.promote import promote
from llm_rollout.kube import LEASES, LLM_INFERENCE_SERVICES
from tests.cluster._support import kube, llmd_spec, objects_in

pytestmark = pytest.mark.cluster

GW = ("gateway.networking.k8s.io", "v1")
ENVOY = "gateway.envoyproxy.io/gatewayclass-controller"
ISTIO = "istio.io/gateway-controller"
PD = {"prefill": {"replicas": 1}, "scheduler": {"profile": "pd", "pd_threshold_tokens": 256}}


def _gateway(cluster, namespace: str, name: str, controller: str) -> None:
    """A GatewayClass (cluster-scoped, named after the test's namespace) and a Gateway of that class."""
    api = k8s_client.CustomObjectsApi(cluster.api_client())
    cls = f"{name}-{namespace}"[:63]
    api.create_cluster_custom_object(
        *GW,
        "gatewayclasses",
        {
            "apiVersion": "/".join(GW),
            "kind": "GatewayClass",
            "metadata": {"name": cls},
            "spec": {"controllerName": controller},
        },
    )
    api.create_namespaced_custom_object(
        *GW,
        namespace,
        "gateways",
        {
            "apiVersion": "/".join(GW),
            "kind": "Gateway",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"gatewayClassName": cls, "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
        },
    )


def _deploy(spec, client, uri, revision, run_id):
    return deploy(spec, client, model_uri=uri, revision=revision, run_id=run_id, timeout_s=30, probe=False)


def _first(spec, client):
    register_runtime(spec, client)
    first = _deploy(spec, client, "hf://org/model-a", "ra", "run-1")
    promote(spec, client, first, verdict="pass", summary="ok", run_id="run-1")
    return first


def test_a_pd_canary_on_an_envoy_gateway_is_refused_before_any_write(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    _gateway(kube_cluster, kube_namespace, "ai-gw", ENVOY)
    spec = llmd_spec(kube_namespace, canary={"traffic_percent": 10}, llmd={**PD, "gateway_refs": ["ai-gw"]})
    first = _first(spec, client)  # a lone member: no split, nothing to refuse
    before = objects_in(client, kube_namespace)
    leases = client.list(LEASES, kube_namespace)["items"]
    with pytest.raises(SpecError) as info:
        _deploy(spec, client, "hf://org/model-b", "rb", "run-2")
    text = str(info.value)
    assert f"Gateway {kube_namespace}/ai-gw (controller {ENVOY})" in text and "decode-only" in text
    assert "requires_weighted_inference_pool" in text and "istio.io/gateway-controller" in text
    assert "llmd.scheduler.enabled: false" in text and info.value.field == "llmd.gateway_refs"
    # Refused before any write: no member, no lease change.
    assert objects_in(client, kube_namespace) == before
    assert client.list(LEASES, kube_namespace)["items"] == leases
    assert [m["metadata"]["name"] for m in client.list(LLM_INFERENCE_SERVICES, kube_namespace)["items"]] == [
        first.member
    ]


def test_the_same_canary_on_an_istio_gateway_goes_ahead_and_its_dark_launch_is_dark(
    kube_cluster, kube_namespace, reconciler, caplog
):
    client = kube(kube_cluster)
    _gateway(kube_cluster, kube_namespace, "mesh-gw", ISTIO)
    spec = llmd_spec(kube_namespace, llmd={**PD, "gateway_refs": ["mesh-gw"]})  # traffic_percent 0
    _first(spec, client)
    with caplog.at_level(logging.WARNING, logger="llm_rollout.kserve.deploy"):
        record = _deploy(spec, client, "hf://org/model-b", "rb", "run-2")
    assert record.canary and record.traffic_percent == 0
    assert "weight 0 on Istio sends no traffic to the new member" in caplog.text


def test_a_plain_canary_splits_on_any_gateway_but_weight_0_is_not_dark_there(
    kube_cluster, kube_namespace, reconciler, caplog
):
    """Upstream's Service-backend scenario "works with any gateway"; its weight-0 backend does not."""
    client = kube(kube_cluster)
    _gateway(kube_cluster, kube_namespace, "ai-gw", ENVOY)
    spec = llmd_spec(kube_namespace, llmd={"scheduler": {"enabled": False}, "gateway_refs": ["ai-gw"]})
    _first(spec, client)
    with caplog.at_level(logging.WARNING, logger="llm_rollout.kserve.deploy"):
        record = _deploy(spec, client, "hf://org/model-b", "rb", "run-2")
    assert record.canary
    assert "weight 0 is not guaranteed dark" in caplog.text and f"controller {ENVOY}" in caplog.text


def test_an_unreadable_gateway_is_said_not_guessed(kube_cluster, kube_namespace, reconciler, caplog):
    """KServe's default Gateway (kserve/kserve-ingress-gateway) does not exist here: the canary goes on,
    and the log says the split's picker behaviour is unknown."""
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace, canary={"traffic_percent": 10})  # the default picker, default gateway
    _first(spec, client)
    with caplog.at_level(logging.WARNING, logger="llm_rollout.kserve.deploy"):
        _deploy(spec, client, "hf://org/model-b", "rb", "run-2")
    assert "could not read the class of Gateway kserve/kserve-ingress-gateway (not found" in caplog.text
