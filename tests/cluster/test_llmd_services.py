"""Several llm-d services in one namespace, against the real API server and the stand-in (issue 28).

Two services whose names share 30 characters roll out side by side without touching each
other's members; a P/D service and a plain one share a namespace without the P/D preset reaching
the plain one (the stand-in merges baseRefs as ``config_merge.go`` ``combineBaseRefsConfig`` does,
where ``Prefill != nil`` means P/D); each preset is owned by the members that use it and goes with
the last of them (the stand-in garbage-collects as Kubernetes does).
"""

from __future__ import annotations

import pytest

from llm_rollout.errors import PermanentError
from llm_rollout.kserve import builders
from llm_rollout.kserve.deploy import deploy, register_runtime
from llm_rollout.kserve.promote import promote
from llm_rollout.kserve.restore import rollback_to_previous
from llm_rollout.kserve.rollback import rollback
from llm_rollout.kube import LLM_INFERENCE_SERVICE_CONFIGS, LLM_INFERENCE_SERVICES
from tests.cluster._support import kube, llmd_spec, rv

pytestmark = pytest.mark.cluster

ALPHA = "lean-rag-inference-team-alpha1"
ALPHA_EU = "lean-rag-inference-team-alpha1-eu"


def _deploy(spec, client, uri, revision, run_id):
    return deploy(spec, client, model_uri=uri, revision=revision, run_id=run_id, timeout_s=30, probe=False)


def _promote(spec, client, record):
    return promote(spec, client, record, verdict="pass", summary="ok", run_id=record.run_id)


def _members(client, spec):
    found = client.list(
        LLM_INFERENCE_SERVICES, spec.namespace, label_selector=f"llm-rollout.io/service={spec.service_name}"
    )
    return {m["metadata"]["name"]: m for m in found["items"]}


def _presets(client, namespace):
    """The presets in ``namespace`` (not the ``<service>-rollout`` record objects of older versions)."""
    items = client.list(LLM_INFERENCE_SERVICE_CONFIGS, namespace)["items"]
    return {c["metadata"]["name"]: c for c in items if "-preset-" in c["metadata"]["name"]}


def _conditions(obj):
    return {c["type"]: (c["status"], c.get("reason", "")) for c in obj["status"]["conditions"]}


