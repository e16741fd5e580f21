"""The stand-in's LLMInferenceService lifecycle as upstream's controller writes it (issue 28 item 4).

Ported from KServe v0.20 (pinned in ``../shared/reference/kserve``):

* presets: ``config_merge.go`` ``reconcileBaseRefs`` - a missing baseRef is PresetsCombined False
  ``ConfigNotFound`` and Ready False with it, never Ready; the controller watches configs, so the
  preset appearing makes the member Ready without another write of ours;
* stop: ``controller_int_stop_test.go`` (cases named below) - with ``serving.kserve.io/stop: "true"``
  every workload and router condition is False ``Stopped``, ``status.workloads`` and the addresses are
  cleared (``workload_single_node.go``, ``router.go`` ``updateRoutingStatus``, ``scheduler.go``,
  ``workload_status.go`` ``observeWorkloadStatus``), and removing the annotation brings it back;
* the waiter reads those states: a missing preset and a stopped member time out naming the cause.
"""

from __future__ import annotations

import copy
import time

import pytest

from llm_rollout.errors import DeadlineExceeded
from llm_rollout.kserve import builders
from llm_rollout.kserve.variants.llmd import _llmisvc_from_live
from llm_rollout.kserve.wait import Readiness, wait_ready
from llm_rollout.kube import LLM_INFERENCE_SERVICES
from tests.cluster._support import kube, llmd_spec

pytestmark = pytest.mark.cluster

PD_PICKER = {"prefill": {"replicas": 1}, "scheduler": {"profile": "pd", "pd_threshold_tokens": 256}}


def _conds(obj):
    return {c["type"]: (c["status"], c.get("reason", "")) for c in (obj.get("status") or {}).get("conditions") or []}


def _until(client, name, namespace, check, timeout_s=15.0):
    """The object once ``check(obj)`` holds, seen through a watch (no sleeps); fails on timeout."""
    deadline = time.monotonic() + timeout_s
    obj = client.get(LLM_INFERENCE_SERVICES, name, namespace)
    while not check(obj):
        left = deadline - time.monotonic()
        assert left > 0, f"{name}: never reached the expected status; last: {obj.get('status')}"
        stream = client.watch(
            LLM_INFERENCE_SERVICES,
            namespace,
            resource_version=obj["metadata"]["resourceVersion"],
            field_selector=f"metadata.name={name}",
            timeout_s=max(1, int(left)),
        )
        with stream:
            for event in stream:
                if event.get("type") in ("ADDED", "MODIFIED"):
                    obj = event["object"]
                    if check(obj):
                        break
    return obj


def _member(spec, revision="ra"):
    return builders.llm_inference_service(spec, builders.default_member(spec, f"hf://org/{revision}", revision), 100)


def _stopped(obj):
    stopped = copy.deepcopy(_llmisvc_from_live(obj, stop=True))
    return stopped


def test_a_missing_preset_is_config_not_found_and_the_preset_appearing_makes_it_ready(
    kube_cluster, kube_namespace, reconciler
):
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace, llmd=PD_PICKER)
    obj = _member(spec)
    name = obj["metadata"]["name"]
    client.apply(obj)
    with pytest.raises(DeadlineExceeded) as info:
        wait_ready(client, name, kube_namespace, Readiness.llm_inference_service(prefill=True), timeout_s=2)
    text = str(info.value)
    preset = builders.preset_name(spec)
    assert f'PresetsCombined=False (ConfigNotFound: LLMInferenceServiceConfig "{preset}" not found' in text
    assert "Ready=False (ConfigNotFound" in text and "run register-runtime" in text
    live = client.get(LLM_INFERENCE_SERVICES, name, kube_namespace)
    # The controller stopped before any child: nothing about workloads was decided yet.
    assert _conds(live)["WorkloadsReady"] == ("Unknown", "") and "workloads" not in live["status"]

    client.apply(builders.llm_inference_service_config(spec))  # no write to the member itself
    ready = wait_ready(client, name, kube_namespace, Readiness.llm_inference_service(prefill=True), timeout_s=15)
    assert _conds(ready)["PresetsCombined"] == ("True", "") and _conds(ready)["PrefillWorkloadReady"] == ("True", "")
    assert ready["metadata"]["generation"] == 1


