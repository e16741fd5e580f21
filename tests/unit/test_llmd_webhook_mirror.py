"""Upstream's LLMInferenceService webhook cases against our mirror, and every llm-d object every
phase sends judged by it (issue 28 item 3).

The cases are ported from KServe v0.20's ``pkg/apis/serving/v1alpha2/llm_inference_service_validation_test.go``
(pinned in ``../shared/reference/kserve``), one pytest case per upstream case with the upstream test
function and case name as the id, and must get upstream's verdict: the same number of errors, each
expected text in one of them. Ported: the cases of the rules that concern fields we write or
mirror (scaling, actuator consistency, rollout strategy, the deletion bypass of ValidateUpdate).
Not ported: LoRA adapters, DRA annotations, confidential computing, KV-cache offloading and
``parentRefsMatchGatewayRefs`` (we write none of those fields). ``validateImmutable`` and the
config validator have no upstream cases; ours cite their functions.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from llm_rollout.kserve import builders as b
from llm_rollout.kserve.variants.llmd import _llmisvc_from_live
from llm_rollout.spec import parse_spec
from tests.schema_check import schema_errors
from tests.webhook_check import (
    llmisvc_config_webhook_errors,
    llmisvc_webhook_errors,
    validate_workload_rollout_fields,
    validate_workload_scaling,
)

HPA = {"hpa": {}}
CPU = [{"type": "cpu", "metadata": {"value": "80"}}]


def _sc(max_r: int, min_r: int | None = None, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"maxReplicas": max_r, **kw}
    if min_r is not None:
        out["minReplicas"] = min_r
    return out


# TestValidateWorkloadScaling: (case name, workload, error count, expected texts)
WORKLOAD_SCALING = [
    ("valid: scaling with WVA + HPA", {"scaling": _sc(5, 1, wva={"variantCost": "10.0", **HPA})}, 0, []),
    (
        "valid: scaling with WVA + KEDA and idleReplicaCount",
        {
            "scaling": _sc(
                10,
                2,
                wva={
                    "variantCost": "5.0",
                    "keda": {"pollingInterval": 30, "cooldownPeriod": 60, "idleReplicaCount": 1},
                },
            )
        },
        0,
        [],
    ),
    ("valid: no scaling configured", {}, 0, []),
    ("valid: scaling with only maxReplicas (no minReplicas)", {"scaling": _sc(5, wva=HPA)}, 0, []),
    ("valid: variantCost integer format", {"scaling": _sc(5, wva={"variantCost": "10", **HPA})}, 0, []),
    ("valid: variantCost decimal format", {"scaling": _sc(5, wva={"variantCost": "0.5", **HPA})}, 0, []),
    ("valid: HPA with behavior configured", {"scaling": _sc(5, wva={"hpa": {"behavior": {}}})}, 0, []),
    ("valid: empty variantCost (uses default)", {"scaling": _sc(5, wva={"variantCost": "", **HPA})}, 0, []),
    (
        "valid: idleReplicaCount=1 minReplicas=2 (minimum valid combo)",
        {"scaling": _sc(5, 2, wva={"keda": {"idleReplicaCount": 1}})},
        0,
        [],
    ),
    (
        "valid: WVA KEDA idleReplicaCount=0 (scale-to-zero)",
        {"scaling": _sc(5, 1, wva={"keda": {"idleReplicaCount": 0}})},
        0,
        [],
    ),
    ("valid: initialCooldownPeriod set", {"scaling": _sc(5, 1, wva={"keda": {"initialCooldownPeriod": 30}})}, 0, []),
    ("valid: fallback set", {"scaling": _sc(5, 1, wva={"keda": {"fallback": {"failureThreshold": 3}}})}, 0, []),
    (
        "valid: restoreToOriginalReplicaCount set in advanced",
        {"scaling": _sc(5, 1, wva={"keda": {"advanced": {"restoreToOriginalReplicaCount": True}}})},
        0,
        [],
    ),
    (
        "error: scalingModifiers target set",
        {"scaling": _sc(5, wva={"keda": {"advanced": {"scalingModifiers": {"target": "10"}}}})},
        1,
        ["scalingModifiers must not be set"],
    ),
    (
        "error: scalingModifiers activationTarget set",
        {"scaling": _sc(5, wva={"keda": {"advanced": {"scalingModifiers": {"activationTarget": "1"}}}})},
        1,
        ["scalingModifiers must not be set"],
    ),
    (
        "error: scalingModifiers metricType set",
        {"scaling": _sc(5, wva={"keda": {"advanced": {"scalingModifiers": {"metricType": "AverageValue"}}}})},
        1,
        ["scalingModifiers must not be set"],
    ),
    (
        "error: both scalingModifiers and hpa name set (2 errors)",
        {
            "scaling": _sc(
                5,
                wva={
                    "keda": {
                        "advanced": {
                            "scalingModifiers": {"formula": "x"},
                            "horizontalPodAutoscalerConfig": {"name": "my-hpa"},
                        }
                    }
                },
            )
        },
        2,
        ["scalingModifiers must not be set", "horizontalPodAutoscalerConfig.name must not be set"],
    ),
    (
        "error: replicas and scaling both set",
        {"replicas": 3, "scaling": _sc(5, wva=HPA)},
        1,
        ["scaling and replicas are mutually exclusive"],
    ),
    (
        "error: minReplicas > maxReplicas",
        {"scaling": _sc(5, 10, wva=HPA)},
        1,
        ["minReplicas (10) cannot exceed maxReplicas (5)"],
    ),
    (
        "error: scaling without WVA or direct KEDA",
        {"scaling": _sc(5)},
        1,
        ["either wva or keda must be specified when scaling is configured"],
    ),
    (
        "error: scaling with both WVA and direct KEDA",
        {"scaling": _sc(5, wva=HPA, keda={"triggers": CPU})},
        1,
        ["wva and keda are mutually exclusive"],
    ),
    ("valid: scaling with direct KEDA", {"scaling": _sc(5, 1, keda={"pollingInterval": 30, "triggers": CPU})}, 0, []),
    (
        "valid: direct KEDA idleReplicaCount=0 (scale-to-zero)",
        {"scaling": _sc(5, 1, keda={"idleReplicaCount": 0, "triggers": CPU})},
        0,
        [],
    ),
    (
        "valid: direct KEDA with scalingModifiers",
        {
            "scaling": _sc(
                5,
                keda={
                    "advanced": {"scalingModifiers": {"formula": "trig0 + trig1", "target": "10"}},
                    "triggers": [*CPU, {"type": "memory", "metadata": {"value": "70"}}],
                },
            )
        },
        0,
        [],
    ),
    (
        "error: direct KEDA without triggers",
        {"scaling": _sc(5, keda={})},
        1,
        ["at least one trigger is required when using direct KEDA scaling"],
    ),
    (
        "error: direct KEDA idleReplicaCount without minReplicas",
        {"scaling": _sc(10, keda={"idleReplicaCount": 1, "triggers": CPU})},
        1,
        ["minReplicas is required when idleReplicaCount is set"],
    ),
    (
        "error: WVA with both HPA and KEDA",
        {"scaling": _sc(5, wva={"hpa": {}, "keda": {}})},
        1,
        ["hpa and keda are mutually exclusive"],
    ),
    ("error: WVA with neither HPA nor KEDA", {"scaling": _sc(5, wva={})}, 1, ["either hpa or keda must be specified"]),
    (
        "error: invalid variantCost - alphabetic",
        {"scaling": _sc(5, wva={"variantCost": "abc", **HPA})},
        1,
        ["variantCost must be a non-negative numeric string"],
    ),
    (
        "error: invalid variantCost - negative",
        {"scaling": _sc(5, wva={"variantCost": "-1", **HPA})},
        1,
        ["variantCost must be a non-negative numeric string"],
    ),
    (
        "error: invalid variantCost - multiple dots",
        {"scaling": _sc(5, wva={"variantCost": "10.0.1", **HPA})},
        1,
        ["variantCost must be a non-negative numeric string"],
    ),
    (
        "error: KEDA idleReplicaCount without minReplicas",
        {"scaling": _sc(10, wva={"keda": {"idleReplicaCount": 1}})},
        1,
        ["minReplicas is required when idleReplicaCount is set"],
    ),
    (
        "error: KEDA idleReplicaCount >= minReplicas",
        {"scaling": _sc(10, 2, wva={"keda": {"idleReplicaCount": 3}})},
        1,
        ["idleReplicaCount (3) must be less than minReplicas (2)"],
    ),
    (
        "error: KEDA idleReplicaCount == minReplicas",
        {"scaling": _sc(10, 2, wva={"keda": {"idleReplicaCount": 2}})},
        1,
        ["idleReplicaCount (2) must be less than minReplicas (2)"],
    ),
    (
        "valid: scaling and worker both set with HPA (multi-node autoscaling)",
        {"worker": {}, "scaling": _sc(5, wva=HPA)},
        0,
        [],
    ),
    (
        "valid: scaling and worker both set with KEDA (multi-node autoscaling)",
        {"worker": {}, "scaling": _sc(3, wva={"keda": {}})},
        0,
        [],
    ),
    (
        "valid: worker set with replicas (no scaling) - multi-node with static replicas",
        {"worker": {}, "replicas": 3},
        0,
        [],
    ),
    ("valid: worker set with no replicas and no scaling - multi-node defaults", {"worker": {}}, 0, []),
]


@pytest.mark.parametrize(
    ("workload", "count", "texts"),
    [pytest.param(w, n, t, id=f"TestValidateWorkloadScaling/{name}") for name, w, n, t in WORKLOAD_SCALING],
)
def test_upstream_workload_scaling_cases(workload, count, texts):
    errors = validate_workload_scaling("spec", workload)
    assert len(errors) == count, errors
    for text in texts:
        assert any(text in e for e in errors), (text, errors)


def _svc(decode: dict[str, Any] | None = None, prefill: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    """newBaseLLMInferenceServiceV1Alpha2 with the given workloads."""
    spec: dict[str, Any] = {"model": {"uri": "hf://org/model"}, **(decode or {})}
    if prefill is not None:
        spec["prefill"] = prefill
    return {
        "apiVersion": b.LLMISVC_API,
        "kind": "LLMInferenceService",
        "metadata": {"name": "test-llmisvc", "namespace": "default", **meta},
        "spec": spec,
    }


WVA_HPA = {"scaling": _sc(5, wva=HPA)}
WVA_KEDA = {"scaling": _sc(5, wva={"keda": {}})}
DIRECT = {"scaling": _sc(5, keda={"triggers": CPU})}

# TestValidateScaling_PrefillWorkload and TestValidateActuatorConsistency (validator.validateScaling):
# (test, case, decode, prefill, error count, [(field, text)])
SCALING_CASES = [
    (
        "TestValidateScaling_PrefillWorkload",
        "error on prefill scaling uses correct field path",
        {},
        {"replicas": 3, "scaling": _sc(5, wva=HPA)},
        1,
        [("spec.prefill.scaling", "scaling and replicas are mutually exclusive")],
    ),
    (
        "TestValidateScaling_PrefillWorkload",
        "both decode and prefill with matching HPA backends",
        {"scaling": _sc(5, 1, wva=HPA)},
        {"scaling": _sc(8, 2, wva=HPA)},
        0,
        [],
    ),
    (
        "TestValidateScaling_PrefillWorkload",
        "both decode and prefill with matching KEDA backends",
        {"scaling": _sc(5, 1, wva={"keda": {}})},
        {"scaling": _sc(8, 2, wva={"keda": {"idleReplicaCount": 1}})},
        0,
        [],
    ),
    (
        "TestValidateScaling_PrefillWorkload",
        "scalingModifiers set - rejected",
        {"scaling": _sc(5, wva={"keda": {"advanced": {"scalingModifiers": {"formula": "wva_desired_replicas"}}}})},
        None,
        1,
        [("scalingModifiers", "must not be set")],
    ),
    (
        "TestValidateScaling_PrefillWorkload",
        "horizontalPodAutoscalerConfig name set - rejected",
        {"scaling": _sc(5, wva={"keda": {"advanced": {"horizontalPodAutoscalerConfig": {"name": "my-hpa"}}}})},
        None,
        1,
        [("horizontalPodAutoscalerConfig", "must not be set")],
    ),
    (
        "TestValidateScaling_PrefillWorkload",
        "keda advanced with only behavior - allowed",
        {"scaling": _sc(5, wva={"keda": {"advanced": {"horizontalPodAutoscalerConfig": {"behavior": {}}}}})},
        None,
        0,
        [],
    ),
    (
        "TestValidateScaling_PrefillWorkload",
        "errors on both decode and prefill are reported",
        {"scaling": _sc(5)},
        {"scaling": _sc(5, 10, wva=HPA)},
        2,
        [("spec.scaling", "either wva or keda"), ("spec.prefill.scaling", "cannot exceed maxReplicas")],
    ),
    ("TestValidateActuatorConsistency", "valid: decode HPA, no prefill scaling", WVA_HPA, {"replicas": 2}, 0, []),
    ("TestValidateActuatorConsistency", "valid: no prefill at all", WVA_HPA, None, 0, []),
    (
        "TestValidateActuatorConsistency",
        "valid: decode scaling only, prefill has no scaling",
        WVA_KEDA,
        {"replicas": 3},
        0,
        [],
    ),
    (
        "TestValidateActuatorConsistency",
        "valid: prefill scaling only, decode has no scaling",
        {"replicas": 2},
        WVA_HPA,
        0,
        [],
    ),
    (
        "TestValidateActuatorConsistency",
        "error: decode direct KEDA, prefill WVA",
        DIRECT,
        WVA_HPA,
        1,
        [("spec.prefill.scaling", "decode uses direct keda but prefill uses wva")],
    ),
    (
        "TestValidateActuatorConsistency",
        "error: decode WVA, prefill direct KEDA",
        WVA_KEDA,
        {"scaling": _sc(5, keda={"triggers": [{"type": "memory", "metadata": {"value": "70"}}]})},
        1,
        [("spec.prefill.scaling", "decode uses wva but prefill uses direct keda")],
    ),
    (
        "TestValidateActuatorConsistency",
        "error: decode HPA, prefill KEDA",
        WVA_HPA,
        WVA_KEDA,
        1,
        [("spec.prefill.scaling.wva", "decode uses hpa but prefill uses keda")],
    ),
    (
        "TestValidateActuatorConsistency",
        "error: decode KEDA, prefill HPA",
        WVA_KEDA,
        WVA_HPA,
        1,
        [("spec.prefill.scaling.wva", "decode uses keda but prefill uses hpa")],
    ),
    (
        "TestValidateActuatorConsistency",
        "valid: scaling+worker on decode workload (multi-node autoscaling)",
        {"worker": {}, **WVA_HPA},
        None,
        0,
        [],
    ),
    (
        "TestValidateActuatorConsistency",
        "valid: scaling+worker on prefill workload (multi-node autoscaling)",
        {"replicas": 2},
        {"worker": {}, **WVA_KEDA},
        0,
        [],
    ),
]


def _scaling_errors(obj: dict[str, Any]) -> list[str]:
    """validator.validateScaling's share of the verdict (the cases build objects valid otherwise,
    except that upstream's bare PodSpec worker has no parallelism, which validateWorkloadParallelism
    would refuse: those lines are left out as upstream's validateScaling call leaves them out)."""
    return [e for e in llmisvc_webhook_errors(obj) if ".worker:" not in e]


