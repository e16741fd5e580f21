"""promote / rollback / finalize / the rollout lease, against the real API server and the stand-in controller.

Every test asserts the exact objects on the server afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from llm_rollout.errors import PermanentError, SpecError
from llm_rollout.kserve import lease, records
from llm_rollout.kserve.builders import LABEL_MEMBER, LABEL_REVISION, LABEL_RUN_ID, STOP_ANNOTATION
from llm_rollout.kserve.deploy import deploy
from llm_rollout.kserve.lease import LeaseHeld
from llm_rollout.kserve.platform import KServePlatform
from llm_rollout.kserve.promote import GateFailed, Promoted, promote
from llm_rollout.kserve.restore import rollback_to_previous
from llm_rollout.kserve.rollback import finalize_run, rollback
from llm_rollout.kserve.variants import variant_for
from llm_rollout.kserve.variants.base import PromotionConflict
from llm_rollout.kube import INFERENCE_SERVICES, LEASES, LLM_INFERENCE_SERVICES
from llm_rollout.kube.errors import FIELD_MANAGER
from llm_rollout.platform import format_status
from llm_rollout.spec import RolloutSpec
from tests.cluster._support import kube, llmd_spec, make_spec, objects_in, rv, with_runtime
from tests.reconciler import FIELD_MANAGER as STANDIN_MANAGER

pytestmark = pytest.mark.cluster


def status(client, name, namespace):
    """``llm-rollout status NAME``: the platform finds the service's kind on the cluster."""
    return KServePlatform(RolloutSpec(name=name, namespace=namespace, platform="kserve"), client).status()


def _deploy(spec, client, uri, revision, run_id, **kwargs):
    kwargs.setdefault("timeout_s", 30)
    kwargs.setdefault("probe", False)
    with_runtime(spec, client)
    return deploy(spec, client, model_uri=uri, revision=revision, run_id=run_id, **kwargs)


def _promote(spec, client, record, run_id=None, **kwargs):
    return promote(
        spec, client, record, verdict="pass", summary="p95_ttft_ms 42 <= 100", run_id=run_id or record.run_id, **kwargs
    )


def _isvc(client, spec):
    return client.get(INFERENCE_SERVICES, spec.service_name, spec.namespace)


def _ann(obj):
    return obj["metadata"].get("annotations") or {}


def _state(client, spec):
    """The service's rollout Lease ``<service>-rollout``: lease and records, never on the serving object."""
    return client.get(LEASES, f"{spec.service_name}-rollout", spec.namespace)


def _held_by(client, spec):
    held = lease.lease_of(_state(client, spec))
    return held and held["holder"]


def _managers(obj):
    """Field managers of the object's spec and metadata, but the controller's (KServe writes its
    finalizer, ``controller.go``: the stand-in's ``FIELD_MANAGER``)."""
    entries = obj["metadata"].get("managedFields") or []
    return sorted({m["manager"] for m in entries if not m.get("subresource") and m["manager"] != STANDIN_MANAGER})


def _promoted(canary_pred, member, namespace):
    """The predictor a promoted canary entry of a default spec (``make_spec``, service ``chat``) must be.

    Written out, not built with the library: upstream's raw-deployment canary promotion (KServe
    ``test/e2e/predictor/test_canary_raw_deployment.py``) sets ``predictor.name`` to the canary's
    name and drops the entry, so the predictor is the canary entry (name, model, labels ...) with
    the default spec's stable scaling back (1 to 10 replicas, KEDA on 10 requests/s) in place of
    the canary's fixed ``minReplicas``; the KEDA query selects the promoted predictor's own Service,
    ``<isvc>-<predictor name>-predictor`` (KServe ``pkg/constants/constants.go`` ``PredictorServiceName``).
    """
    query = f'sum(rate(vllm:request_success_total{{namespace="{namespace}",service="chat-{member}-predictor"}}[1m]))'
    keda = {
        "backend": "prometheus",
        "serverAddress": "http://prometheus-operated.monitoring.svc:9090",
        "query": query,
    }
    return {
        **{k: v for k, v in canary_pred.items() if k != "minReplicas"},
        "name": member,
        "minReplicas": 1,
        "maxReplicas": 10,
        "autoScaling": {
            "metrics": [{"type": "External", "external": {"metric": keda, "target": {"type": "Value", "value": "10"}}}]
        },
    }


