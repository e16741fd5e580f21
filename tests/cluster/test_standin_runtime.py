"""KServe 0.20 at run time, on the stand-in: runtime resolution, canary replicas, ingress readiness,
failure reasons (issue 25 item 10).

Each case is what upstream's controller does (cited beside it) and what the old stand-in did not:
it marked a service Ready whatever its runtime, a 0-replica canary ready, ``IngressReady`` always
True, and wrote the pods' cause (``ImagePullBackOff``) into the conditions, where KServe only ever
copies the Deployment's (``MinimumReplicasUnavailable``, ``ProgressDeadlineExceeded``).
"""

from __future__ import annotations

import copy
import time

import pytest

from llm_rollout.errors import DeadlineExceeded
from llm_rollout.kserve import builders
from llm_rollout.kserve.wait import Readiness, wait_ready
from llm_rollout.kube import INFERENCE_SERVICES, SERVING_RUNTIMES, KubeClient
from tests.cluster._support import kube, make_spec

pytestmark = pytest.mark.cluster


def _isvc(spec, revision="ra", uri="s3://models/a", canary=None):
    stable = builders.default_member(spec, uri, revision)
    return builders.inference_service(spec, stable, canary)


def _live_status(client, spec, until, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        live = client.get(INFERENCE_SERVICES, spec.service_name, spec.namespace)
        status = live.get("status") or {}
        if until(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def _cond(status, kind):
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def test_missing_runtime_is_runtime_not_recognized_until_registered(
    kube_cluster, kube_namespace, reconciler, serving_runtime
):
    """``predictor.go`` ``reconcileModel``: ``GetServingRuntime`` finds neither a ServingRuntime nor
    a ClusterServingRuntime -> ``modelStatus`` InvalidSpec / FailedToLoad with lastFailureInfo
    RuntimeNotRecognized "Waiting for runtime to become available", an InternalError event, no
    child and no Ready; our wait names the runtime and the fix; registered, it is picked up."""
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    client.apply(_isvc(spec))
    status = _live_status(client, spec, lambda s: (s.get("modelStatus") or {}).get("lastFailureInfo"))
    model = status["modelStatus"]
    assert model["transitionStatus"] == "InvalidSpec"
    assert model["states"]["targetModelState"] == "FailedToLoad"
    assert model["lastFailureInfo"] == {
        "reason": "RuntimeNotRecognized",
        "message": "Waiting for runtime to become available",
    }
    # InitializeConditions: nothing is True, and no condition carries the runtime's reason.
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "IngressReady": "Unknown",
        "PredictorReady": "Unknown",
        "Ready": "Unknown",
    }
    assert reconciler.deployments_of(spec.service_name) == {}
    assert (
        spec.service_name,
        "InternalError",
        f"No ServingRuntimes or ClusterServingRuntimes with the name: {spec.runtime_name}",
    ) in reconciler.events
    with pytest.raises(DeadlineExceeded) as info:
        wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=1)
    text = str(info.value)
    assert f"KServe cannot use the ServingRuntime {spec.runtime_name}: modelStatus RuntimeNotRecognized" in text
    assert "run register-runtime with this spec for this namespace" in text

    serving_runtime(spec)  # controller-runtime retries the failed reconcile with backoff
    ready = wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=20)
    assert ready["status"]["servingRuntimeName"] == spec.runtime_name
    # PropagateModelStatus: UpdateModelRevisionStates(Loaded, nil) leaves lastFailureInfo as it was;
    # the transition status says the spec is served now (the waiter reads only InvalidSpec).
    assert ready["status"]["modelStatus"]["transitionStatus"] == "UpToDate"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda rt: rt["spec"].update(supportedModelFormats=[{"name": "sklearn", "autoSelect": False}]),
            "Specified runtime does not support specified framework/version",
        ),
        (lambda rt: rt["spec"].update(disabled=True), "Specified runtime is disabled"),
    ],
    ids=["other-format", "disabled"],
)
def test_runtime_that_cannot_serve_the_model(kube_cluster, kube_namespace, reconciler, change, message):
    """``reconcileModel``: a runtime without the model's format is NoSupportingRuntime
    (``RuntimeSupportsModel``), a disabled one RuntimeDisabled; neither gets a Deployment."""
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    runtime = copy.deepcopy(builders.serving_runtime(spec))
    change(runtime)
    KubeClient(kube_cluster.api_client()).apply(runtime)
    client.apply(_isvc(spec))
    status = _live_status(client, spec, lambda s: (s.get("modelStatus") or {}).get("lastFailureInfo"))
    info = status["modelStatus"]["lastFailureInfo"]
    assert info["message"] == message
    assert info["reason"] == ("RuntimeDisabled" if "disabled" in message else "NoSupportingRuntime")
    assert reconciler.deployments_of(spec.service_name) == {}
    assert client.get(SERVING_RUNTIMES, spec.runtime_name, kube_namespace)


