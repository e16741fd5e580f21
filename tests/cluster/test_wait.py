"""The waiter against the real API server and the KServe controller stand-in."""

from __future__ import annotations

import logging
import queue
import threading
import time

import pytest

from llm_rollout.errors import DeadlineExceeded, PermanentError
from llm_rollout.kserve import builders
from llm_rollout.kserve.wait import Readiness, probe_endpoint, wait_ready
from llm_rollout.kube import INFERENCE_SERVICES, LLM_INFERENCE_SERVICES
from tests.cluster._support import kube, llmd_spec, make_spec, models_server

pytestmark = pytest.mark.cluster


@pytest.fixture(autouse=True)
def _registered_runtime(request):
    """Every InferenceService here is the default spec's, whose runtime KServe needs before it
    reconciles anything (``predictor.go`` ``reconcileModel``): registered for the tests that run the
    stand-in (``test_standin_runtime.py`` shows what happens without it)."""
    if "reconciler" in request.fixturenames:
        request.getfixturevalue("serving_runtime")(make_spec(request.getfixturevalue("kube_namespace")))


def _isvc(spec, revision="ra", uri="s3://models/a"):
    return builders.inference_service(spec, builders.default_member(spec, uri, revision))


def test_returns_as_soon_as_ready(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    reconciler.set_default(ready_after_ms=300)
    applied = client.apply(_isvc(spec))
    ready = wait_ready(
        client,
        spec.service_name,
        kube_namespace,
        Readiness.inference_service(min_generation=applied["metadata"]["generation"]),
        timeout_s=20,
    )
    write = reconciler.wait_for_ready_write(spec.service_name)
    assert ready["status"]["observedGeneration"] == 1
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in ready["status"]["conditions"])
    # It returned the object the Ready write produced (how soon is bench/bench_wait.py's figure).
    assert write.resource_version and ready["metadata"]["resourceVersion"] == write.resource_version


def test_timeout_raises_with_conditions_and_likely_causes(kube_cluster, kube_namespace, reconciler, kube_fault_proxy):
    spec = make_spec(kube_namespace)
    reconciler.set_default(mode="never", reason="ImagePullBackOff", message='Back-off pulling image "vllm:x"')
    client = kube(kube_cluster)
    client.apply(_isvc(spec))
    with pytest.raises(DeadlineExceeded) as info:
        wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=2)
    text = str(info.value)
    assert f"InferenceService {kube_namespace}/{spec.service_name} was not ready after 2s" in text
    # KServe's conditions are the Deployment's (PropagateRawStatus); the cause is in the pods.
    assert "Ready=False (MinimumReplicasUnavailable" in text and "PredictorReady=False" in text
    # The test API server does not serve core/v1: said, not raised; the generic reading is given.
    assert "pod states and events unavailable" in text
    assert "the cause (image pull, crash, no GPU) is in the pods and their events" in text
    assert f"serving.kserve.io/inferenceservice={spec.service_name}" in text
    # With the pods and events a cluster has (the stand-in's, served beside the API): the cause.
    reconciler.serve_core_api(kube_fault_proxy)
    with pytest.raises(DeadlineExceeded) as info:
        wait_ready(
            kube(kube_cluster, via=kube_fault_proxy),
            spec.service_name,
            kube_namespace,
            Readiness.inference_service(),
            timeout_s=1,
        )
    text = str(info.value)
    assert "kserve-container waiting ImagePullBackOff" in text and "image pull failed" in text
    assert 'Warning Failed: Failed to pull image "' in text


def _canary(spec, percent=10):
    """The first rollout plus a Standard canary entry (member rb) at ``percent``."""
    stable = builders.default_member(spec, "s3://models/a", "ra")
    canary = builders.Member("rb", "s3://models/b", "rb", traffic_percent=percent)
    return builders.inference_service(spec, stable, canary)


def _generation_rule(applied):
    """The rule this waiter used to apply (and upstream's status breaks): observedGeneration >= generation."""
    return Readiness(INFERENCE_SERVICES, ("Ready",), min_generation=applied["metadata"]["generation"])