@pytest.mark.parametrize(
    ("decode", "prefill", "count", "expected"),
    [pytest.param(d, p, n, e, id=f"{test}/{name}") for test, name, d, p, n, e in SCALING_CASES],
)
def test_upstream_scaling_and_actuator_cases(decode, prefill, count, expected):
    errors = _scaling_errors(_svc(copy.deepcopy(decode), copy.deepcopy(prefill)))
    assert len(errors) == count, errors
    for where, text in expected:
        assert any(where in e.split(": ")[0] and text in e for e in errors), (where, text, errors)


# TestValidateRolloutStrategy: (case, workload path, rolloutStrategy, multi-node, error count, field, text)
ROLLOUT = [
    ("nil rollout strategy produces no errors", "spec", None, False, 0, "", ""),
    ("valid integer maxUnavailable", "spec", {"maxUnavailable": 1}, False, 0, "", ""),
    ("valid percentage maxSurge", "spec", {"maxSurge": "100%"}, False, 0, "", ""),
    (
        "valid combination maxUnavailable=0% maxSurge=100%",
        "spec",
        {"maxUnavailable": "0%", "maxSurge": "100%"},
        False,
        0,
        "",
        "",
    ),
    ("valid combination maxUnavailable=1 maxSurge=0", "spec", {"maxUnavailable": 1, "maxSurge": 0}, False, 0, "", ""),
    ("negative integer rejected", "spec", {"maxUnavailable": -1}, False, 1, "maxUnavailable", ""),
    ("non-percentage string rejected", "spec", {"maxSurge": "abc"}, False, 1, "maxSurge", ""),
    ("percentage over 100 rejected", "spec", {"maxSurge": "150%"}, False, 1, "maxSurge", ""),
    ("both zero deadlock rejected", "spec", {"maxUnavailable": 0, "maxSurge": 0}, False, 1, "", "both be zero"),
    (
        "both zero percentage deadlock rejected",
        "spec",
        {"maxUnavailable": "0%", "maxSurge": "0%"},
        False,
        1,
        "",
        "both be zero",
    ),
    ("maxUnavailable=0 alone allowed for single-node", "spec", {"maxUnavailable": 0}, False, 0, "", ""),
    ("maxUnavailable=0 alone rejected for multi-node", "spec", {"maxUnavailable": 0}, True, 1, "maxSurge", "required"),
    ("maxUnavailable=1 alone allowed for multi-node", "spec", {"maxUnavailable": 1}, True, 0, "", ""),
    (
        "prefill rollout strategy validated independently",
        "spec.prefill",
        {"maxUnavailable": -1},
        False,
        1,
        "spec.prefill.rolloutStrategy.maxUnavailable",
        "",
    ),
]