def test_stop_annotation_marks_workloads_and_router_stopped_and_clears_addresses(
    kube_cluster, kube_namespace, reconciler
):
    """controller_int_stop_test.go: "should delete workload resources when stop annotation is set",
    "should delete router resources ...", "should delete scheduler resources ..."."""
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace, llmd={**PD_PICKER, "gateway_refs": ["inference-gw"]})
    client.apply(builders.llm_inference_service_config(spec))
    obj = _member(spec)
    name = obj["metadata"]["name"]
    client.apply(obj)
    ready = wait_ready(client, name, kube_namespace, Readiness.llm_inference_service(prefill=True), timeout_s=15)
    assert ready["status"]["workloads"]["scheduler"]["name"] == f"{name}-kserve-router-scheduler"
    assert ready["status"]["addresses"] and ready["status"]["address"]

    client.apply(_stopped(ready))
    stopped = _until(client, name, kube_namespace, lambda o: _conds(o).get("MainWorkloadReady", ("",))[0] == "False")
    conds = _conds(stopped)
    for kind in (
        "MainWorkloadReady",
        "PrefillWorkloadReady",
        "HTTPRoutesReady",
        "GatewaysReady",
        "InferencePoolReady",
        "SchedulerWorkloadReady",
    ):
        assert conds[kind] == ("False", "Stopped"), kind
    assert conds["WorkloadsReady"] == ("False", "Stopped") and conds["RouterReady"] == ("False", "Stopped")
    assert conds["Ready"][0] == "False" and conds["PresetsCombined"] == ("True", "")
    status = stopped["status"]
    assert "workloads" not in status and "addresses" not in status and "address" not in status
    assert status["url"] == ready["status"]["url"]  # updateRoutingStatus leaves the URL
    assert status["observedGeneration"] == stopped["metadata"]["generation"]

    # "should recreate resources when stop annotation is removed"
    client.apply(_llmisvc_from_live(stopped))
    back = wait_ready(client, name, kube_namespace, Readiness.llm_inference_service(prefill=True), timeout_s=15)
    assert back["status"]["workloads"]["primary"]["name"] == f"{name}-kserve" and back["status"]["addresses"]


def test_stop_with_a_preset_that_never_existed_does_not_block(kube_cluster, kube_namespace, reconciler):
    """controller_int_stop_test.go: "should not block reconciliation when baseRef config never existed
    and stop is set"."""
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace)
    obj = _member(spec)
    obj["metadata"]["annotations"] = {builders.STOP_ANNOTATION: "true"}
    name = obj["metadata"]["name"]
    client.apply(obj)
    live = _until(client, name, kube_namespace, lambda o: "PresetsCombined" in _conds(o))
    conds = _conds(live)
    assert conds["PresetsCombined"] == ("False", "Stopped") and conds["MainWorkloadReady"] == ("False", "Stopped")
    message = next(c["message"] for c in live["status"]["conditions"] if c["type"] == "PresetsCombined")
    assert message.startswith("Service is stopped with warning: LLMInferenceServiceConfig")


def test_mixed_stop_states_leave_the_running_member_alone(kube_cluster, kube_namespace, reconciler):
    """controller_int_stop_test.go: "should handle multiple services with mixed stop states"; and the
    waiter names a stopped member's cause."""
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace)
    client.apply(builders.llm_inference_service_config(spec))
    one, two = _member(spec, "ra"), _member(spec, "rb")
    for obj in (one, two):
        client.apply(obj)
    names = [o["metadata"]["name"] for o in (one, two)]
    for n in names:
        wait_ready(client, n, kube_namespace, Readiness.llm_inference_service(), timeout_s=15)
    running_before = client.get(LLM_INFERENCE_SERVICES, names[1], kube_namespace)
    client.apply(_stopped(client.get(LLM_INFERENCE_SERVICES, names[0], kube_namespace)))
    _until(client, names[0], kube_namespace, lambda o: "workloads" not in (o.get("status") or {}))
    running = client.get(LLM_INFERENCE_SERVICES, names[1], kube_namespace)
    assert running["metadata"]["resourceVersion"] == running_before["metadata"]["resourceVersion"]
    assert _conds(running)["Ready"] == ("True", "")
    with pytest.raises(DeadlineExceeded) as info:
        wait_ready(client, names[0], kube_namespace, Readiness.llm_inference_service(), timeout_s=1)
    assert "MainWorkloadReady=False (Stopped: Service is stopped)" in str(info.value)
    assert "serving.kserve.io/stop" in str(info.value)