def test_a_canary_that_leaves_the_deployment_alone_does_not_hang(kube_cluster, kube_namespace, reconciler):
    """kserve#6081: status.observedGeneration is the predictor Deployment's; adding a canary entry
    leaves that Deployment alone, so it stays below the InferenceService's generation for good."""
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    client.apply(_isvc(spec))
    wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=20)
    applied = client.apply(_canary(spec))
    readiness = Readiness.inference_service(canary="rb", canary_traffic=10, min_generation=2)
    ready = wait_ready(client, spec.service_name, kube_namespace, readiness, timeout_s=20)
    assert [(c["name"], c["ready"], c["trafficPercent"]) for c in ready["status"]["canaryStatuses"]] == [
        ("rb", True, 10)
    ]
    assert ready["metadata"]["generation"] == applied["metadata"]["generation"] == 2
    assert ready["status"]["observedGeneration"] == 1  # the stable Deployment's, untouched
    # The generation rule would wait for an observedGeneration of 2 that never comes.
    with pytest.raises(DeadlineExceeded, match="status is from generation 1"):
        wait_ready(client, spec.service_name, kube_namespace, _generation_rule(applied), timeout_s=1.5)


def test_a_stale_ready_is_not_accepted(kube_cluster, kube_namespace, reconciler):
    """The other half of kserve#6081: an autoscaled Deployment's generation runs ahead, so a status
    the controller wrote before our change can claim a newer generation than the one we applied."""
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    client.apply(_isvc(spec))
    wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=20)
    reconciler.autoscale(spec.service_name, times=3)  # HPA/KEDA: Deployment generation 1 -> 4
    reconciler.wait_for_ready_write(spec.service_name, generation=4)
    reconciler.behave(spec.service_name, mode="stale")  # a lagging controller from here on
    applied = client.apply(_canary(spec))
    live = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    assert live["status"]["observedGeneration"] == 4 > applied["metadata"]["generation"] == 2
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in live["status"]["conditions"])
    # The generation rule takes this status, which knows nothing of the canary, as fresh ...
    stale = wait_ready(client, spec.service_name, kube_namespace, _generation_rule(applied), timeout_s=5)
    assert "canaryStatuses" not in stale["status"]
    # ... the waiter does not: the canary we applied is not in the status.
    readiness = Readiness.inference_service(canary="rb", canary_traffic=10, min_generation=2)
    with pytest.raises(DeadlineExceeded) as info:
        wait_ready(client, spec.service_name, kube_namespace, readiness, timeout_s=1.5)
    assert "canary rb is not in status.canaryStatuses yet" in str(info.value)
    # Once the controller catches up, the same wait succeeds.
    reconciler.behave(spec.service_name, mode="ready")
    ready = wait_ready(client, spec.service_name, kube_namespace, readiness, timeout_s=20)
    assert ready["status"]["canaryStatuses"][0]["trafficPercent"] == 10


def test_a_rolling_update_keeps_ready_and_the_waiter_reads_the_canary_share(kube_cluster, kube_namespace, reconciler):
    """kserve#4626: Ready stays True through a rolling update; a traffic step is fresh only once
    status.canaryStatuses shows the share we applied."""
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    client.apply(_canary(spec, 10))
    wait_ready(
        client,
        spec.service_name,
        kube_namespace,
        Readiness.inference_service(canary="rb", canary_traffic=10),
        timeout_s=20,
    )
    reconciler.set_default(ready_after_ms=800)
    changed = _isvc(spec, "ra", "s3://models/a-patched")  # the stable predictor rolls
    changed["spec"]["canary"] = _canary(spec, 50)["spec"]["canary"]
    applied_at = time.monotonic()
    client.apply(changed)
    reconciler.wait_for_ready_write(spec.service_name, since=applied_at, timeout=10)
    live = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in live["status"]["conditions"])
    ready = wait_ready(
        client,
        spec.service_name,
        kube_namespace,
        Readiness.inference_service(canary="rb", canary_traffic=50),
        timeout_s=20,
    )
    assert ready["status"]["canaryStatuses"][0]["trafficPercent"] == 50