@pytest.mark.parametrize(
    ("path", "rs", "multi", "count", "where", "text"),
    [pytest.param(*row[1:], id=f"TestValidateRolloutStrategy/{row[0]}") for row in ROLLOUT],
)
def test_upstream_rollout_strategy_cases(path, rs, multi, count, where, text):
    errors = validate_workload_rollout_fields(path, rs, multi)
    assert len(errors) == count, errors
    if count:
        assert where in errors[0].split(":")[0] and text in errors[0], errors
    # The whole webhook runs it on both workloads (validateRolloutStrategy).
    workload: dict[str, Any] = {"replicas": 1}
    if rs is not None:
        workload["rolloutStrategy"] = rs
    if multi:
        workload.update(worker={}, parallelism={"pipeline": 2})
    obj = _svc(workload) if path == "spec" else _svc({"replicas": 1}, workload)
    assert len(llmisvc_webhook_errors(obj)) == count


def test_upstream_update_of_a_deleted_object_is_admitted():
    """TestValidateUpdate_DeletionBypass."""
    old = _svc({"replicas": 1})
    new = _svc({"replicas": 3, "scaling": _sc(5, wva=HPA)})
    assert any("mutually exclusive" in e for e in llmisvc_webhook_errors(new, old))
    deleting = copy.deepcopy(new)
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert llmisvc_webhook_errors(deleting, old) == []


