"""``runtime.accelerator`` pins the serving pods to the GPU the spec was checked against (issue 25 item 9).

Without a pin the preflight approves a GPU the pods may never land on: the scheduler places them on
any node with a free ``nvidia.com/gpu``. The pin is a ``nodeSelector`` on the GPU product label
NVIDIA GPU Feature Discovery sets (``nvidia.com/gpu.product``), key and value configurable.
"""

from __future__ import annotations

import pytest

from llm_rollout.errors import SpecError
from llm_rollout.kserve import builders as b
from llm_rollout.spec import parse_spec
from tests.schema_check import schema_errors

STABLE = b.Member(name="v1", model_uri="s3://models/v1", revision="v1")
CANARY = b.Member(name="v2", model_uri="s3://models/v2", revision="v2", traffic_percent=10)
A10G = {"nvidia.com/gpu.product": "NVIDIA-A10G"}


def _pods(obj):
    """Every pod template of a rendered object (predictor and canary entries; llm-d roles and workers)."""
    spec = obj["spec"]
    if obj["kind"] == "InferenceService":
        return [spec["predictor"], *(c["predictor"] for c in spec.get("canary") or [])]
    roles = [spec, *([spec["prefill"]] if spec.get("prefill") else [])]
    return [r[k] for r in roles for k in ("template", "worker") if k in r]


def test_the_predictor_and_its_canary_land_on_the_checked_gpu():
    spec = parse_spec({"platform": "kserve", "runtime": {"accelerator": "nvidia-a10g"}})
    isvc = b.inference_service(spec, STABLE, CANARY)
    assert [p["nodeSelector"] for p in _pods(isvc)] == [A10G, A10G]
    assert schema_errors(isvc) == []
    promoted = b.promoted_predictor(spec, isvc["spec"]["canary"][0]["predictor"])
    assert promoted["nodeSelector"] == A10G  # the promoted pods stay where they were validated


def test_knative_predictor_is_pinned_too():
    spec = parse_spec({"platform": "kserve", "deployment_mode": "Knative", "runtime": {"accelerator": "nvidia-l4"}})
    isvc = b.inference_service(spec, STABLE, CANARY)
    assert isvc["spec"]["predictor"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}


def test_llmd_roles_and_workers_are_pinned():
    spec = parse_spec(
        {
            "platform": "kserve",
            "runtime": {"accelerator": "nvidia-h100", "accelerator_node_value": "NVIDIA-H100-PCIe"},
            "scaling": None,
            "llmd": {
                "enabled": True,
                "decode": {"replicas": 1, "tensor": 1, "nodes": 2, "pipeline": 2},
                "prefill": {"replicas": 1, "tensor": 1},
            },
        }
    )
    obj = b.llm_inference_service(spec, b.default_member(spec), weight=100)
    pods = _pods(obj)
    assert len(pods) == 3  # decode template, decode worker, prefill template
    assert all(p["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-PCIe"} for p in pods)
    assert schema_errors(obj) == []


def test_the_label_key_is_configurable_and_empty_pins_nothing():
    spec = parse_spec(
        {"runtime": {"accelerator": "nvidia-a10g", "accelerator_node_label": "cloud.google.com/gke-accelerator"}}
    )
    assert b.inference_service(spec, STABLE)["spec"]["predictor"]["nodeSelector"] == {
        "cloud.google.com/gke-accelerator": "NVIDIA-A10G"
    }
    unpinned = parse_spec({"runtime": {"accelerator": "nvidia-a10g", "accelerator_node_label": ""}})
    assert "nodeSelector" not in b.inference_service(unpinned, STABLE)["spec"]["predictor"]
    unknown = parse_spec({})
    assert "nodeSelector" not in b.inference_service(unknown, STABLE)["spec"]["predictor"]


@pytest.mark.parametrize(
    ("runtime", "field"),
    [
        ({"accelerator": "nvidia-a10g", "accelerator_node_label": "bad key!"}, "runtime.accelerator_node_label"),
        ({"accelerator": "nvidia-a10g", "accelerator_node_value": "NVIDIA A10G"}, "runtime.accelerator_node_value"),
    ],
)
def test_a_pin_kubernetes_would_refuse_is_refused_up_front(runtime, field):
    with pytest.raises(SpecError) as err:
        parse_spec({"runtime": runtime})
    assert err.value.field == field
