"""``llm-rollout render``: no label or annotation of an object changes between the phases of a rollout.

KServe copies an InferenceService's labels and annotations into each predictor's pod template
(``components/predictor.go`` ``buildObjectMeta``): metadata that changed between phases restarted
the serving pods (Standard) or made a new Knative revision. The stand-in's own pod-template model
(:func:`tests.reconciler.pod_templates`) is used for the second check: a predictor workload that
exists in two phases has the same pod template in both.
"""

from __future__ import annotations

import pytest
import yaml

from llm_rollout.render import PHASES, render_manifests
from llm_rollout.spec import parse_spec
from tests.reconciler import pod_templates

SPECS = {
    "standard": {"platform": "kserve", "canary": {"traffic_percent": 10}},
    "knative": {"platform": "kserve", "deployment_mode": "Knative", "canary": {"traffic_percent": 10}},
}


def _rendered(doc: dict, phase: str) -> list[dict]:
    """What ``llm-rollout render --phase PHASE`` writes, read back from its YAML text."""
    return [
        obj for text in render_manifests(parse_spec(doc), phase).values() for obj in yaml.safe_load_all(text) if obj
    ]


@pytest.mark.parametrize("mode", sorted(SPECS))
def test_no_label_or_annotation_changes_between_phases(mode):
    seen: dict[tuple[str, str], dict] = {}
    for phase in PHASES:
        for obj in _rendered(SPECS[mode], phase):
            meta = obj.get("metadata") or {}
            key = (obj["kind"], meta["name"])
            here = {"labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {}}
            assert seen.setdefault(key, here) == here, f"{key} in phase {phase}"
    assert {k[0] for k in seen} >= {"InferenceService", "ServingRuntime", "LLMInferenceService"}


@pytest.mark.parametrize("mode", sorted(SPECS))
def test_each_predictor_keeps_its_pod_template_from_canary_to_promoted(mode):
    templates: dict[str, dict] = {}
    for phase in PHASES:
        isvc = next(o for o in _rendered(SPECS[mode], phase) if o["kind"] == "InferenceService")
        for workload, template in pod_templates(isvc).items():
            if mode == "knative":
                continue  # one Knative Service: a new model is a new revision by design
            assert templates.setdefault(workload, template) == template, f"{workload} in phase {phase}"
    if mode == "standard":
        # first: <isvc>-predictor; canary: + the canary's; promoted: the canary's, now the stable one.
        assert len(templates) == 2


def test_knative_renders_tag_routing_so_each_revision_has_its_own_address():
    for phase in PHASES:
        isvc = next(o for o in _rendered(SPECS["knative"], phase) if o["kind"] == "InferenceService")
        assert isvc["metadata"]["annotations"]["serving.kserve.io/enable-tag-routing"] == "true"