@pytest.mark.parametrize(
    ("before", "after", "refused"),
    [
        ({"tensor": 2}, {"tensor": 4}, False),  # tensor is not part of GetSize
        ({"data": 4, "dataLocal": 2}, {"data": 8, "dataLocal": 4}, False),  # 2 pods either way
        ({"data": 4, "dataLocal": 2}, {"data": 8, "dataLocal": 2}, True),
        ({"pipeline": 2}, {"pipeline": 4}, True),
        (None, {"pipeline": 2}, True),
    ],
)
def test_validate_immutable_total_parallelism_size(before, after, refused):
    """llm_inference_service_validation.go validateImmutable / validateImmutableParallelism (GetSize)."""

    def svc(par):
        w: dict[str, Any] = {"replicas": 1}
        if par:
            w["parallelism"] = par
            if par.get("pipeline") or par.get("data"):
                w["worker"] = {}
        return _svc(w, copy.deepcopy(w))

    errors = llmisvc_webhook_errors(svc(after), svc(before))
    assert bool(errors) is refused, errors
    if refused:
        assert {e.split(":")[0] for e in errors} == {"spec.parallelism", "spec.prefill.parallelism"}
        assert all("total parallelism size is immutable" in e for e in errors)


def test_config_validator_refuses_base_refs_and_zero_scheduler_replicas():
    """llm_inference_service_config_validation.go validate / validateScheduler."""
    cfg = b.llm_inference_service_config(_spec(prefill={"replicas": 1}))
    assert llmisvc_config_webhook_errors(cfg) == []
    bad = copy.deepcopy(cfg)
    bad["spec"]["baseRefs"] = [{"name": "other"}]
    bad["spec"]["router"] = {"scheduler": {"replicas": 0}}
    errors = llmisvc_config_webhook_errors(bad)
    assert [e.split(":")[0] for e in errors] == ["spec.baseRefs", "spec.router.scheduler.replicas"]


