"""The serving variant is chosen once, from the spec; each knows its own names and record object."""

from __future__ import annotations

import pytest

from llm_rollout.kserve.records import record_object_name
from llm_rollout.kserve.variants import KnativeIsvc, LlmdGroup, StandardIsvc, variant_for
from llm_rollout.kube import INFERENCE_SERVICES, LEASES, LLM_INFERENCE_SERVICE_CONFIGS
from llm_rollout.spec import parse_spec

LLMD = {"llmd": {"enabled": True}, "scaling": None, "replicas": 1}


@pytest.mark.parametrize(
    ("doc", "cls", "kind"),
    [
        ({}, StandardIsvc, "InferenceService"),
        ({"deployment_mode": "Knative"}, KnativeIsvc, "InferenceService"),
        (LLMD, LlmdGroup, "LLMInferenceService"),
    ],
)
def test_the_spec_chooses_one_variant(doc, cls, kind):
    variant = variant_for(parse_spec({"name": "chat", "namespace": "ns", "platform": "kserve", **doc}))
    assert type(variant) is cls and variant.kind == kind


def test_every_variant_keeps_lease_and_records_on_a_lease_of_its_own_and_knows_the_old_place():
    # Not on the InferenceService: KServe copies its metadata into the pod template (predictor.go
    # buildObjectMeta), so every lease or record write there restarted the serving pods.
    isvc = variant_for(parse_spec({"name": "chat", "namespace": "ns", "platform": "kserve"})).ref()
    assert (isvc.res, isvc.name, isvc.namespace) == (LEASES, "chat-rollout", "ns")
    assert (isvc.legacy_res, isvc.legacy_name) == (INFERENCE_SERVICES, "chat")
    group = variant_for(parse_spec({"name": "chat", "namespace": "ns", "platform": "kserve", **LLMD})).ref()
    assert (group.res, group.name) == (LEASES, "chat-rollout")
    assert (group.legacy_res, group.legacy_name) == (LLM_INFERENCE_SERVICE_CONFIGS, record_object_name("chat"))


def test_only_standard_mode_needs_the_canary_field_and_only_llmd_its_crds():
    specs = [parse_spec({"platform": "kserve", **d}) for d in ({}, {"deployment_mode": "Knative"}, LLMD)]
    assert [(variant_for(s).need_canary_field(), variant_for(s).llmd) for s in specs] == [
        (True, False),
        (False, False),
        (False, True),
    ]
