"""VLLM_ADDITIONAL_ARGS survives the exact command line of KServe's pinned llm-d presets.

Each preset's script (``../shared/reference/kserve/config/llmisvcconfig/``) is rendered as KServe
renders it (Go template over the JSON text, ``ReplaceVariables``) and run by bash with our
container's environment; a ``vllm`` probe prints the argv it was given. The arguments we meant
must arrive one for one. ``tests/serving/test_preset_args.py`` parses the same argv with vLLM's
own parser.
"""

from __future__ import annotations

import json
import shlex

import pytest

from llm_rollout.kserve import builders as b
from llm_rollout.spec import parse_spec
from llm_rollout.versions import VLLM_VERSION
from llm_rollout.vllm_args import server_args
from tests import presets as P

CASES = [(preset, role) for preset in P.PRESETS for role in P.PRESETS[preset]]


def _intended(spec, role: str) -> list[str]:
    args = server_args(spec, "llmd").args
    if spec.llmd.prefill is not None:
        kv_role = "kv_producer" if role.startswith("prefill") else "kv_consumer"
        kv = json.dumps({"kv_connector": "NixlConnector", "kv_role": kv_role}, separators=(",", ":"))
        args.append("--kv_transfer_config=" + kv)
    return args


def _argv(preset: str, role: str, obj: dict, tmp_path, env: dict | None = None, tls: bool = False) -> list[str]:
    (main,) = [c for r, c in P.preset_containers(preset).items() if r == role]
    command = P.rendered_command(main, obj, enable_tls=tls)
    env = P.env_of(P.our_container(obj, role)) if env is None else env
    return P.run_preset(command, env, tmp_path, vllm_version=VLLM_VERSION)


def test_every_pinned_preset_with_a_vllm_command_is_covered():
    found = sorted(p.name for p in P.REFERENCE.glob("*.yaml") if "exec vllm serve" in p.read_text())
    assert found == sorted(P.PRESETS)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize(("preset", "role"), CASES)
def test_the_preset_eval_gives_vllm_exactly_our_arguments(preset, role, tls, tmp_path):
    spec = parse_spec(P.case_spec(preset))
    obj = b.llm_inference_service(spec, b.default_member(spec, "hf://org/model", "r1"), weight=100)
    argv = _argv(preset, role, obj, tmp_path, tls=tls)
    intended = _intended(spec, role)
    assert argv[0] == "serve" and argv[1] == "/mnt/models"
    assert argv[-len(intended) :] == intended
    assert ("--ssl-certfile" in argv) == tls  # the template's GlobalConfig.EnableTLS branch ran
    assert set(P.TRICKY_EXTRA_ARGS) <= set(argv)


@pytest.mark.parametrize(("preset", "role"), [("config-llm-decode-template.yaml", "template")])
def test_an_unquoted_value_is_torn_apart_by_the_same_eval(preset, role, tmp_path):
    """The check above can fail: the plain join (what we used to send) arrives mangled."""
    spec = parse_spec(P.case_spec(preset))
    obj = b.llm_inference_service(spec, b.default_member(spec, "hf://org/model", "r1"), weight=100)
    env = P.env_of(P.our_container(obj, role))
    env["VLLM_ADDITIONAL_ARGS"] = " ".join(shlex.split(env["VLLM_ADDITIONAL_ARGS"]))
    argv = _argv(preset, role, obj, tmp_path, env)
    assert "--kv_transfer_config=kv_connector:NixlConnector" in argv  # brace expansion + quote removal
    assert not set(P.TRICKY_EXTRA_ARGS) <= set(argv)


def test_arguments_holding_a_go_template_action_are_refused():
    spec = parse_spec({"platform": "kserve", "llmd": {"enabled": True}, "runtime": {"extra_args": ["--x={{y}}"]}})
    with pytest.raises(Exception) as info:
        b.llm_inference_service(spec, b.default_member(spec, "hf://org/model", "r1"))
    assert "runtime.extra_args" in str(info.value) and "Go template" in str(info.value)