# Every object every phase sends ------------------------------------------------------------------------

LLMD_SPECS = {
    "plain": {},
    "pd": {"prefill": {"replicas": 1}, "scheduler": {"profile": "pd", "pd_threshold_tokens": 256}},
    "pd-autoscaled": {
        "decode": {"tensor": 2, "scaling": {"min_replicas": 1, "max_replicas": 6}},
        "prefill": {"tensor": 1, "scaling": {"min_replicas": 1, "max_replicas": 3, "metric": "concurrency"}},
        "scheduler": {"profile": "pd"},
    },
    "pd-cpu-autoscaled": {
        "decode": {"scaling": {"min_replicas": 1, "max_replicas": 4, "metric": "cpu", "target": 70}},
        "prefill": {"scaling": {"min_replicas": 1, "max_replicas": 2, "metric": "cpu", "target": 70}},
    },
    "multi-node-data": {"decode": {"tensor": 8, "data": 2, "data_local": 1, "nodes": 2}},
    "multi-node-pipeline": {"decode": {"tensor": 8, "pipeline": 2, "nodes": 2}},
    "named-gateway": {"gateway_refs": ["inference-gw"], "scheduler": {"profile": "load"}},
}


def _spec(**llmd: Any):
    return parse_spec(
        {
            "platform": "kserve",
            "name": "lean-rag-inference-team-alpha1-eu",
            "scaling": None,
            "replicas": 1,
            "canary": {"traffic_percent": 10, "steps": [10, 50, 100]},
            "llmd": {"enabled": True, **llmd},
        }
    )


