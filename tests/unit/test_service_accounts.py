"""Who runs as whom: the steps as our account (RBAC of manifests/rbac.yaml), the model server never.

The steps' account may patch and delete InferenceServices; a vLLM pod that ran as it would hand
those rights to whatever runs inside the model server. So the serving pods get no
``serviceAccountName`` by default (the namespace's ``default`` account, no RBAC of ours) or their
own from ``runtime.service_account``, and the spec refuses the steps' account there.
"""

from __future__ import annotations

import pytest

from llm_rollout.errors import SpecError
from llm_rollout.kserve import builders as b
from llm_rollout.spec import parse_spec
from tests.schema_check import schema_errors

STABLE = b.Member(name="svc-aaaa1111", model_uri="s3://models/v1", revision="v1")
CANARY = b.Member(name="svc-bbbb2222", model_uri="s3://models/v2", revision="v2", traffic_percent=10)


def _pod_specs(spec):
    """Every pod template the serving objects carry: predictor, canary, llm-d decode/prefill/worker."""
    isvc = b.inference_service(spec, STABLE, CANARY)["spec"]
    pods = [isvc["predictor"]] + [c["predictor"] for c in isvc.get("canary", [])]
    llmd_spec = b.llmd_example_spec(spec)
    body = b.llm_inference_service(llmd_spec, STABLE, weight=100)["spec"]
    pods += [body["template"], body["prefill"]["template"]]
    return pods


def test_serving_pods_run_as_the_namespace_default_account_by_default():
    spec = parse_spec({"platform": "kserve", "canary": {"traffic_percent": 10}})
    assert spec.service_account == "llm-rollout" and spec.runtime.service_account is None
    for pod in _pod_specs(spec):
        assert "serviceAccountName" not in pod, pod
    rendered = b.render_all(spec)
    for obj in rendered["kserve-inferenceservice.yaml"] + rendered["llm-d-configuration.yaml"]:
        assert _service_accounts(obj) == [], obj["kind"]


def _service_accounts(node):
    if isinstance(node, dict):
        found = [node["serviceAccountName"]] if "serviceAccountName" in node else []
        return found + [sa for v in node.values() for sa in _service_accounts(v)]
    if isinstance(node, list):
        return [sa for v in node for sa in _service_accounts(v)]
    return []


def test_serving_pods_get_their_own_account_from_the_spec():
    spec = parse_spec({"platform": "kserve", "canary": {"traffic_percent": 10}, "runtime": {"service_account": "vllm"}})
    for pod in _pod_specs(spec):
        assert pod["serviceAccountName"] == "vllm"
    isvc = b.inference_service(spec, STABLE, CANARY)
    assert schema_errors(isvc) == []
    assert schema_errors(b.llm_inference_service(b.llmd_example_spec(spec), STABLE, weight=100)) == []
    # The RBAC objects still bind the steps' account, never the serving pods' one.
    subjects = [s["name"] for o in b.rbac(spec) if "subjects" in o for s in o["subjects"]]
    assert subjects == ["llm-rollout"] * 3


@pytest.mark.parametrize(
    ("doc", "field", "words"),
    [
        ({"runtime": {"service_account": "llm-rollout"}}, "runtime.service_account", "patch and delete"),
        (
            {"service_account": "steps", "runtime": {"service_account": "steps"}},
            "runtime.service_account",
            "pipeline steps' account",
        ),
        ({"runtime": {"service_account": "Bad_SA"}}, "runtime.service_account", "not a valid service account"),
    ],
)
def test_the_steps_account_or_a_bad_name_on_the_serving_pods_is_refused(doc, field, words):
    with pytest.raises(SpecError) as info:
        parse_spec(doc)
    assert info.value.field == field
    assert words in str(info.value) and "Fix:" in str(info.value)
