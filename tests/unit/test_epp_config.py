"""Every EndpointPickerConfig we render uses only what the pinned llm-d scheduler knows.

The vocabulary is read from upstream files pinned in ``../shared/reference/``: llm-d's own sample
configs (``llm-d-inference-scheduler/deploy/config/*.yaml``) and the default configs KServe's
controller writes for llm-d (``kserve/pkg/controller/v1alpha2/llmisvc/scheduler.go``,
``schedulerConfigText``). A plugin type, a parameter path or an apiVersion that appears in none of
them fails the test. (At the pinned llm-d commit these types are registered in
``pkg/epp/framework/plugins/register.go``; the parameters are the JSON fields of each factory's
config, e.g. ``PrefixBasedPDDeciderConfig.NonCachedTokens``.)
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from llm_rollout.kserve import builders as b
from llm_rollout.spec import parse_spec
from tests.crds import KSERVE_REFERENCE, LLMD_REFERENCE, reference_dir


def _param_paths(params: Any, prefix: str = "") -> set[str]:
    if not isinstance(params, dict):
        return {prefix} if prefix else set()
    paths: set[str] = set()
    for key, value in params.items():
        paths |= _param_paths(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"}
    return paths


def _upstream_configs() -> list[dict[str, Any]]:
    configs = [
        yaml.safe_load(p.read_text()) for p in sorted((reference_dir(LLMD_REFERENCE) / "deploy/config").glob("*.yaml"))
    ]
    go = (reference_dir(KSERVE_REFERENCE) / "pkg/controller/v1alpha2/llmisvc/scheduler.go").read_text()
    body = go[go.index("func schedulerConfigText") :]
    body = body[: body.index("\n}\n")]
    for text in re.findall(r"fmt\.Sprintf\(`(.*?)`", body, flags=re.S):
        configs.append(yaml.safe_load(text.replace("%s", "")))
    return configs


UPSTREAM = _upstream_configs()
KNOWN_TYPES = {p["type"] for c in UPSTREAM for p in c["plugins"]}
KNOWN_PARAMS = {(p["type"], path) for c in UPSTREAM for p in c["plugins"] for path in _param_paths(p.get("parameters"))}
KNOWN_API = {(c["apiVersion"], c["kind"]) for c in UPSTREAM}


def test_the_upstream_vocabulary_was_read():
    assert len(UPSTREAM) == 5  # three llm-d samples, KServe's P/D and single-profile defaults
    assert {"disagg-profile-handler", "prefix-based-pd-decider", "always-disagg-pd-decider"} <= KNOWN_TYPES
    assert ("prefix-based-pd-decider", "nonCachedTokens") in KNOWN_PARAMS
    assert {("llm-d.ai/v1alpha1", "EndpointPickerConfig")} == KNOWN_API


SPECS = {
    "prefix-cache": {"scheduler": {"profile": "prefix-cache"}},
    "load": {"scheduler": {"profile": "load"}},
    "pd-threshold": {"prefill": {}, "scheduler": {"profile": "pd", "pd_threshold_tokens": 300}},
    "pd-always": {"prefill": {}, "scheduler": {"profile": "pd"}},
}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_rendered_config_uses_only_plugins_and_parameters_llm_d_has(name):
    spec = parse_spec({"platform": "kserve", "llmd": {"enabled": True, **SPECS[name]}})
    config = b.endpoint_picker_config(spec)
    assert (config["apiVersion"], config["kind"]) in KNOWN_API
    types = [p["type"] for p in config["plugins"]]
    assert set(types) <= KNOWN_TYPES, set(types) - KNOWN_TYPES
    params = {(p["type"], path) for p in config["plugins"] for path in _param_paths(p.get("parameters"))}
    assert params <= KNOWN_PARAMS, params - KNOWN_PARAMS
    refs = {r["pluginRef"] for prof in config["schedulingProfiles"] for r in prof["plugins"]}
    assert refs <= set(types)  # every profile entry names a declared plugin
    for plugin in config["plugins"]:  # every decider a handler names is declared
        for decider in plugin.get("parameters", {}).get("deciders", {}).values():
            assert decider in types
    handlers = [t for t in types if t.endswith("-profile-handler")]
    assert len(handlers) == 1


def test_the_default_profile_leaves_the_config_to_kserve():
    for llmd in ({}, {"prefill": {}}):
        spec = parse_spec({"platform": "kserve", "llmd": {"enabled": True, **llmd}})
        assert b.endpoint_picker_config(spec) is None
        assert (
            b.llm_inference_service(spec, b.default_member(spec, "hf://o/m", "r"))["spec"]["router"]["scheduler"] == {}
        )