def _live(obj: dict[str, Any], uid: str, generation: int = 1) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out["metadata"].update(uid=uid, generation=generation, resourceVersion="1")
    return out


def _phases(spec) -> list[tuple[str, dict[str, Any], dict[str, Any] | None]]:
    """(phase, object, what the server had) for every write of a rollout, in the order the variant
    (``kserve/variants/llmd.py``) sends them, built by the same functions it uses."""
    v1 = b.default_member(spec, "hf://org/model-a", "ra")
    v2 = b.Member(**{**b.default_member(spec, "hf://org/model-b", "rb").__dict__, "run_id": "run-2"})
    out: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
    preset = b.llm_inference_service_config(spec)
    out.append(("register: preset", preset, None))
    first = b.llm_inference_service(spec, v1, weight=100)
    out.append(("first", first, None))
    live1 = _live(first, "u-1")
    owned = b.llm_inference_service_config(spec, owners=[b.owner_reference(live1)])
    out.append(("first: preset owners", owned, preset))
    canary = b.llm_inference_service(spec, v2, weight=11)
    out.append(("canary", canary, None))
    live2 = _live(canary, "u-2")
    both = b.llm_inference_service_config(spec, owners=[b.owner_reference(live1), b.owner_reference(live2)])
    out.append(("canary: preset owners", both, owned))
    prev = live2
    for percent in (50, 100):  # promote: set_new_weight at each step, then the stable to 0
        weight = round(100 * percent / (100 - percent)) if percent < 100 else 100
        step = b.llm_inference_service(spec, v2, weight=weight)
        out.append((f"step {percent}%", step, prev))
        prev = _live(step, "u-2", prev["metadata"]["generation"] + 1)
    zeroed = _llmisvc_from_live(live1, weight=0)
    out.append(("promotion: stable to weight 0", zeroed, live1))
    out.append(("promotion: retire by stop", _llmisvc_from_live(_live(zeroed, "u-1", 2), weight=0, stop=True), zeroed))
    out.append(("rollback: canary to weight 0", b.llm_inference_service(spec, v2, weight=0), live2))
    out.append(("rollback: stable weight restored", _llmisvc_from_live(zeroed, weight=100), _live(zeroed, "u-1", 2)))
    return out