@pytest.mark.fault
def test_watch_expiry_relists(kube_cluster, kube_namespace, reconciler, kube_fault_proxy, caplog):
    caplog.set_level(logging.INFO, logger="llm_rollout.kserve.wait")
    client = kube(kube_cluster, via=kube_fault_proxy)
    spec = make_spec(kube_namespace)
    reconciler.set_default(ready_after_ms=1500)
    # Every (re)opened watch is answered 410 Gone twice: the waiter must re-list, not fail.
    kube_fault_proxy.fail_next_requests(2, status=410, match=lambda method, path: "watch=true" in path)
    client.apply(_isvc(spec))
    ready = wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=30)
    assert ready["status"]["observedGeneration"] == 1
    assert kube_fault_proxy.stats.injected_statuses.get(410) == 2
    assert sum("watch expired (410), re-listing" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.fault
def test_watch_cut_reconnects(kube_cluster, kube_namespace, reconciler, kube_fault_proxy, kube_audit):
    client = kube(kube_cluster, via=kube_fault_proxy)
    spec = make_spec(kube_namespace)
    reconciler.set_default(mode="never")
    client.apply(_isvc(spec))
    result: dict = {}

    def waiter():
        try:
            result["obj"] = wait_ready(
                client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=30
            )
        except Exception as err:  # reported below
            result["err"] = err

    calls = kube_audit(client)
    thread = threading.Thread(target=waiter)
    thread.start()
    for _ in range(600):  # cut the watch once the waiter has opened it (observed, not timed)
        if ("watch", "serving.kserve.io", "inferenceservices") in calls:
            break
        thread.join(timeout=0.1)
    assert ("watch", "serving.kserve.io", "inferenceservices") in calls
    assert kube_fault_proxy.drop_connections() >= 1
    reconciler.set_default(mode="ready")
    thread.join(timeout=40)
    assert "err" not in result, result.get("err")
    assert result["obj"]["status"]["observedGeneration"] == 1
    assert kube_fault_proxy.stats.connections >= 2


def test_logs_only_when_the_reasons_change(kube_cluster, kube_namespace, reconciler, caplog):
    caplog.set_level(logging.INFO, logger="llm_rollout.kserve.wait")
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    reconciler.set_default(mode="never")
    obj = _isvc(spec)
    client.apply(obj)
    stop = threading.Event()

    def churn():
        # Metadata-only changes: MODIFIED events with the same generation and the same conditions.
        i = 0
        while not stop.is_set():
            i += 1
            labelled = {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "metadata": {"name": obj["metadata"]["name"], "namespace": kube_namespace, "labels": {"tick": str(i)}},
            }
            kube(kube_cluster, field_manager="ticker").apply(labelled)
            time.sleep(0.1)

    ticker = threading.Thread(target=churn)
    ticker.start()
    try:
        with pytest.raises(DeadlineExceeded):
            wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=2.5)
    finally:
        stop.set()
        ticker.join()
    waiting = [r.getMessage() for r in caplog.records if "waiting:" in r.getMessage()]
    assert 1 <= len(waiting) <= 3, waiting  # (not observed yet ->) failed; never one per event
    assert len(set(waiting)) == len(waiting)


@pytest.mark.fault
def test_ready_then_degraded(kube_cluster, kube_namespace, reconciler, kube_fault_proxy):
    reconciler.serve_core_api(kube_fault_proxy)  # the pods' state, as a cluster reports it
    client = kube(kube_cluster, via=kube_fault_proxy)
    spec = make_spec(kube_namespace)
    reconciler.behave(
        spec.service_name,
        mode="degrade",
        degrade_after_ms=500,
        reason="CrashLoopBackOff",
        message="back-off restarting failed container kserve-container",
    )
    client.apply(_isvc(spec))
    ready = wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=20)
    assert ready["status"]["observedGeneration"] == 1
    # Ready was true once; a later wait (e.g. a resumed step) sees the degradation and says why.
    for _ in range(600):
        live = client.get(INFERENCE_SERVICES, spec.service_name, kube_namespace)
        if any(c["type"] == "Ready" and c["status"] == "False" for c in live["status"].get("conditions", [])):
            break
        time.sleep(0.1)
    with pytest.raises(DeadlineExceeded) as info:
        wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=1)
    # The pods crash: the Deployment loses availability (its condition is what KServe copies);
    # the crash itself is in the pods' container state and the kubelet's BackOff event.
    assert "Ready=False (MinimumReplicasUnavailable" in str(info.value)
    assert "kserve-container waiting CrashLoopBackOff" in str(info.value)
    assert "the server container crashes" in str(info.value)


