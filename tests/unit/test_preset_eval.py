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


# model.name reaches the same eval unquoted (issue 31) ------------------------------------------

HOSTILE_MODEL_NAMES = [
    "m$(touch${IFS}pwned)",  # command substitution: ran inside the container, vLLM still started
    "m`touch pwned`",  # backticks
    "m;touch pwned",  # cuts vLLM's command line short and runs the rest
    "m && touch pwned",  # spaces split the name, && chains a command
    "m{a,b}",  # brace expansion: two served names
    "m*",  # a glob over the pod's working directory
    "{{ .ObjectMeta.Name }}",  # a Go template action KServe would execute (config_merge.go)
    'm"x',  # a quote breaks the JSON merge and the shell quoting
    "m\nx",  # a newline ends the shell line
    "-m",  # read as an option by vLLM
    "",  # (empty is allowed: the service name serves) -- replaced below
]
HOSTILE_MODEL_NAMES[-1] = "x" * 129  # over the cap


@pytest.mark.parametrize("name", HOSTILE_MODEL_NAMES)
def test_a_model_name_the_preset_shell_would_run_is_refused_when_the_spec_is_read(name):
    with pytest.raises(Exception) as info:
        parse_spec({"platform": "kserve", "llmd": {"enabled": True}, "model": {"name": name}})
    err = info.value
    assert getattr(err, "field", None) == "model.name", err
    assert "letters, digits and . _ : / - only" in str(err) and "eval" in str(err)


SAFE_MODEL_NAMES = ["meta-llama/Llama-3.1-8B-Instruct", "qwen2:7b_v2.1"]


@pytest.mark.parametrize("name", SAFE_MODEL_NAMES)
@pytest.mark.parametrize(("preset", "role"), CASES)
def test_every_accepted_model_name_reaches_vllm_intact_and_runs_nothing(preset, role, name, tmp_path):
    spec = parse_spec({**P.case_spec(preset), "model": {"name": name}})
    obj = b.llm_inference_service(spec, b.default_member(spec, "hf://org/model", "r1"), weight=100)
    argv = _argv(preset, role, obj, tmp_path)
    at = argv.index("--served-model-name")
    assert argv[at + 1] == name
    if "prefill" not in role:  # the prefill presets give vLLM the name alone
        assert argv[at + 2] == f"publishers/{spec.namespace}/models/{name}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]  # nothing written beside the probe


def _run_raw_name(name: str, tmp_path) -> list[str]:
    preset, role = "config-llm-template.yaml", "template"
    spec = parse_spec(P.case_spec(preset))
    obj = b.llm_inference_service(spec, b.default_member(spec, "hf://org/model", "r1"), weight=100)
    obj["spec"]["model"]["name"] = name  # past the spec's rule, as a hand-edited object would be
    (main,) = [c for r, c in P.preset_containers(preset).items() if r == role]
    env = P.env_of(P.our_container(obj, role))
    return P.run_preset(P.rendered_command(main, obj), env, tmp_path, vllm_version=VLLM_VERSION)


@pytest.mark.parametrize("name", ["m$(touch${IFS}pwned)", "m`touch pwned`"])
def test_the_same_eval_runs_a_hostile_name_that_skips_our_check(name, tmp_path):
    """The checks above can fail: a name put into the object past the spec's rule executes in the preset."""
    argv = _run_raw_name(name, tmp_path)
    assert (tmp_path / "pwned").exists()
    assert argv[argv.index("--served-model-name") + 1] == "m"  # and vLLM still starts, silently


def test_the_same_eval_cuts_vllms_command_line_at_a_semicolon_in_the_name(tmp_path):
    argv = _run_raw_name("m;touch pwned", tmp_path)
    assert argv[-2:] == ["--served-model-name", "m"]  # exec ran at ';': every later argument is lost


@pytest.mark.parametrize("section", ["env", "secret_env"])
def test_the_presets_eval_variable_cannot_be_set_through_runtime_env(section):
    value = "--x=$(id)" if section == "env" else {"name": "s", "key": "k"}
    with pytest.raises(Exception) as info:
        parse_spec({"runtime": {section: {"VLLM_ADDITIONAL_ARGS": value}}})
    assert getattr(info.value, "field", None) == f"runtime.{section}.VLLM_ADDITIONAL_ARGS"
    assert "runtime.extra_args" in str(info.value)
