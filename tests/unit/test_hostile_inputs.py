"""Hostile input, part one: what a spec, a workload or a calibration file can do (issue 31).

Every probe of issue 31 that lives in a document a user writes, replayed: each is refused while
the spec (or the file) is read, naming the field and the fix, or ends in a bounded, clear failure.
The probes that need a hostile server (``/metrics``, token streams, the API key's travels) are in
``tests/unit/test_hostile_servers.py``; ``model.name`` through the real preset shell line is in
``tests/unit/test_preset_eval.py``.

Rows are ``(document, field, words of the problem, words of the fix)``, in the spirit of the
bad-input catalogue (``tests/unit/test_spec.py`` ``BAD_INPUTS``, ``tests/unit/test_step_bad_inputs.py``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
from typing import Any

import pytest

from llm_rollout.bounded import MAX_DEPTH
from llm_rollout.errors import SpecError
from llm_rollout.kserve import builders as b
from llm_rollout.kserve.builders.llmd import _workload_scaling
from llm_rollout.kserve.builders.promql import promql_string
from llm_rollout.optimize_inputs import check_calibration, check_recipe
from llm_rollout.spec import coerce_spec, load_spec, parse_spec
from llm_rollout.spec.rules import check_no_template_actions
from llm_rollout.validation.probes import load_suite
from llm_rollout.validation.workload import load_file

LLMD = {"platform": "kserve", "llmd": {"enabled": True}, "model": {"uri": "hf://org/model"}}
PD = {
    "platform": "kserve",
    "llmd": {"enabled": True, "prefill": {}, "scheduler": {"profile": "pd", "pd_threshold_tokens": 16}},
    "validation": {"expect_disaggregation": True},
}


def _with(base: dict[str, Any], **sections: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    for key, value in sections.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


HOSTILE = [
    # 2. Go templates and JSON merges downstream (KServe config_merge.go ReplaceVariables).
    ({"runtime": {"env": {"X": "{{ .ObjectMeta.Name }}"}}}, "runtime.env.X", "Go template action", "without '{{'"),
    (
        _with(LLMD, llmd={"enabled": True, "image": "{{ .Spec.Model.Name }}"}),
        "llmd.image",
        "not a container image",
        "registry",
    ),
    (_with(LLMD, llmd={"enabled": True, "image": 'img"x'}), "llmd.image", "not a container image", "registry"),
    (_with(LLMD, llmd={"enabled": True, "image": "img\n:x"}), "llmd.image", "not a container image", "registry"),
    ({"runtime": {"image": "vllm/vllm-openai:{{x}}"}}, "runtime.image", "not a container image", "registry"),
    (
        _with(LLMD, llmd={"enabled": True, "gateway_refs": ["{{ .Spec }}"]}),
        "llmd.gateway_refs[0]",
        "not a valid Gateway",
        "lowercase",
    ),
    (
        _with(LLMD, llmd={"enabled": True, "gateway_refs": ['gw"}']}),
        "llmd.gateway_refs[0]",
        "not a valid Gateway",
        "lowercase",
    ),
    (
        _with(LLMD, llmd={"enabled": True, "gateway_refs": ["gw"], "http_route_refs": ["r\n{{x}}"], "route_group": ""}),
        "llmd.http_route_refs[0]",
        "not a valid HTTPRoute",
        "lowercase",
    ),
    (_with(LLMD, model={"uri": "hf://org/{{m}}"}), "model.uri", "Go template action", "without '{{'"),
    (_with(LLMD, model={"uri": "hf://org/m\nx"}), "model.uri", "newline", "one line"),
    (
        _with(LLMD, llmd={"enabled": True, "kv_connector": "Nixl$(id)"}),
        "llmd.kv_connector",
        "not a vLLM KV connector",
        "NixlConnector",
    ),
    (
        {"validation": {"metrics_urls": {"decode": "http://h/metrics\r\nX: y"}}},
        "validation.metrics_urls.decode",
        "control",
        "one line",
    ),
    (
        _with(LLMD, llmd={"enabled": True, "decode": {"scaling": {"prometheus_url": "http://p:9090/{{ .Spec }}"}}}),
        "llmd.decode.scaling.prometheus_url",
        "Go template action",
        "without '{{'",
    ),
    ({"validation": {"recovery": {"base_url": "http://h\n"}}}, "validation.recovery.base_url", "control", "one line"),
    # 3. Bounded: counts and sizes (each with its bound in the fix), no inf.
    (
        {"validation": {"load": {"concurrency": [100000]}}},
        "validation.load.concurrency.0",
        "is invalid",
        "less than or equal to 4096",
    ),
    (
        {"validation": {"slo": {"judge_concurrency": [10**9]}}},
        "validation.slo.judge_concurrency.0",
        "is invalid",
        "less than or equal",
    ),
    (
        {"validation": {"load": {"num_prompts": 10**8}}},
        "validation.load.num_prompts",
        "is invalid",
        "less than or equal to 100000",
    ),
    (
        {"validation": {"load": {"input_words": 10**7}}},
        "validation.load.input_words",
        "is invalid",
        "less than or equal",
    ),
    (
        {"validation": {"load": {"num_prompts": 100000, "input_words": 1000}}},
        "validation.load.num_prompts",
        "words to generate and hold",
        "product stays under",
    ),
    (
        {"validation": {"load": {"workload": {"dataset": "random", "input_len": 10**9}}}},
        "validation.load.workload.input_len",
        "is invalid",
        "less than or equal",
    ),
    (
        {"validation": {"load": {"num_prompts": 50_000, "workload": {"dataset": "random", "input_len": 1000}}}},
        "validation.load.num_prompts",
        "words to generate and hold",
        "product stays under",
    ),
    ({"runtime": {"max_model_len": 10**12}}, "runtime.max_model_len", "is invalid", "less than or equal"),
    ({"validation": {"readiness_timeout_s": float("inf")}}, "validation.readiness_timeout_s", "is invalid", "finite"),
    (
        {"validation": {"readiness_timeout_s": 10**9}},
        "validation.readiness_timeout_s",
        "is invalid",
        "less than or equal",
    ),
    (
        {"validation": {"load": {"max_duration_s": float("nan")}}},
        "validation.load.max_duration_s",
        "is invalid",
        "finite",
    ),
    ({"runtime": {"gpu_memory_utilization": float("nan")}}, "runtime.gpu_memory_utilization", "is invalid", "finite"),
    ({"scaling": {"expected_peak_rps": float("inf")}}, "scaling.expected_peak_rps", "is invalid", "finite"),
    # 4. The API key's sources.
    (
        {"validation": {"api_key_file": "/var/run/secrets/kubernetes.io/serviceaccount/token"}},
        "validation.api_key_file",
        "pod's own credentials",
        "mount the API key's Secret",
    ),
    ({"validation": {"api_key_file": "/proc/self/environ"}}, "validation.api_key_file", "under /proc", "elsewhere"),
    (
        {"validation": {"api_key_env": "AWS_SECRET_ACCESS_KEY"}},
        "validation.api_key_env",
        "another credential",
        "of its own",
    ),
    (
        {"validation": {"api_key_env": "KUBERNETES_SERVICE_HOST"}},
        "validation.api_key_env",
        "another credential",
        "of its own",
    ),
    ({"validation": {"api_key_env": "A=B"}}, "validation.api_key_env", "not a valid environment variable", "letters"),
    # 6. Accepted before, refused later by the cluster.
    (_with(LLMD, llmd={"enabled": True, "preset_name": "UPPER/../x"}), "llmd.preset_name", "DNS-1123", "lowercase"),
    (_with(LLMD, llmd={"enabled": True, "preset_name": ""}), "llmd.preset_name", "DNS-1123", "lowercase"),
    ({"model": {"revision": "../x\n"}}, "model.revision", "label value", "short id"),
    ({"model": {"revision": "r" * 64}}, "model.revision", "label value", "short id"),
    ({"runtime": {"env": {"": "x"}}}, "runtime.env.", "not a valid environment variable", "letters, digits"),
    ({"runtime": {"env": {"bad name": "x"}}}, "runtime.env.bad name", "not a valid environment variable", "letters"),
    ({"runtime": {"env": {"A=B": "x"}}}, "runtime.env.A=B", "not a valid environment variable", "letters"),
    (
        {"runtime": {"env": {"1X": "x"}}},
        "runtime.env.1X",
        "not a valid environment variable",
        "not starting with a digit",
    ),
    (
        {"runtime": {"secret_env": {"HF_TOKEN": {"name": "Bad_Name", "key": "token"}}}},
        "runtime.secret_env.HF_TOKEN.name",
        "not a valid Secret name",
        "lowercase",
    ),
    (
        {"runtime": {"secret_env": {"HF_TOKEN": {"name": "hf", "key": "a/b"}}}},
        "runtime.secret_env.HF_TOKEN.key",
        "not a valid Secret key",
        "letters",
    ),
    (
        {"runtime": {"secret_env": {"A B": {"name": "s", "key": "k"}}}},
        "runtime.secret_env.A B",
        "environment variable",
        "letters",
    ),
    ({"resources": {"cpu_request": "lots"}}, "resources.cpu_request", "not a Kubernetes quantity", "'500m'"),
    ({"resources": {"memory_limit": "-1Gi"}}, "resources.memory_limit", "not a Kubernetes quantity", "'16Gi'"),
    ({"resources": {"memory_request": "16 GiB"}}, "resources.memory_request", "not a Kubernetes quantity", "'16Gi'"),
    (
        {"resources": {"gpu_resource": "nvidia.com/gpu\n"}},
        "resources.gpu_resource",
        "extended resource",
        "nvidia.com/gpu",
    ),
    ({"runtime": {"service_account": "a..b"}}, "runtime.service_account", "not a valid service account", "lowercase"),
    ({"runtime": {"service_account": "-a"}}, "runtime.service_account", "not a valid service account", "lowercase"),
    ({"name": "ünïcode-模型"}, "name", "outside ASCII", "lowercase ASCII"),
    ({"runtime": {"runtime_name": "vllm-ü"}}, "runtime.runtime_name", "outside ASCII", "lowercase ASCII"),
]


@pytest.mark.parametrize(("doc", "field", "problem", "fix"), HOSTILE, ids=[f"{h[1]}:{h[2]}" for h in HOSTILE])
def test_a_hostile_value_is_refused_while_the_spec_is_read(doc, field, problem, fix):
    with pytest.raises(SpecError) as info:
        parse_spec(doc)
    err = info.value
    assert err.field == field, err
    assert problem in err.problem, err
    assert fix in err.fix, err
    assert len(str(err)) < 700, "the message quotes an excerpt, not the value"


@pytest.mark.parametrize(
    "doc",
    [
        {"runtime": {"env": {"VLLM_LOGGING_LEVEL": "DEBUG", "my.var-1": "{not a template}", "JSON": '{"a": 1}'}}},
        {"runtime": {"secret_env": {"HF_TOKEN": {"name": "hf-token.v1", "key": "token"}}}},
        {"resources": {"cpu_request": "500m", "cpu_limit": "1.5", "memory_request": "1e9", "memory_limit": "32Gi"}},
        {"model": {"revision": "2024-06-01.1_rc"}, "runtime": {"service_account": "model-reader.team-a"}},
        _with(LLMD, llmd={"enabled": True, "image": "ghcr.io/llm-d/llm-d-cuda:v0.3.0", "gateway_refs": ["gw.ns"]}),
        _with(LLMD, llmd={"enabled": True, "image": "registry:5000/a/b@sha256:" + "a" * 64}),
        {"validation": {"api_key_file": "/var/secrets/llm-api-key/token", "load": {"concurrency": [4096]}}},
    ],
)
def test_what_kubernetes_and_kserve_accept_stays_accepted(doc):
    parse_spec(doc)


def test_a_service_name_that_is_rewritten_is_said(caplog):
    caplog.set_level(logging.WARNING)
    spec = parse_spec({"name": "Lean RAG Inference"})
    assert spec.service_name == "lean-rag-inference"
    said = [r.getMessage() for r in caplog.records if "Lean RAG Inference" in r.getMessage()]
    assert said and "'lean-rag-inference'" in said[0], caplog.text
    caplog.clear()
    parse_spec({"name": "lean-rag-inference"})
    assert not [r for r in caplog.records if "not used as given" in r.getMessage()]


# 3. Documents that would exhaust memory or the stack -------------------------------------------

ALIAS_BOMB = """\
a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
name: *i
"""


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 500
    before = _peak_rss_mib()
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert _peak_rss_mib() - before < 100, "nothing was expanded"
    assert info.value.field == "spec" and "aliases" in info.value.problem and "line 2" in info.value.problem
    assert len(str(info.value)) < 500


def test_a_suite_or_recipe_alias_bomb_is_refused_before_it_expands(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB.replace("name: *i", "probes: *i"))
    for field, read in (("validation.suite_file", load_suite), ("recipe_path", check_recipe)):
        with pytest.raises(SpecError) as info:
            read(str(path))
        assert info.value.field == field and "aliases" in info.value.problem


def test_a_huge_value_of_the_wrong_type_is_quoted_as_an_excerpt():
    with pytest.raises(SpecError) as info:
        parse_spec({"name": ["x" * 1000] * 10_000})
    assert len(str(info.value)) < 300, str(info.value)[:400]
    with pytest.raises(SpecError) as info:
        parse_spec({"namespace": "n" * 1_000_000})
    assert len(str(info.value)) < 2000  # SpecError keeps at most 800 characters of a problem


def test_the_p_d_check_never_builds_the_workload():
    """The 300-byte JSON spec of the issue (num_prompts 1e8 with the P/D proof) died in MemoryError."""
    text = json.dumps(_with(PD, validation={"expect_disaggregation": True, "load": {"num_prompts": 1e8}}))
    assert len(text) < 300
    before = _peak_rss_mib()
    with pytest.raises(SpecError) as info:
        coerce_spec(text)
    assert _peak_rss_mib() - before < 100, "no prompt list was built"
    assert info.value.field == "validation.load.num_prompts"
    # At the bound the check reads prompts one at a time, in bounded time and memory.
    before = _peak_rss_mib()
    ok = _with(PD, validation={"expect_disaggregation": True, "load": {"num_prompts": 100_000, "input_words": 64}})
    coerce_spec(json.dumps(ok))
    assert _peak_rss_mib() - before < 200


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 100_000])
def test_deep_json_is_a_spec_error(depth):
    text = "[" * depth + "]" * depth
    with pytest.raises(SpecError) as info:
        coerce_spec('{"name": ' + text + "}")
    assert info.value.field == "spec" and "nested" in info.value.problem
    with pytest.raises(SpecError):
        parse_spec({"model": json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)})


def test_deep_yaml_is_a_spec_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert "nested deeper" in info.value.problem


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.mark.timeout(60)  # a read to /dev/zero's (missing) end or a FIFO's writer would hang here
@pytest.mark.parametrize("source", ["/dev/zero", "fifo", "dir"])
def test_spec_workload_recipe_and_calibration_files_must_be_regular(source, fifo, tmp_path):
    path = {"fifo": str(fifo), "dir": str(tmp_path)}.get(source, source)
    for field, read in (
        ("spec", lambda: load_spec(path)),
        ("validation.load.workload.path", lambda: load_file(path)),
        ("recipe_path", lambda: check_recipe(path)),
        ("validation.suite_file", lambda: load_suite(path)),
    ):
        with pytest.raises(SpecError) as info:
            read()
        assert info.value.field == field, info.value
        assert "not a regular file" in info.value.problem, info.value
        assert "regular" in info.value.fix
    if source != "dir":  # a dataset directory is a calibration source
        with pytest.raises(SpecError) as info:
            check_calibration(path)
        assert info.value.field == "calibration" and "not a regular file" in info.value.problem


def test_a_workload_file_over_the_cap_is_refused_while_read(tmp_path, monkeypatch):
    from llm_rollout.validation import workload

    monkeypatch.setattr(workload, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "w.jsonl"
    path.write_text(('{"prompt": "hi", "max_tokens": 4}\n') * 100)
    with pytest.raises(SpecError) as info:
        load_file(str(path))
    assert "larger than" in info.value.problem and "smaller" in info.value.fix


# 2. What reaches KServe's template merge and KEDA's PromQL, when a value slips past the spec ------


def _bypass(spec, **model: str):
    """Puts values into a parsed spec past its validators (what a future field could forget)."""
    for key, value in model.items():
        spec.model.__dict__[key] = value
    return spec


def test_the_built_llm_inference_service_refuses_a_template_action_anywhere():
    spec = parse_spec(_with(LLMD, runtime={"env": {"A": "plain"}}))
    obj = b.llm_inference_service(spec, b.default_member(spec, "hf://org/model", "r1"))
    check_no_template_actions(obj)  # what we build is clean
    spec.runtime.__dict__["env"] = {"A": "{{ .ObjectMeta.Namespace }}"}
    with pytest.raises(SpecError) as info:
        b.llm_inference_service(spec, b.default_member(spec, "hf://org/model", "r1"))
    assert "spec.template.containers[0].env" in info.value.problem and "Go template" in info.value.problem
    spec.llmd.__dict__["image"] = "x{{y}}"
    with pytest.raises(SpecError) as info:
        b.llm_inference_service_config(spec)
    assert "LLMInferenceServiceConfig" in info.value.problem and "image" in info.value.problem


def _go_unquote(text: str, start: int) -> tuple[str, int]:
    """Reads a double-quoted PromQL string at ``text[start]`` as Prometheus' lexer does; returns (value, end)."""
    assert text[start] == '"'
    out, i = [], start + 1
    escapes = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"'}
    while text[i] != '"':
        if text[i] == "\\":
            nxt = text[i + 1]
            if nxt == "x":
                out.append(chr(int(text[i + 2 : i + 4], 16)))
                i += 4
                continue
            out.append(escapes[nxt])
            i += 2
            continue
        assert text[i] != "\n"
        out.append(text[i])
        i += 1
    return "".join(out), i + 1


