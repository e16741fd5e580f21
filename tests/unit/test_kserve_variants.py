"""The serving variant is chosen once, from the spec; each knows its own names and record object."""

from __future__ import annotations

import pytest

from llm_rollout.kserve.records import record_object_name
from llm_rollout.kserve.variants import KnativeIsvc, LlmdGroup, StandardIsvc, variant_for
from llm_rollout.kube import INFERENCE_SERVICES, LLM_INFERENCE_SERVICE_CONFIGS
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


def test_an_inference_service_keeps_its_record_on_itself_and_llmd_on_a_separate_object():
    isvc = variant_for(parse_spec({"name": "chat", "namespace": "ns", "platform": "kserve"})).ref()
    assert (isvc.res, isvc.name, isvc.lease_creates) == (INFERENCE_SERVICES, "chat", False)
    group = variant_for(parse_spec({"name": "chat", "namespace": "ns", "platform": "kserve", **LLMD})).ref()
    assert (group.res, group.name, group.lease_creates) == (
        LLM_INFERENCE_SERVICE_CONFIGS,
        record_object_name("chat"),
        True,
    )


def test_only_standard_mode_needs_the_canary_field_and_only_llmd_its_crds():
    specs = [parse_spec({"platform": "kserve", **d}) for d in ({}, {"deployment_mode": "Knative"}, LLMD)]
    assert [(variant_for(s).need_canary_field(), variant_for(s).llmd) for s in specs] == [
        (True, False),
        (False, False),
        (False, True),
    ]