def test_canary_with_zero_replicas_is_never_ready(kube_cluster, kube_namespace, reconciler, serving_runtime):
    """``predictor.go`` ``canaryReplicaCount`` (the canary's minReplicas, else ceil(stable * percent
    / 100)) and ``reconcileCanaryDeployments`` (ready = ``AvailableReplicas > 0``): a canary at 0 %
    without minReplicas, or with minReplicas 0, has no pod and stays CanariesNotReady; ours keeps
    one replica and is ready at 0 %."""
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    serving_runtime(spec)
    client.apply(_isvc(spec))
    wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=20)
    ours = _isvc(spec, canary=builders.default_member(spec, "s3://models/b", "rb"))
    ours["spec"]["canary"][0]["trafficPercent"] = 0
    name = ours["spec"]["canary"][0]["predictor"]["name"]
    client.apply(ours)
    ready = wait_ready(
        client, spec.service_name, kube_namespace, Readiness.inference_service(canary=name), timeout_s=20
    )
    assert ready["status"]["canaryStatuses"] == [{"name": name, "ready": True, "trafficPercent": 0}]

    for entry in ({"minReplicas": 0}, {}):
        dark = copy.deepcopy(ours)
        dark["spec"]["canary"][0]["predictor"].pop("minReplicas", None)
        dark["spec"]["canary"][0]["predictor"].update(entry)
        client.apply(dark, force=True)
        status = _live_status(
            client, spec, lambda s: not all(c.get("ready") for c in s.get("canaryStatuses") or [{"ready": 1}])
        )
        assert status["canaryStatuses"] == [{"name": name, "ready": False, "trafficPercent": 0}], entry
        assert _cond(status, "CanaryPredictorReady")["reason"] == "CanariesNotReady"
        with pytest.raises(DeadlineExceeded, match="reports ready=false"):
            wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(canary=name), timeout_s=1)


def test_ingress_ready_only_once_the_predictor_is(kube_cluster, kube_namespace, reconciler, serving_runtime):
    """``kube_ingress_reconciler.go`` ``createRawIngress``: no ingress while PredictorReady is not
    True (IngressReady False "Predictor ingress not created", no URL or address written); then
    IngressReady True with the URLs. Ready follows the living condition set."""
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    serving_runtime(spec)
    reconciler.set_default(mode="never")
    client.apply(_isvc(spec))
    status = _live_status(client, spec, lambda s: _cond(s, "PredictorReady").get("status") == "False")
    assert _cond(status, "IngressReady") == {
        **_cond(status, "IngressReady"),
        "status": "False",
        "reason": "Predictor ingress not created",
    }
    assert "url" not in status and "address" not in status
    assert _cond(status, "Ready")["status"] == "False"
    reconciler.set_default(mode="ready")
    ready = wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=20)
    assert _cond(ready["status"], "IngressReady")["status"] == "True"
    assert ready["status"]["url"] == f"http://{spec.service_name}-{kube_namespace}.example.com"


@pytest.mark.parametrize(
    ("reason", "message", "in_pods", "cause"),
    [
        ("ImagePullBackOff", 'Back-off pulling image "vllm/vllm-openai:nope"', "ImagePullBackOff", "image pull failed"),
        ("CrashLoopBackOff", "", "CrashLoopBackOff", "the server container crashes"),
        ("OOMKilled", "", "last terminated OOMKilled (exit 137)", "OOM-killed at startup"),
        ("Unschedulable", "", "Insufficient nvidia.com/gpu", "pods cannot be scheduled"),
    ],
    ids=["image-pull", "crash", "oom", "no-gpu"],
)
def test_failure_reasons_are_the_deployments_and_the_cause_is_in_pods(
    kube_cluster, kube_namespace, reconciler, serving_runtime, kube_fault_proxy, reason, message, in_pods, cause
):
    """``inference_service_status.go`` ``PropagateRawStatus``: PredictorReady and Ready carry the
    Deployment's condition (a pod that never comes up: MinimumReplicasUnavailable); the pod-level
    cause appears nowhere in the InferenceService. ``diagnose.py`` finds it in the pods (container
    states, PodScheduled) and the kubelet's and scheduler's events, read through the API."""
    spec = make_spec(kube_namespace)
    serving_runtime(spec)
    reconciler.set_default(mode="never", reason=reason, **({"message": message} if message else {}))
    reconciler.serve_core_api(kube_fault_proxy)
    client = kube(kube_cluster, via=kube_fault_proxy)
    client.apply(_isvc(spec))
    status = _live_status(client, spec, lambda s: _cond(s, "PredictorReady").get("status") == "False")
    assert _cond(status, "PredictorReady")["reason"] == "MinimumReplicasUnavailable"
    assert _cond(status, "Ready")["reason"] == "MinimumReplicasUnavailable"
    assert reason not in str(status)
    with pytest.raises(DeadlineExceeded) as info:
        wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=1)
    text = str(info.value)
    assert "PredictorReady=False (MinimumReplicasUnavailable" in text
    assert in_pods in text and cause in text, text