def _stable_isvc(spec, client, uri="s3://models/a", rev="ra", run_id="run-1"):
    """A promoted first rollout: the stable revision every canary test starts from."""
    first = _deploy(spec, client, uri, rev, run_id)
    assert _promote(spec, client, first).action == "promote"
    return first


# InferenceService, Standard mode --------------------------------------------------------------------


def test_first_rollout_pass_marks_it_stable_and_records_it(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    first = _deploy(spec, client, "s3://models/a", "ra", "run-1", artifact_digest="sha256:aaa")
    live = _isvc(client, spec)
    assert _held_by(client, spec) == "run-1"
    assert live["spec"]["predictor"]["labels"] == {
        LABEL_MEMBER: first.member,
        LABEL_REVISION: "ra",
        LABEL_RUN_ID: "run-1",
    }

    result = _promote(spec, client, first)
    assert result.action == "promote" and "first rollout" in result.message
    after = _isvc(client, spec)
    assert after["spec"] == live["spec"] and after["metadata"]["generation"] == live["metadata"]["generation"]
    assert after["metadata"]["labels"] == live["metadata"]["labels"] and _ann(after) == _ann(live)
    ann = _ann(_state(client, spec))
    assert ann[records.PROMOTED_MEMBER] == first.member
    assert ann[records.PROMOTED_MODEL_URI] == "s3://models/a"
    assert ann[records.PROMOTED_DIGEST] == "sha256:aaa"
    assert ann[records.PROMOTED_RUN_ID] == "run-1"
    assert ann[records.PROMOTED_VERDICT] == "pass: p95_ttft_ms 42 <= 100"
    assert ann[records.PROMOTED_AT].endswith("Z")
    assert _held_by(client, spec) is None and records.PREVIOUS_STABLE not in ann
    history = json.loads(ann[records.HISTORY])
    assert [(h["action"], h["member"], h["run_id"]) for h in history] == [("promote", first.member, "run-1")]
    # Lease and records are written to the Lease only; the InferenceService is the spec's manager's alone.
    assert _managers(after) == ["llm-rollout"] and records.RECORD_MANAGER in _managers(_state(client, spec))

    again = _promote(spec, client, first)
    assert again.action == "none" and again.message.startswith("already promoted")
    assert rv(_isvc(client, spec)) == rv(after)


def test_first_rollout_fail_deletes_the_unvalidated_service(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    first = _deploy(spec, client, "s3://models/a", "ra", "run-1")
    result = rollback(spec, client, first, reason="verdict fail: p95_ttft_ms 340 > 100", run_id="run-1")
    assert result.action == "rollback" and "deleted" in result.message
    assert objects_in(client, kube_namespace)["inferenceservices"] == []
    assert rollback(spec, client, first, reason="again", run_id="run-1").action == "none"


def test_standard_promote_moves_the_canary_into_the_predictor(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, canary={"traffic_percent": 10})
    first = _stable_isvc(spec, client)
    stable_pred = _isvc(client, spec)["spec"]["predictor"]
    record = _deploy(spec, client, "s3://models/b", "rb", "run-2", artifact_digest="sha256:bbb")
    before = _isvc(client, spec)
    canary_pred = before["spec"]["canary"][0]["predictor"]
    assert canary_pred["labels"] == {LABEL_MEMBER: record.member, LABEL_REVISION: "rb", LABEL_RUN_ID: "run-2"}
    assert _held_by(client, spec) == "run-2"

    result = _promote(spec, client, record)
    assert result == Promoted(
        "promote",
        f"promoted {record.member} (s3://models/b) in chat; replaced {first.member}",
        record.member,
        first.member,
    )
    live = _isvc(client, spec)
    # The canary's predictor, name included (KServe keeps its Deployment and pods), is the predictor
    # now, with the stable's scaling fields back (a canary has fixed replicas).
    assert record.member == "rb" and "maxReplicas" not in canary_pred
    assert live["spec"] == {"predictor": _promoted(canary_pred, "rb", kube_namespace)}
    assert live["spec"]["predictor"]["maxReplicas"] == stable_pred["maxReplicas"]
    assert live["spec"]["predictor"]["labels"][LABEL_REVISION] == "rb"
    assert live["metadata"]["labels"] == before["metadata"]["labels"] and _ann(live) == _ann(before)
    # Validated at the Service KServe creates for the canary, which serves as the stable one now.
    assert record.endpoint_url == f"http://chat-rb-predictor.{kube_namespace}.svc.cluster.local"
    ann = _ann(_state(client, spec))
    assert ann[records.PROMOTED_MEMBER] == record.member and ann[records.PROMOTED_DIGEST] == "sha256:bbb"
    previous = json.loads(ann[records.PREVIOUS_STABLE])
    assert previous["member"] == first.member and previous["model_uri"] == "s3://models/a"
    assert previous["predictor"] == stable_pred
    assert [h["member"] for h in json.loads(ann[records.HISTORY])] == [record.member, first.member]
    assert _held_by(client, spec) is None and lease.PROMOTION_STEP not in ann

    assert _promote(spec, client, record).action == "none"
    assert _ours(_isvc(client, spec)) == _ours(live)

    # `llm-rollout status` shows it; `llm-rollout rollback` puts the previous model back.
    st = status(client, spec.service_name, kube_namespace)
    assert [(r.role, r.member, r.traffic_percent, r.ready) for r in st.revisions] == [
        ("stable", record.member, 100, True)
    ]
    text = format_status(st)
    assert record.member in text and f"previous stable: {first.member}" in text and "p95_ttft_ms 42" in text
    back = rollback_to_previous(spec, client, run_id="manual", timeout_s=30)
    assert back.member == first.member and back.previous == record.member
    restored = _isvc(client, spec)
    assert restored["spec"] == {"predictor": stable_pred}
    assert restored["spec"]["predictor"]["labels"][LABEL_REVISION] == "ra"
    assert _ann(_state(client, spec))[records.PROMOTED_MEMBER] == first.member
    assert json.loads(_ann(_state(client, spec))[records.PREVIOUS_STABLE])["member"] == record.member


def test_standard_rollback_leaves_the_stable_predictor_exactly_as_it_was(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, canary={"traffic_percent": 10})
    first = _stable_isvc(spec, client)
    stable = _isvc(client, spec)
    record = _deploy(spec, client, "s3://models/b", "rb", "run-2")

    result = rollback(spec, client, record, reason="verdict fail: error_rate 0.2 > 0", run_id="run-2")
    assert result.action == "rollback" and result.stable == first.member
    live = _isvc(client, spec)
    assert live["spec"] == stable["spec"] and live["metadata"]["labels"] == stable["metadata"]["labels"]
    ann = _ann(_state(client, spec))
    assert json.loads(ann[records.LAST_ROLLBACK])["reason"] == "verdict fail: error_rate 0.2 > 0"
    assert ann[records.PROMOTED_MEMBER] == first.member and _held_by(client, spec) is None
    assert rollback(spec, client, record, reason="again", run_id="run-2").action == "none"
    # The no-op rollback writes nothing of ours: spec, metadata and our field manager's entries are as
    # they were (the stand-in's own status writes, which settle after the first rollback, may move the
    # resourceVersion, as KServe's controller does on a cluster).
    assert _ours(_isvc(client, spec)) == _ours(live)


def _ours(obj: dict) -> tuple:
    meta = obj["metadata"]
    mine = [m for m in meta.get("managedFields", []) if m.get("manager") == FIELD_MANAGER]
    return obj["spec"], meta.get("labels"), meta.get("annotations"), meta.get("generation"), mine


def test_stepped_promote_with_a_gate_and_a_gate_failing_midway(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, canary={"traffic_percent": 10, "steps": [25, 50, 100]})
    _stable_isvc(spec, client)
    stable = _isvc(client, spec)
    record = _deploy(spec, client, "s3://models/b", "rb", "run-2")
    seen: list[tuple[int, int]] = []

    def failing_gate(percent):
        live = _isvc(client, spec)
        seen.append((percent, live["spec"]["canary"][0]["trafficPercent"]))
        assert live["spec"]["predictor"] == stable["spec"]["predictor"]
        return ("fail", "p95_ttft_ms 180 > 100") if percent == 50 else ("pass", "ok")

    with pytest.raises(GateFailed) as info:
        _promote(spec, client, record, gate=failing_gate)
    assert info.value.percent == 50 and "p95_ttft_ms 180" in str(info.value)
    assert seen == [(25, 25), (50, 50)]
    live = _isvc(client, spec)
    assert live["spec"] == stable["spec"] and _held_by(client, spec) is None
    assert "gate at 50% traffic" in json.loads(_ann(_state(client, spec))[records.LAST_ROLLBACK])["reason"]

    record = _deploy(spec, client, "s3://models/c", "rc", "run-3")
    canary_pred = _isvc(client, spec)["spec"]["canary"][0]["predictor"]
    seen.clear()
    result = _promote(spec, client, record, gate=lambda p: seen.append((p, 0)) or ("pass", f"ok at {p}"))
    assert result.action == "promote" and [p for p, _ in seen] == [25, 50, 100]
    assert _isvc(client, spec)["spec"] == {"predictor": _promoted(canary_pred, "rc", kube_namespace)}


def test_verdict_fail_or_inconclusive_is_refused_and_nothing_changes(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    _stable_isvc(spec, client)
    record = _deploy(spec, client, "s3://models/b", "rb", "run-2")
    before = _isvc(client, spec)
    for verdict in ("fail", "inconclusive", ""):
        with pytest.raises(PermanentError) as info:
            promote(spec, client, record, verdict=verdict, summary="only 3 successful requests", run_id="run-2")
        assert f"verdict is {verdict!r}, not 'pass'" in str(info.value) and "roll it back" in str(info.value)
    assert rv(_isvc(client, spec)) == rv(before)


def test_someone_else_changed_the_stable_predictor_conflict_is_reported_nothing_forced(
    kube_cluster, kube_namespace, reconciler
):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    _stable_isvc(spec, client)
    record = _deploy(spec, client, "s3://models/b", "rb", "run-2")
    # A person scales the stable predictor with their own tool meanwhile.
    other = kube(kube_cluster, field_manager="kubectl-edit")
    edited = _isvc(client, spec)
    body = {
        "apiVersion": edited["apiVersion"],
        "kind": "InferenceService",
        "metadata": {"name": spec.service_name, "namespace": kube_namespace},
        "spec": {"predictor": {"minReplicas": 4}},
    }
    changed = other.apply(body, force=True)
    assert changed["spec"]["predictor"]["minReplicas"] == 4

    with pytest.raises(PromotionConflict) as info:
        _promote(spec, client, record)
    assert "generation" in str(info.value) and "Nothing was changed" in str(info.value)
    after = _isvc(client, spec)
    assert after["spec"] == changed["spec"] and after["metadata"]["generation"] == changed["metadata"]["generation"]
    assert after["metadata"]["annotations"] == changed["metadata"]["annotations"]
    assert [c["predictor"]["name"] for c in after["spec"]["canary"]] == [record.member]


@pytest.mark.fault
def test_api_server_dropping_connections_during_promotion(kube_cluster, kube_namespace, reconciler, kube_fault_proxy):
    direct = kube(kube_cluster)
    spec = make_spec(kube_namespace, canary={"traffic_percent": 10})
    _stable_isvc(spec, direct)
    record = _deploy(spec, direct, "s3://models/b", "rb", "run-2")
    canary_pred = _isvc(direct, spec)["spec"]["canary"][0]["predictor"]

    client = kube(kube_cluster, via=kube_fault_proxy)
    kube_fault_proxy.reset_next_connections(3)
    kube_fault_proxy.fail_next_requests(2, status=503, match=lambda method, path: method == "PATCH")
    kube_fault_proxy.fail_next_requests(1, status=500)
    result = _promote(spec, client, record)
    assert result.action == "promote"
    stats = kube_fault_proxy.stats
    assert stats.connections_reset == 3 and stats.injected_statuses == {503: 2, 500: 1}
    live = _isvc(direct, spec)
    assert live["spec"] == {"predictor": _promoted(canary_pred, "rb", kube_namespace)}
    assert _ann(_state(direct, spec))[records.PROMOTED_MEMBER] == record.member and _held_by(direct, spec) is None
    assert _promote(spec, client, record).action == "none"


# Knative ----------------------------------------------------------------------------------------------


def test_knative_promote_and_rollback(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, deployment_mode="Knative", canary={"traffic_percent": 20})
    first = _stable_isvc(spec, client)
    stable_pred = _isvc(client, spec)["spec"]["predictor"]

    bad = _deploy(spec, client, "s3://models/b", "rb", "run-2")
    assert _isvc(client, spec)["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert rollback(spec, client, bad, reason="fail", run_id="run-2").action == "rollback"
    live = _isvc(client, spec)
    assert live["spec"]["predictor"] == {**stable_pred, "canaryTrafficPercent": 0}
    assert live["spec"]["predictor"]["labels"][LABEL_REVISION] == "ra"

    good = _deploy(spec, client, "s3://models/c", "rc", "run-3")
    assert good.stable is not None and good.stable.member == first.member
    canary = _isvc(client, spec)["spec"]["predictor"]
    assert canary["canaryTrafficPercent"] == 20
    assert _promote(spec, client, good).action == "promote"
    live = _isvc(client, spec)
    assert live["spec"]["predictor"] == {k: v for k, v in canary.items() if k != "canaryTrafficPercent"}
    assert live["spec"]["predictor"]["labels"][LABEL_REVISION] == "rc"
    assert json.loads(_ann(_state(client, spec))[records.PREVIOUS_STABLE])["predictor"] == stable_pred


# llm-d -------------------------------------------------------------------------------------------------


def _llmd_stable(spec, client):
    first = _deploy(spec, client, "hf://org/model-a", "ra", "run-1")
    assert _promote(spec, client, first).action == "promote"
    return first


def _member(client, ns, name):
    return client.get(LLM_INFERENCE_SERVICES, name, ns)


def _weight(obj):
    return obj["spec"]["router"]["route"]["weight"]


def test_llmd_stepped_promotion_shifts_weights_then_deletes_the_old_member(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace, canary={"traffic_percent": 10, "steps": [10, 50, 100]})
    first = _llmd_stable(spec, client)
    holder = _state(client, spec)
    assert _ann(holder)[records.PROMOTED_MEMBER] == first.member and lease.lease_of(holder) is None
    record = _deploy(spec, client, "hf://org/model-b", "rb", "run-2")
    assert _weight(_member(client, kube_namespace, record.member)) == 11  # 11 / (100 + 11) = 10 %
    weights: list[tuple[int, int, int]] = []

    def gate(percent):
        new = _member(client, kube_namespace, record.member)
        old = _member(client, kube_namespace, first.member)
        weights.append((percent, _weight(new), _weight(old)))
        return "pass", f"ok at {percent}%"

    result = _promote(spec, client, record, gate=gate)
    assert result.action == "promote" and f"deleted {first.member}" in result.message
    assert weights == [(50, 100, 100), (100, 100, 0)]
    assert objects_in(client, kube_namespace)["llminferenceservices"] == [record.member]
    new = _member(client, kube_namespace, record.member)
    assert _weight(new) == 100 and new["spec"]["model"]["uri"] == "hf://org/model-b"
    ann = _ann(_state(client, spec))
    assert ann[records.PROMOTED_MEMBER] == record.member and _held_by(client, spec) is None
    previous = json.loads(ann[records.PREVIOUS_STABLE])
    assert previous["member"] == first.member and previous["member_spec"]["model"]["uri"] == "hf://org/model-a"
    assert _promote(spec, client, record).action == "none"

    st = status(client, "chat", kube_namespace)
    assert [(r.role, r.member, r.traffic_percent) for r in st.revisions] == [("stable", record.member, 100)]


def test_llmd_gate_failing_midway_rolls_back_and_the_stable_member_is_never_written(
    kube_cluster, kube_namespace, reconciler
):
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace, canary={"traffic_percent": 10, "steps": [10, 50, 100]})
    first = _llmd_stable(spec, client)
    stable_before = _member(client, kube_namespace, first.member)
    record = _deploy(spec, client, "hf://org/model-b", "rb", "run-2")

    with pytest.raises(GateFailed) as info:
        _promote(spec, client, record, gate=lambda p: ("inconclusive", "too few requests") if p == 50 else ("pass", ""))
    assert info.value.percent == 50
    assert objects_in(client, kube_namespace)["llminferenceservices"] == [first.member]
    stable_after = _member(client, kube_namespace, first.member)
    assert rv(stable_after) == rv(stable_before) and stable_after["metadata"]["generation"] == 1

    # A gate failing at 100 % (stable at weight 0) restores the stable weight.
    record = _deploy(spec, client, "hf://org/model-c", "rc", "run-3")
    with pytest.raises(GateFailed):
        _promote(spec, client, record, gate=lambda p: ("fail", "errors") if p == 100 else ("pass", ""))
    assert objects_in(client, kube_namespace)["llminferenceservices"] == [first.member]
    assert _weight(_member(client, kube_namespace, first.member)) == 100


def test_llmd_promote_can_stop_the_old_member_and_rollback_is_exact(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace, canary={"traffic_percent": 20})
    first = _llmd_stable(spec, client)
    stable_before = _member(client, kube_namespace, first.member)

    bad = _deploy(spec, client, "hf://org/model-b", "rb", "run-2")
    assert rollback(spec, client, bad, reason="fail", run_id="run-2").action == "rollback"
    assert objects_in(client, kube_namespace)["llminferenceservices"] == [first.member]
    assert rv(_member(client, kube_namespace, first.member)) == rv(stable_before)
    assert rollback(spec, client, bad, reason="fail", run_id="run-2").action == "none"

    good = _deploy(spec, client, "hf://org/model-c", "rc", "run-3")
    result = _promote(spec, client, good, retire="stop")
    assert f"stopped {first.member}" in result.message
    old = _member(client, kube_namespace, first.member)
    assert _ann(old)[STOP_ANNOTATION] == "true" and _weight(old) == 0
    assert _weight(_member(client, kube_namespace, good.member)) == 100
    # The next rollout sees the promoted member as stable.
    nxt = _deploy(spec, client, "hf://org/model-d", "rd", "run-4")
    assert nxt.stable is not None and nxt.stable.member == good.member


def test_llmd_first_rollout_fail_removes_the_member(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace)
    first = _deploy(spec, client, "hf://org/model-a", "ra", "run-1")
    assert rollback(spec, client, first, reason="fail", run_id="run-1").action == "rollback"
    assert objects_in(client, kube_namespace)["llminferenceservices"] == []
    assert _held_by(client, spec) is None


# Lease, reruns, cancellation ----------------------------------------------------------------------------


def test_a_second_concurrent_rollout_fails_naming_the_holder_or_waits(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    _stable_isvc(spec, client)
    record = _deploy(spec, client, "s3://models/b", "rb", "run-2")
    before = _isvc(client, spec)

    with pytest.raises(LeaseHeld) as info:
        _deploy(spec, client, "s3://models/c", "rc", "run-3")
    assert info.value.holder == "run-2" and "run-2" in str(info.value) and "llm-rollout status chat" in str(info.value)
    assert rv(_isvc(client, spec)) == rv(before)

    # With a bounded wait, the second rollout goes on once the first one is done.
    timer = threading.Timer(1.0, lambda: rollback(spec, kube(kube_cluster), record, reason="fail", run_id="run-2"))
    timer.start()
    try:
        started = time.monotonic()
        third = _deploy(spec, client, "s3://models/c", "rc", "run-3", lease_wait_s=20)
        assert time.monotonic() - started >= 0.9
    finally:
        timer.join()
    live = _isvc(client, spec)
    assert [c["predictor"]["name"] for c in live["spec"]["canary"]] == [third.member]
    assert _held_by(client, spec) == "run-3"


def test_llmd_first_rollouts_racing_one_proceeds_the_other_fails_or_waits(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace)
    results: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def attempt(run_id: str, uri: str) -> None:
        barrier.wait()
        try:
            results[run_id] = _deploy(spec, kube(kube_cluster), uri, run_id.replace("run-", "r"), run_id)
        except LeaseHeld as err:
            results[run_id] = err

    threads = [threading.Thread(target=attempt, args=(f"run-{i}", f"hf://org/model-{i}")) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    winners = [r for r in results.values() if not isinstance(r, LeaseHeld)]
    losers = [r for r in results.values() if isinstance(r, LeaseHeld)]
    assert len(winners) == 1 and len(losers) == 1, results
    winner = winners[0]
    assert losers[0].holder == winner.run_id
    assert objects_in(client, kube_namespace)["llminferenceservices"] == [winner.member]

    # The loser's rerun with a bounded wait goes on once the winner's rollout ends (the lease is
    # watched on the LLMInferenceServiceConfig that holds it).
    loser_run = next(r for r in results if r != winner.run_id)
    timer = threading.Timer(
        1.0, lambda: rollback(spec, kube(kube_cluster), winner, reason="fail", run_id=winner.run_id)
    )
    timer.start()
    try:
        started = time.monotonic()
        second = _deploy(spec, client, f"hf://org/model-{loser_run[-1]}", "rx", loser_run, lease_wait_s=20)
        assert time.monotonic() - started >= 0.9
    finally:
        timer.join()
    assert objects_in(client, kube_namespace)["llminferenceservices"] == [second.member]
    assert _held_by(client, spec) == loser_run


def test_an_expired_lease_is_taken_over(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    _stable_isvc(spec, client)
    # The expiry is written to the second: a 1 s lease may be gone before the next call on a busy machine.
    assert lease.acquire_lease(variant_for(spec).ref(), client, "run-dead", ttl_s=3) == "taken"
    before = _state(client, spec)["spec"]["leaseTransitions"]
    with pytest.raises(LeaseHeld):
        lease.acquire_lease(variant_for(spec).ref(), client, "run-2")
    time.sleep(3.5)
    assert lease.acquire_lease(variant_for(spec).ref(), client, "run-2") == "taken"
    live = _state(client, spec)
    assert lease.lease_of(live)["holder"] == "run-2" and live["spec"]["leaseTransitions"] == before + 1
    assert lease.lease_manager("run-2") in _managers(live)


def test_a_deploy_onto_a_service_being_deleted_waits_for_it_then_rolls_out_first(
    kube_cluster, kube_namespace, reconciler
):
    """A person (or another run's first-revision rollback) deleted the service just before this run:
    KServe keeps it behind ``inferenceservice.finalizers`` while it cleans up. The deploy waits until
    it is gone and rolls out as a first revision instead of writing a canary onto the terminating
    object (which vanished under it, and the waiter said "deleted while waiting; rerun")."""
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    _stable_isvc(spec, client)
    reconciler.set_default(finalize_after_ms=2000)
    client.delete(INFERENCE_SERVICES, spec.service_name, kube_namespace)
    assert _isvc(client, spec)["metadata"]["deletionTimestamp"]
    second = _deploy(spec, client, "s3://models/b", "rb", "run-2")
    live = _isvc(client, spec)
    assert not live["metadata"].get("deletionTimestamp")
    assert second.canary is False and second.model_uri == "s3://models/b"
    assert live["spec"]["predictor"]["model"]["storageUri"] == "s3://models/b"
    assert "canaryTrafficPercent" not in live["spec"]["predictor"]
    assert spec.service_name in reconciler.finalized


def test_the_lease_counts_every_new_holder_across_releases(kube_cluster, kube_namespace, reconciler):
    """client-go's leader election (leaderelection.go tryAcquireOrRenew, release): a release keeps
    ``leaseTransitions`` and the next holder adds one; the same holder renewing adds nothing."""
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    _stable_isvc(spec, client)
    ref = variant_for(spec).ref()
    counts = []
    for run in ("run-1", "run-2", "run-3"):
        assert lease.acquire_lease(ref, client, run) in ("created", "taken")
        assert lease.acquire_lease(ref, client, run, rewrite=True) == "renewed"
        counts.append(_state(client, spec)["spec"]["leaseTransitions"])
        assert lease.release_lease(client, ref, run)
        live = _state(client, spec)
        assert lease.lease_of(live) is None and live["spec"]["leaseTransitions"] == counts[-1]
    assert counts == [counts[0], counts[0] + 1, counts[0] + 2]


def test_a_rerun_with_the_stable_model_is_already_promoted(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace)
    first = _deploy(spec, client, "minio://models/a", "ra", "run-1", artifact_digest="sha256:aaa")
    _promote(spec, client, first)
    before = _isvc(client, spec)
    again = deploy(
        spec, client, model_uri="minio://models/a", run_id="run-9", artifact_digest="sha256:aaa", probe=False
    )
    assert again.already_promoted and again.member == first.member and again.model_uri == "s3://models/a"
    assert rv(_isvc(client, spec)) == rv(before)  # nothing applied, no lease taken
    assert promote(spec, client, again, verdict="pass", summary="", run_id="run-9") == Promoted(
        "none", "already promoted", first.member
    )
    assert rollback(spec, client, again, reason="x", run_id="run-9").action == "none"
    # Another digest under the same URI is another model, but KServe could never promote it: a
    # predictor.name change needs a storageUri change (validatePredictorNameChange). Refused before
    # anything is written.
    with pytest.raises(SpecError, match="validatePredictorNameChange"):
        _deploy(spec, client, "minio://models/a", None, "run-10", artifact_digest="sha256:bbb")
    assert rv(_isvc(client, spec)) == rv(before)


# The product path: deploy-model's step function, as the component runs it in the step's pod.
# KFP cancels a run by deleting the pod: the kubelet sends SIGTERM and waits
# terminationGracePeriodSeconds; nothing in the script installs a handler, the platform must.
_CANCEL_SCRIPT = """
import os, sys
os.environ["KUBECONFIG"] = sys.argv[1]
from llm_rollout.steps import deploy_step
deploy_step(sys.argv[2], model_uri="s3://models/b", run_id="run-2")
"""


def _start_deploy(kube_cluster, spec, client, script):
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(kube_cluster.kubeconfig_path), json.dumps(spec.model_dump(mode="json"))],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 60
    while not _isvc(client, spec)["spec"].get("canary"):
        assert proc.poll() is None, "the deploy process ended before applying its canary"
        assert time.monotonic() < deadline, "the deploy never applied its canary"
        time.sleep(0.1)
    time.sleep(0.5)  # it is waiting for the canary now
    assert proc.poll() is None
    return proc


def test_sigterm_during_deploy_rolls_back_in_process(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, canary={"traffic_percent": 10})
    _stable_isvc(spec, client)
    stable = _isvc(client, spec)
    reconciler.behave(spec.service_name, mode="never", reason="Progressing", message="pulling the model")
    proc = _start_deploy(kube_cluster, spec, client, _CANCEL_SCRIPT)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    live = _isvc(client, spec)
    assert live["spec"] == stable["spec"] and live["metadata"]["labels"] == stable["metadata"]["labels"]
    assert _held_by(client, spec) is None
    assert "SIGTERM" in json.loads(_ann(_state(client, spec))[records.LAST_ROLLBACK])["reason"]


def test_finalize_run_after_a_killed_step(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, canary={"traffic_percent": 10})
    first = _stable_isvc(spec, client)
    stable = _isvc(client, spec)
    reconciler.behave(spec.service_name, mode="never", reason="Progressing", message="pulling the model")
    proc = _start_deploy(kube_cluster, spec, client, _CANCEL_SCRIPT)
    proc.kill()  # preempted: no handler runs, no outputs written
    proc.wait()
    assert _held_by(client, spec) == "run-2"

    result = finalize_run(spec, client, "run-2", state="FAILED", error="deploy-model: pod deleted")
    assert result.action == "rollback" and result.lease_released is True
    assert len(result.rolled_back) == 1
    live = _isvc(client, spec)
    assert live["spec"] == stable["spec"] and _held_by(client, spec) is None
    assert _ann(_state(client, spec))[records.PROMOTED_MEMBER] == first.member
    again = finalize_run(spec, client, "run-2", state="FAILED")
    assert again.action == "none" and _ours(_isvc(client, spec)) == _ours(live)
    # A promoted run's revision is left alone by its own exit handler.
    assert finalize_run(spec, client, "run-1", state="SUCCEEDED").action == "none"


def test_finalize_run_llmd_and_first_rollout(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace, canary={"traffic_percent": 20})
    first = _llmd_stable(spec, client)
    stable_before = _member(client, kube_namespace, first.member)
    _deploy(spec, client, "hf://org/model-b", "rb", "run-2")
    result = finalize_run(spec, client, "run-2", state="FAILED")
    assert result.action == "rollback" and result.lease_released is True
    assert objects_in(client, kube_namespace)["llminferenceservices"] == [first.member]
    assert rv(_member(client, kube_namespace, first.member)) == rv(stable_before)

    isvc_spec = make_spec(kube_namespace, name="other")
    _deploy(isvc_spec, client, "s3://models/x", "rx", "run-5")
    assert finalize_run(isvc_spec, client, "run-5", state="CANCELLED").action == "rollback"
    assert objects_in(client, kube_namespace)["inferenceservices"] == []


def test_the_status_and_rollback_commands_on_kserve(kube_cluster, kube_namespace, reconciler, tmp_path, capsys):
    """``llm-rollout status NAME`` / ``llm-rollout rollback NAME`` as a user types them (--kubeconfig)."""
    from kfp_llm_rollout.pipelines.cli import main

    client = kube(kube_cluster)
    spec = make_spec(kube_namespace, canary={"traffic_percent": 10})
    first = _stable_isvc(spec, client)
    second = _deploy(spec, client, "s3://models/b", "rb", "run-2")
    _promote(spec, client, second)
    config = str(kube_cluster.write_kubeconfig(tmp_path / "kubeconfig"))
    where = ["chat", "-n", kube_namespace, "--kubeconfig", config]

    assert main(["status", *where]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"InferenceService {kube_namespace}/chat")
    assert "stable    rb" in out and "s3://models/b" in out and f"previous stable: {first.member}" in out
    assert main(["status", *where, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["stable"]["member"] == "rb" and data["previous_stable"]["member"] == first.member

    assert main(["rollback", *where, "--run-id", "manual-test", "--timeout", "60"]) == 0
    assert "rb" in capsys.readouterr().out
    live = _isvc(client, spec)
    assert live["spec"]["predictor"]["model"]["storageUri"] == "s3://models/a"
    assert _ann(_state(client, spec))[records.PROMOTED_MEMBER] == first.member
    assert main(["status", "missing", "-n", kube_namespace, "--kubeconfig", config]) != 0