def test_two_services_with_a_common_30_character_prefix_roll_out_side_by_side(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    alpha = llmd_spec(kube_namespace, name=ALPHA, canary={"traffic_percent": 20})
    eu = llmd_spec(kube_namespace, name=ALPHA_EU, canary={"traffic_percent": 20})
    for spec in (alpha, eu):
        register_runtime(spec, client)
    # The same model and revision for both: only the service tells the members apart.
    a1 = _deploy(alpha, client, "hf://org/model-a", "ra", "run-a1")
    e1 = _deploy(eu, client, "hf://org/model-a", "ra", "run-e1")
    assert a1.member != e1.member
    assert set(_members(client, alpha)) == {a1.member} and set(_members(client, eu)) == {e1.member}
    eu_before = client.get(LLM_INFERENCE_SERVICES, e1.member, kube_namespace)
    assert eu_before["metadata"]["labels"]["llm-rollout.io/service"] == ALPHA_EU
    _promote(alpha, client, a1)
    _promote(eu, client, e1)
    eu_before = client.get(LLM_INFERENCE_SERVICES, e1.member, kube_namespace)

    # A canary and its promotion in one service leave the other's member exactly as it was.
    a2 = _deploy(alpha, client, "hf://org/model-b", "rb", "run-a2")
    assert a2.stable is not None and a2.stable.member == a1.member  # not the other service's
    assert _promote(alpha, client, a2).action == "promote"
    assert set(_members(client, alpha)) == {a2.member}
    eu_after = client.get(LLM_INFERENCE_SERVICES, e1.member, kube_namespace)
    assert rv(eu_after) == rv(eu_before) and eu_after["spec"]["model"]["uri"] == "hf://org/model-a"
    assert set(_members(client, eu)) == {e1.member}
    # ... and the other service's next rollout finds its own stable member.
    e2 = _deploy(eu, client, "hf://org/model-b", "rb", "run-e2")
    assert e2.stable is not None and e2.stable.member == e1.member and e2.member != a2.member


def test_a_pd_and_a_plain_service_share_a_namespace(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    pd = llmd_spec(kube_namespace, name="gen", llmd={"prefill": {"replicas": 1}})
    plain = llmd_spec(kube_namespace, name="chat")
    for spec in (pd, plain):
        register_runtime(spec, client)
    pd_rec = _deploy(pd, client, "hf://org/model-a", "ra", "run-1")
    plain_rec = _deploy(plain, client, "hf://org/model-a", "ra", "run-2")

    presets = _presets(client, kube_namespace)
    assert set(presets) == {builders.preset_name(pd), builders.preset_name(plain)}
    assert "prefill" in presets[builders.preset_name(pd)]["spec"]
    assert "prefill" not in presets[builders.preset_name(plain)]["spec"]

    plain_live = client.get(LLM_INFERENCE_SERVICES, plain_rec.member, kube_namespace)
    pd_live = client.get(LLM_INFERENCE_SERVICES, pd_rec.member, kube_namespace)
    # The plain service stays plain once its presets are merged: no prefill workload, no condition.
    assert "PrefillWorkloadReady" not in _conditions(plain_live) and "prefill" not in plain_live["status"]["workloads"]
    assert _conditions(pd_live)["PrefillWorkloadReady"] == ("True", "")
    assert pd_live["status"]["workloads"]["prefill"]["name"] == f"{pd_rec.member}-kserve-prefill"
    assert plain_live["status"]["workloads"]["primary"]["name"] == f"{plain_rec.member}-kserve"

    # Each preset is owned by its own service's member only.
    for spec, live in ((pd, pd_live), (plain, plain_live)):
        owners = presets[builders.preset_name(spec)]["metadata"]["ownerReferences"]
        assert owners == [
            {
                "apiVersion": builders.LLMISVC_API,
                "kind": "LLMInferenceService",
                "name": live["metadata"]["name"],
                "uid": live["metadata"]["uid"],
            }
        ]
    # Re-registering keeps the owners (one field manager's apply lists them all again).
    before = rv(presets[builders.preset_name(plain)])
    register_runtime(plain, client)
    assert rv(client.get(LLM_INFERENCE_SERVICE_CONFIGS, builders.preset_name(plain), kube_namespace)) == before


def test_a_preset_goes_with_the_last_member_that_uses_it_and_comes_back_with_a_restore(
    kube_cluster, kube_namespace, reconciler
):
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace, canary={"traffic_percent": 20})
    register_runtime(spec, client)
    first = _deploy(spec, client, "hf://org/model-a", "ra", "run-1")
    _promote(spec, client, first)
    old_preset = builders.preset_name(spec)

    # A new image is a new preset; the stable member's preset is not rewritten under it.
    new_spec = llmd_spec(kube_namespace, canary={"traffic_percent": 20}, llmd={"image": "registry.example.com/llmd:v2"})
    register_runtime(new_spec, client)
    old_before = rv(client.get(LLM_INFERENCE_SERVICE_CONFIGS, old_preset, kube_namespace))
    second = _deploy(new_spec, client, "hf://org/model-b", "rb", "run-2")
    assert rv(client.get(LLM_INFERENCE_SERVICE_CONFIGS, old_preset, kube_namespace)) == old_before
    assert _promote(new_spec, client, second).action == "promote"  # deletes the first member
    reconciler.wait_collected(old_preset)
    assert set(_presets(client, kube_namespace)) == {builders.preset_name(new_spec)}

    # llm-rollout rollback NAME brings the first member back with its preset, and it is Ready.
    back = rollback_to_previous(new_spec, client, run_id="manual", timeout_s=30)
    assert back.action == "rollback" and back.member == first.member
    restored = client.get(LLM_INFERENCE_SERVICES, first.member, kube_namespace)
    assert _conditions(restored)["PresetsCombined"] == ("True", "")
    preset = client.get(LLM_INFERENCE_SERVICE_CONFIGS, old_preset, kube_namespace)
    assert [o["uid"] for o in preset["metadata"]["ownerReferences"]] == [restored["metadata"]["uid"]]


def test_a_first_rollout_rolled_back_leaves_no_preset_behind(kube_cluster, kube_namespace, reconciler):
    client = kube(kube_cluster)
    spec = llmd_spec(kube_namespace)
    register_runtime(spec, client)
    first = _deploy(spec, client, "hf://org/model-a", "ra", "run-1")
    assert builders.preset_name(spec) in _presets(client, kube_namespace)
    rollback(spec, client, first, reason="fail", run_id="run-1")
    reconciler.wait_collected(builders.preset_name(spec))
    assert _presets(client, kube_namespace) == {}


def test_every_llmd_write_of_every_phase_passes_the_webhook_mirror(kube_cluster, kube_namespace, reconciler):
    """The client (:class:`tests.cluster._support.AdmittedClient`) runs KServe's webhook mirror on every
    llm-d object the library applies, against what the server holds: register, first rollout,
    canary, each promotion step, retirement by stop, a rollback, a restore. Nothing is refused."""
    client = kube(kube_cluster)
    spec = llmd_spec(
        kube_namespace,
        canary={"traffic_percent": 10, "steps": [10, 50, 100]},
        llmd={"prefill": {"replicas": 1}, "scheduler": {"profile": "pd", "pd_threshold_tokens": 256}},
    )
    register_runtime(spec, client)
    first = _deploy(spec, client, "hf://org/model-a", "ra", "run-1")
    _promote(spec, client, first)
    second = _deploy(spec, client, "hf://org/model-b", "rb", "run-2")
    promote(
        spec, client, second, verdict="pass", summary="ok", run_id="run-2", retire="stop", gate=lambda p: ("pass", "")
    )
    third = _deploy(spec, client, "hf://org/model-c", "rc", "run-3")
    rollback(spec, client, third, reason="fail", run_id="run-3")
    rollback_to_previous(spec, client, run_id="manual", timeout_s=30)
    kinds = [k for k, _ in client.admitted]
    members = [n for k, n in client.admitted if k == "LLMInferenceService"]
    assert kinds.count("LLMInferenceServiceConfig") >= 4  # register + an owner update after each member apply
    # first; canary, 50 %, 100 %, the stable to 0, stopped; canary, its weight 0; the restored member
    assert members.count(second.member) >= 3 and members.count(first.member) >= 3 and third.member in members

    # The mirror is live: what the webhook refuses never reaches the server.
    bad = builders.llm_inference_service(spec, builders.default_member(spec, "hf://org/model-d", "rd"), weight=5)
    bad["spec"]["router"]["route"].pop("group")
    with pytest.raises(PermanentError, match="weight requires group"):
        client.apply(bad)
    assert client.get_or_none(LLM_INFERENCE_SERVICES, bad["metadata"]["name"], kube_namespace) is None