def test_failed_update_is_progress_deadline_exceeded(kube_cluster, kube_namespace, reconciler, serving_runtime):
    """A new model whose pods never come up while the old ones serve: the Deployment stays Available
    and its Progressing turns False ProgressDeadlineExceeded, which ``PropagateRawStatus`` copies."""
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    serving_runtime(spec)
    client.apply(_isvc(spec))
    wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=20)
    reconciler.set_default(mode="never")
    client.apply(_isvc(spec, "rb", "s3://models/b"))
    status = _live_status(client, spec, lambda s: _cond(s, "PredictorReady").get("status") == "False")
    assert _cond(status, "PredictorReady")["reason"] == "ProgressDeadlineExceeded"
    assert "ImagePullBackOff" not in str(status)


def test_delete_is_asynchronous_behind_the_finalizer(kube_cluster, kube_namespace, reconciler, serving_runtime):
    """``controller.go`` ``Reconcile``: the controller adds ``inferenceservice.finalizers`` first; a
    delete then only sets ``deletionTimestamp`` (the object stays, its status no longer reconciled)
    until the controller has cleaned up and dropped the finalizer; then it is gone, children too.
    :func:`wait_deleted` waits for that."""
    from llm_rollout.kserve.wait import wait_deleted

    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    serving_runtime(spec)
    reconciler.set_default(finalize_after_ms=2500)
    client.apply(_isvc(spec))
    ready = wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=20)
    assert ready["metadata"]["finalizers"] == ["inferenceservice.finalizers"]
    assert reconciler.deployments_of(spec.service_name)
    client.delete(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    terminating = client.get_or_none(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    assert terminating is not None and terminating["metadata"]["deletionTimestamp"]
    with pytest.raises(DeadlineExceeded, match=r"finalizers \['inferenceservice.finalizers'\]"):
        wait_deleted(client, INFERENCE_SERVICES, spec.service_name, kube_namespace, timeout_s=0.2)
    wait_deleted(client, INFERENCE_SERVICES, spec.service_name, kube_namespace, timeout_s=10)
    assert client.get_or_none(INFERENCE_SERVICES, spec.service_name, kube_namespace) is None
    assert reconciler.deployments_of(spec.service_name) == {}
    assert spec.service_name in reconciler.finalized


def test_stop_annotation_as_upstream(kube_cluster, kube_namespace, reconciler, serving_runtime):
    """``serving.kserve.io/stop: "true"`` (``predictor.go`` ``Reconcile``, ``controller.go``, the
    ingress reconcilers): workloads deleted, the status cleared to PredictorReady / IngressReady /
    Ready False ``Stopped`` and ``Stopped`` True; our wait says the service is stopped; without the
    annotation it comes back (the old stand-in ignored the annotation and stayed Ready)."""
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    serving_runtime(spec)
    obj = _isvc(spec)
    client.apply(obj)
    ready = wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=20)
    assert _cond(ready["status"], "Stopped")["status"] == "False"
    stopped = copy.deepcopy(obj)
    stopped["metadata"].setdefault("annotations", {})["serving.kserve.io/stop"] = "true"
    client.apply(stopped)
    status = _live_status(client, spec, lambda s: _cond(s, "Stopped").get("status") == "True")
    assert {c["type"]: (c["status"], c.get("reason", "")) for c in status["conditions"]} == {
        "PredictorReady": ("False", "Stopped"),
        "IngressReady": ("False", "Stopped"),
        "Ready": ("False", "Stopped"),
        "Stopped": ("True", ""),
    }
    assert "observedGeneration" not in status and "url" not in status and "modelStatus" not in status
    assert reconciler.deployments_of(spec.service_name) == {}
    with pytest.raises(DeadlineExceeded, match="the service is stopped"):
        wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=1)
    client.apply(obj)
    back = wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=20)
    assert _cond(back["status"], "Stopped")["status"] == "False"