@pytest.mark.fault
def test_deleted_while_waiting_fails_at_once(kube_cluster, kube_namespace, reconciler, kube_audit):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    reconciler.set_default(mode="never")
    client.apply(_isvc(spec))
    calls = kube_audit(client)
    outcome: queue.Queue[BaseException | None] = queue.Queue()

    def wait() -> None:
        try:
            # An hour's deadline: only the deletion can end this wait before the test's timeout.
            wait_ready(client, spec.service_name, kube_namespace, Readiness.inference_service(), timeout_s=3600)
            outcome.put(None)
        except BaseException as err:  # reported below
            outcome.put(err)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    # Delete once the waiter is watching (observed progress, not a timer).
    for _ in range(600):
        if ("watch", "serving.kserve.io", "inferenceservices") in calls:
            break
        waiter.join(timeout=0.1)
    assert ("watch", "serving.kserve.io", "inferenceservices") in calls
    client.delete(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    err = outcome.get(timeout=120)
    assert isinstance(err, PermanentError) and "was deleted while waiting" in str(err), err


def test_llm_inference_service_with_prefill(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = llmd_spec(
        kube_namespace,
        model={"uri": "hf://org/tiny"},
        llmd={"prefill": {"replicas": 1}, "scheduler": {"profile": "pd"}},
    )
    member = builders.default_member(spec)
    client.apply(builders.llm_inference_service_config(spec))  # its preset: ConfigNotFound without it
    client.apply(builders.llm_inference_service(spec, member, weight=100))
    ready = wait_ready(client, member.name, kube_namespace, Readiness.llm_inference_service(prefill=True), timeout_s=20)
    types = {c["type"]: c["status"] for c in ready["status"]["conditions"]}
    for kind in ("Ready", "WorkloadsReady", "RouterReady", "PrefillWorkloadReady", "MainWorkloadReady"):
        assert types[kind] == "True"
    assert client.list(LLM_INFERENCE_SERVICES, kube_namespace)["items"][0]["status"]["url"]


def test_probe_endpoint_ready_is_not_serving():
    with models_server(["chat"]) as url:
        assert probe_endpoint(url, "chat", timeout=5) == ["chat"]
        assert probe_endpoint(url + "/v1", "chat", timeout=5) == ["chat"]
        with pytest.raises(DeadlineExceeded) as info:
            probe_endpoint(url, "other", timeout=1.5, interval_s=0.2)
        assert "does not serve 'other'" in str(info.value) and "['chat']" in str(info.value)
    with pytest.raises(DeadlineExceeded, match="ConnectError"):
        probe_endpoint("http://127.0.0.1:9", "chat", timeout=1, interval_s=0.2)


def test_llm_inference_service_ready_follows_its_own_generation(kube_cluster, kube_namespace, reconciler):
    """An LLMInferenceService's observedGeneration is its own generation, written on every reconcile.

    KServe's llmisvc ``controller.go`` ``Reconcile`` wraps each pass in knative.dev/pkg
    ``reconciler.PreProcessReconcile`` (a new generation resets Ready to Unknown,
    ``NewObservedGenFailure``) and ``PostProcessReconcile`` (``status.observedGeneration =
    metadata.generation`` "regardless of success or failure"), then writes the status once. So while
    a new generation rolls out the controller already claims it with Ready not True: the waiter must
    wait through that write, and must not take the previous generation's Ready either.
    """
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace, model={"uri": "hf://org/tiny"})
    member = builders.default_member(spec)
    client.apply(builders.llm_inference_service_config(spec))  # its preset: ConfigNotFound without it
    first = client.apply(builders.llm_inference_service(spec, member, weight=100))
    gen1 = first["metadata"]["generation"]
    wait_ready(client, member.name, kube_namespace, Readiness.llm_inference_service(min_generation=gen1), timeout_s=20)
    reconciler.behave(member.name, ready_after_ms=1500)
    changed = llmd_spec(kube_namespace, model={"uri": "hf://org/tiny"}, llmd={"decode": {"replicas": 2}})
    client.apply(builders.llm_inference_service_config(changed))
    second = client.apply(builders.llm_inference_service(changed, member, weight=100))
    gen2 = second["metadata"]["generation"]
    assert gen2 == gen1 + 1
    applied_at = time.monotonic()
    ready = wait_ready(
        client, member.name, kube_namespace, Readiness.llm_inference_service(min_generation=gen2), timeout_s=20
    )
    write = reconciler.wait_for_ready_write(member.name, generation=gen2)
    assert ready["status"]["observedGeneration"] == gen2 and ready["spec"]["replicas"] == 2
    assert write.sent_at >= applied_at  # it returned on gen2's Ready write, not on the in-progress one
    assert {c["type"]: c["status"] for c in ready["status"]["conditions"]}["Ready"] == "True"