@pytest.mark.parametrize("llmd", LLMD_SPECS.values(), ids=LLMD_SPECS.keys())
def test_every_llmd_phase_passes_the_webhook_mirror_and_the_schema(llmd):
    spec = _spec(**llmd)
    phases = _phases(spec)
    assert len(phases) == 11
    for phase, obj, old in phases:
        assert schema_errors(obj) == [], (phase, schema_errors(obj))
        if obj["kind"] == "LLMInferenceService":
            assert llmisvc_webhook_errors(obj, old) == [], (phase, llmisvc_webhook_errors(obj, old))
        else:
            assert llmisvc_config_webhook_errors(obj) == [], (phase, llmisvc_config_webhook_errors(obj))


def test_the_llmd_mirror_is_not_a_rubber_stamp():
    """Each rule the phases rely on refuses the object it exists for (so the phase test can fail)."""
    spec = _spec(**LLMD_SPECS["pd-autoscaled"])
    (_, _, _), (_, first, _), *_ = _phases(spec)
    bad = copy.deepcopy(first)
    bad["spec"]["prefill"]["scaling"] = {"maxReplicas": 3, "wva": {"hpa": {}}}
    assert "decode uses direct keda but prefill uses wva" in " ".join(llmisvc_webhook_errors(bad))
    bad = copy.deepcopy(first)
    bad["spec"]["router"]["route"].pop("weight")
    assert llmisvc_webhook_errors(bad) == ["spec.router.route.weight: group requires weight"]
    grown = copy.deepcopy(first)
    grown["spec"]["parallelism"] = {"tensor": 2, "pipeline": 2}
    grown["spec"]["worker"] = {"containers": []}
    assert any("immutable" in e for e in llmisvc_webhook_errors(grown, first))
    bad = copy.deepcopy(first)
    bad["spec"]["rolloutStrategy"] = {"maxUnavailable": 0, "maxSurge": 0}
    assert any("both be zero" in e for e in llmisvc_webhook_errors(bad))
