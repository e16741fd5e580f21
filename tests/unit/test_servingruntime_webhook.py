"""The ServingRuntime webhook mirror (``tests/webhook_check.py`` :func:`servingruntime_webhook_errors`) and our runtime.

Upstream's own cases of ``pkg/webhook/admission/servingruntime/servingruntime_webhook_test.go``
``TestValidateServingRuntimePriority`` (KServe v0.20, the pinned commit), named as upstream names
them, run against the mirror of ``validateServingRuntimePriority``; then the runtime we register is
shown to be admitted beside another service's runtime in the same namespace (issue 25 item 7).
"""

from __future__ import annotations

import pytest

from llm_rollout.kserve import builders as b
from llm_rollout.spec import parse_spec
from tests.webhook_check import _runtime_priority_error, servingruntime_webhook_errors


def _rt(*, auto=True, priority=1, version="1", multi=False, disabled=False, protocols=("v1", "v2"), fmt="sklearn"):
    model_format = {"name": fmt, "priority": priority}
    if version is not None:
        model_format["version"] = version
    if auto is not None:
        model_format["autoSelect"] = auto
    return {
        "supportedModelFormats": [model_format],
        "multiModel": multi,
        "disabled": disabled,
        "protocolVersions": list(protocols),
    }


SAME = "same priority assigned for the model format sklearn"

# TestValidateServingRuntimePriority: (name, new spec, existing spec, new name, existing name, expected)
UPSTREAM = [
    ("When both serving runtimes are not MMS it should return nil", _rt(), _rt(multi=True), "new", "existing", ""),
    (
        "When priority is same for model format in multi model serving runtime it should return error",
        _rt(multi=True),
        _rt(multi=True),
        "new",
        "existing",
        SAME,
    ),
    ("When existing serving runtime is disabled it should return nil", _rt(), _rt(disabled=True), "new", "old", ""),
    ("When new serving runtime and existing runtime are same it should return nil", _rt(), _rt(), "same", "same", ""),
    (
        "When model format is same and supported protocol version is different it should return nil",
        _rt(protocols=("v1",)),
        _rt(protocols=("v2",)),
        "new",
        "existing",
        "",
    ),
    ("When model format is different it should return nil", _rt(), _rt(fmt="pytorch"), "new", "existing", ""),
    ("When autoselect is false in the new serving runtime it should return nil", _rt(auto=False), _rt(), "n", "e", ""),
    (
        "When autoselect is not specified in the new serving runtime it should return nil",
        _rt(auto=None),
        _rt(),
        "n",
        "e",
        "",
    ),
    (
        "When autoselect is false in the existing serving runtime it should return nil",
        _rt(),
        _rt(auto=False),
        "n",
        "e",
        "",
    ),
    (
        "When model version is nil in both serving runtime and priority is same it should return error",
        _rt(version=None),
        _rt(version=None),
        "new",
        "existing",
        SAME,
    ),
    (
        "When model version is nil in both serving runtime and priority is not same then it should return nil",
        _rt(version=None, priority=2),
        _rt(version=None),
        "new",
        "existing",
        "",
    ),
    (
        "When model version is nil in new serving runtime and priority is same then it should return nil",
        _rt(version=None),
        _rt(),
        "new",
        "existing",
        "",
    ),
]


@pytest.mark.parametrize(("name", "new", "existing", "new_name", "existing_name", "expected"), UPSTREAM)
def test_upstream_validate_serving_runtime_priority(name, new, existing, new_name, existing_name, expected):
    assert _runtime_priority_error(new, existing, new_name, existing_name) == expected, name


def _ours(service: str) -> dict:
    return b.serving_runtime(parse_spec({"platform": "kserve", "namespace": "team", "name": service}))


def test_two_services_register_their_runtimes_in_one_namespace():
    first, second = _ours("chat"), _ours("code")
    assert first["metadata"]["name"] != second["metadata"]["name"]
    assert servingruntime_webhook_errors(first, []) == []
    assert servingruntime_webhook_errors(second, [first]) == []
    assert servingruntime_webhook_errors(first, [first, second]) == []  # a rerun updates its own


def test_our_runtime_is_never_auto_selected_and_declares_protocols_as_upstreams_vllm_runtime():
    spec = _ours("chat")["spec"]
    assert [f.get("autoSelect") for f in spec["supportedModelFormats"]] == [False]
    assert "protocolVersions" not in spec  # kserve-vllmserver.yaml declares none
    isvc = b.inference_service(parse_spec({"platform": "kserve", "name": "chat"}), b.default_member(parse_spec({})))
    assert isvc["spec"]["predictor"]["model"]["runtime"] == "chat-vllm"  # the service names its runtime


def test_the_mirror_refuses_what_the_old_runtime_did_twice():
    old = {"name": "vLLM", "version": "1", "autoSelect": True, "priority": 1}

    def legacy(name):
        return {
            "metadata": {"name": name, "namespace": "team"},
            "spec": {"supportedModelFormats": [old], "protocolVersions": ["v2"]},
        }

    errors = servingruntime_webhook_errors(legacy("code-vllm"), [legacy("chat-vllm")])
    assert errors == [
        "same priority assigned for the model format vLLM"
        " in the servingruntimes chat-vllm and code-vllm in namespace team"
    ]