PROMQL_HOSTILE = ['"}) or vector(1e9) #', 'a\\"b', "x\ny", "tab\there", "\x01ctl", "plain/model:7b"]


@pytest.mark.parametrize("name", PROMQL_HOSTILE)
def test_keda_label_values_are_promql_string_literals(name):
    assert _go_unquote(promql_string(name), 0) == (name, len(promql_string(name)))
    spec = parse_spec(_with(LLMD, llmd={"enabled": True, "decode": {"scaling": {"min_replicas": 1}}}))
    _bypass(spec, name=name)
    query = _workload_scaling(spec, "decode", spec.llmd.decode)["keda"]["triggers"][0]["metadata"]["query"]
    head = 'sum(rate(vllm:request_success_total{namespace="default",model_name='
    assert query.startswith(head), query
    value, end = _go_unquote(query, len(head))
    assert value == name
    assert query[end:] == ',llm_d_ai_role="decode"}[1m]))', "the rest of the query is ours, unchanged"


def test_the_isvc_keda_query_escapes_its_values_too():
    spec = parse_spec({"platform": "kserve"})
    from llm_rollout.kserve.builders.isvc import _scaling_fields

    query = _scaling_fields(spec)["autoScaling"]["metrics"][0]["external"]["metric"]["query"]
    assert (
        query == 'sum(rate(vllm:request_success_total{namespace="default",service="lean-rag-inference-predictor"}[1m]))'
    )
    assert re.fullmatch(r"sum\(rate\(vllm:request_success_total\{[^{}]*\}\[1m\]\)\)", query)
