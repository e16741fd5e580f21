"""The typed rollout spec: serving-design defaults, and every bad input refused with field and fix."""

import pytest

from llm_rollout.errors import SpecError
from llm_rollout.names import MAX_NAME_LEN, dns_name, is_dns_label, member_name
from llm_rollout.spec import RolloutSpec, load_spec, parse_spec


def test_defaults_follow_the_serving_design():
    spec = parse_spec({})
    assert spec.name == "lean-rag-inference"
    assert spec.runtime.gpu_memory_utilization == 0.9
    assert spec.runtime.kv_cache_dtype == "fp8"
    assert spec.resources.gpus == 1
    assert (spec.resources.memory_request, spec.resources.memory_limit) == ("16Gi", "32Gi")
    assert (spec.resources.cpu_request, spec.resources.cpu_limit) == ("4", "8")
    assert (spec.scaling.min_replicas, spec.scaling.max_replicas, spec.scaling.metric) == (1, 10, "request-rate")
    assert spec.validation.slo.checks == ["p95_ttft_ms <= 100", "error_rate == 0"]
    assert spec.validation.slo.judge_concurrency == [10, 20]
    assert spec.validation.recovery.checks == ["output_throughput_ratio_vs_baseline >= 2"]
    assert spec.validation.recovery.base_url is None  # recovery only against an original served beside it
    comparison = spec.validation.comparison
    assert (comparison.enabled, comparison.confidence, comparison.ttft_margin) == (True, 0.95, 0.20)
    assert spec.replicas is None


def test_fixed_replicas_switch_autoscaling_off():
    spec = parse_spec({"replicas": 3})
    assert spec.replicas == 3 and spec.scaling is None


def test_legacy_deployment_mode_names_are_accepted():
    assert parse_spec({"deployment_mode": "RawDeployment"}).deployment_mode == "Standard"
    assert parse_spec({"deployment_mode": "Serverless"}).deployment_mode == "Knative"


def test_fp8_kv_cache_is_fine_on_hopper_and_on_ampere():
    parse_spec({"runtime": {"accelerator": "nvidia-h100", "kv_cache_dtype": "fp8"}})
    parse_spec({"runtime": {"accelerator": "nvidia-a10g", "kv_cache_dtype": "fp8"}})
    parse_spec({"runtime": {"accelerator": "nvidia-a100", "kv_cache_dtype": "fp8_e4m3"}})


def test_spec_roundtrips_through_json():
    spec = parse_spec({"name": "x", "runtime": {"extra_args": ["--enable-prefix-caching"]}})
    assert RolloutSpec.model_validate_json(spec.model_dump_json()) == spec


# Every bad input names the field and the fix: (document, field, words in the problem, words in the fix)
BAD_INPUTS = [
    ({"service_account": "Bad_SA"}, "service_account", "not a valid service account name", "lowercase letters"),
    ({"runtime": {"extra_args": "--max-num-seqs 8"}}, "runtime.extra_args", "shell string", "one list item"),
    ({"runtime": {"extra_args": ["-tp", "2"]}}, "runtime.extra_args[0]", "short or malformed", "long form"),
    ({"runtime": {"extra_args": ["--Bad_Flag"]}}, "runtime.extra_args[0]", "not a vLLM flag", "--max-num-seqs"),
    ({"runtime": {"extra_args": ["256"]}}, "runtime.extra_args[0]", "value without a flag", "put the flag"),
    ({"runtime": {"extra_args": ["--port=9000"]}}, "runtime.extra_args[0]", "runtime.port", "set 'runtime.port'"),
    (
        {"runtime": {"extra_args": ["--tensor-parallel-size", "2"]}},
        "runtime.extra_args[0]",
        "resources.gpus",
        "resources.gpus",
    ),
    (
        {"runtime": {"accelerator": "nvidia-t4", "kv_cache_dtype": "fp8"}},
        "runtime.kv_cache_dtype",
        "no attention backend for --kv-cache-dtype=fp8 on nvidia-t4 (compute capability 7.5)",
        "'auto'",
    ),
    (
        {"runtime": {"accelerator": "nvidia-a10g"}, "model": {"quantization": "FP8_DYNAMIC"}},
        "model.quantization",
        "nvidia-a10g has 8.6, where vLLM loads it as weight-only FP8",
        "W8A8 (int8 weights and activations",
    ),
    ({"runtime": {"accelerator": "voodoo-9000"}}, "runtime.accelerator", "unknown GPU family", "nvidia-h100"),
    ({"runtime": {"kv_cache_dtype": "int3"}}, "runtime.kv_cache_dtype", "not a KV-cache dtype", "fp8_e5m2"),
    (
        {"llmd": {"enabled": True, "decode": {"tensor": 1}, "prefill": {"tensor": 2}}},
        "llmd.prefill.tensor",
        "larger than decode",
        "<= 1",
    ),
    ({"canary": {"traffic_percent": 101}}, "canary.traffic_percent", "outside 0-100", "between 0"),
    ({"canary": {"traffic_percent": -5}}, "canary.traffic_percent", "outside 0-100", "between 0"),
    ({"canary": {"steps": [50, 10, 100]}}, "canary.steps[1]", "rise strictly", "increasing"),
    ({"canary": {"steps": [10, 50]}}, "canary.steps", "not 100", "end the steps with 100"),
    (
        {"platform": "kserve", "kserve_version": "0.15", "canary": {"traffic_percent": 10}},
        "canary",
        "ignores canary traffic",
        "Knative",
    ),
    ({"replicas": 2, "scaling": {"max_replicas": 4}}, "replicas", "mutually exclusive", "not both"),
    (
        {"scaling": {"min_replicas": 5, "max_replicas": 2}},
        "scaling.min_replicas",
        "above max_replicas",
        "<= max_replicas",
    ),
    ({"scaling": {"min_replicas": 0}}, "scaling.min_replicas", "scale to zero needs Knative", "Knative"),
    ({"platform": "kserve", "model": {"uri": "ftp://host/m"}}, "model.uri", "cannot load ftp://", "s3://"),
    ({"platform": "kserve", "model": {"uri": "/data/models/m"}}, "model.uri", "a local path", "PVC"),
    ({"platform": "local", "model": {"uri": "s3://b/m"}}, "model.uri", "not s3://", "local directory"),
    ({"kserve_version": "latest"}, "kserve_version", "'latest' is not a version", "like '0.20'"),
    ({"platform": "kserve", "model": {"uri": "hf://"}}, "model.uri", "names no organisation", "hf://org/repo"),
    ({"platform": "kserve", "model": {"uri": "hf://org"}}, "model.uri", "no repository", "hf://org/repo"),
    ({"platform": "kserve", "model": {"uri": "gs:///m"}}, "model.uri", "names no bucket", "gs://bucket/"),
    (
        {"platform": "kserve", "llmd": {"enabled": True}, "model": {"uri": "gs://b/m"}},
        "model.uri",
        "llm-d's storage initializer cannot load gs://",
        "hf://",
    ),
    ({"name": "---"}, "name", "no letters or digits", "lowercase letters"),
    ({"name": "9lives"}, "name", "does not start with a letter", "prefix it"),
    ({"namespace": "Bad_NS"}, "namespace", "not a valid Kubernetes namespace", "lowercase"),
    ({"platform": "openshift"}, "platform", "not allowed", "'kserve' or 'local'"),
    (
        {"runtime": {"gpu_memory_utilization": 1.5}},
        "runtime.gpu_memory_utilization",
        "1.5 is invalid",
        "less than or equal to 1",
    ),
    ({"runtim": {}}, "runtim", "unknown field", "spelling"),
    ({"platform": "kserve", "resources": {"gpus": 0}}, "resources.gpus", "0 GPUs", "at least 1 GPU"),
    # llm-d: the LLMInferenceService webhook's rules and P/D's own limits.
    (
        {"llmd": {"enabled": True, "decode": {"tensor": 2}, "prefill": {"tensor": 4}}},
        "llmd.prefill.tensor",
        "NIXL KV transfer cannot map",
        "raise llmd.decode.tensor",
    ),
    (
        {"llmd": {"enabled": True, "prefill": {}, "scheduler": {"enabled": False}}},
        "llmd.scheduler.enabled",
        "silent decode-only fallback",
        "enable llmd.scheduler",
    ),
    (
        {"llmd": {"enabled": True, "route_group": ""}, "canary": {"traffic_percent": 10}},
        "llmd.route_group",
        "weight requires group",
        "defaults to the service name",
    ),
    (
        {"llmd": {"enabled": True, "route_group": "g", "http_route_refs": ["r"], "gateway_refs": ["gw"]}},
        "llmd.route_group",
        "group requires weight",
        "remove llmd.route_group",
    ),
    (
        {"llmd": {"enabled": True, "http_route_refs": ["r"], "gateway_refs": ["gw"]}, "canary": {"steps": [50, 100]}},
        "llmd.http_route_refs",
        "needs the managed Gateway API route",
        "remove llmd.http_route_refs",
    ),
    (
        {"llmd": {"enabled": True, "http_route_refs": ["r"]}},
        "llmd.http_route_refs",
        "managed gateway",
        "llmd.gateway_refs",
    ),
    (
        {"platform": "kserve", "llmd": {"enabled": True}, "model": {"uri": "file:///models/m"}},
        "model.uri",
        "llm-d's storage initializer cannot load file://",
        "pvc://",
    ),
    (
        {"platform": "kserve", "llmd": {"enabled": True, "decode": {"gpus": 0}, "prefill": {"gpus": 0}}},
        "llmd.decode.gpus",
        "both prefill and decode would run on zero GPUs",
        "at least 1 GPU",
    ),
    (
        {"platform": "kserve", "llmd": {"enabled": True, "prefill": {"gpus": 0}}},
        "llmd.prefill.gpus",
        "prefill role would run on zero GPUs",
        "at least 1",
    ),
    (
        {"llmd": {"enabled": True, "decode": {"replicas": 2, "scaling": {"max_replicas": 4}}}},
        "llmd.decode.scaling",
        "mutually exclusive",
        "not both",
    ),
    (
        {"llmd": {"enabled": True, "prefill": {"scaling": {"min_replicas": 5, "max_replicas": 2}}}},
        "llmd.prefill.scaling.min_replicas",
        "above max_replicas",
        "<= max_replicas",
    ),
    (
        {"llmd": {"enabled": True, "decode": {"tensor": 8, "nodes": 2}}},
        "llmd.decode.nodes",
        "worker requires data or pipeline parallelism",
        "data_local",
    ),
    (
        {"llmd": {"enabled": True, "decode": {"data": 4, "nodes": 2}}},
        "llmd.decode.data_local",
        "must be set together",
        "ranks per pod",
    ),
    (
        {"llmd": {"enabled": True, "decode": {"data": 4, "data_local": 2, "pipeline": 2, "nodes": 2}}},
        "llmd.decode.pipeline",
        "cannot be combined",
        "remove",
    ),
    (
        {"llmd": {"enabled": True, "decode": {"data": 8, "data_local": 2, "nodes": 2}}},
        "llmd.decode.nodes",
        "spans 4 pods",
        "nodes to 4",
    ),
    (
        {"llmd": {"enabled": True, "scheduler": {"profile": "pd"}}},
        "llmd.scheduler.profile",
        "no prefill role",
        "set llmd.prefill",
    ),
    (
        {
            "llmd": {"enabled": True, "prefill": {}, "scheduler": {"profile": "pd", "pd_threshold_tokens": 256}},
            "validation": {"expect_disaggregation": True, "load": {"input_words": 64}},
        },
        "validation.load.input_words",
        "is 84 tokens as llm-d estimates them (characters / 4), under llmd.scheduler.pd_threshold_tokens (256)",
        "input_words to about 196 or more",
    ),
    (
        {"llmd": {"enabled": True, "scheduler": {"profile": "prefix-cache", "pd_threshold_tokens": 64}}},
        "llmd.scheduler.pd_threshold_tokens",
        "only profile 'pd' reads it",
        "profile to 'pd'",
    ),
    (
        {"llmd": {"enabled": True, "prefill": {}, "scheduler": {"profile": "prefix-cache"}}},
        "llmd.scheduler.profile",
        "no request would ever be sent to the prefill pods",
        "profile 'default'",
    ),
    # Secrets are referenced (runtime.secret_env), never written inline into the manifests.
    (
        {"runtime": {"extra_args": ["--api-key=sk-inline"]}},
        "runtime.extra_args[0]",
        "--api-key is set by the spec field 'runtime.secret_env.VLLM_API_KEY'",
        "runtime.secret_env.VLLM_API_KEY",
    ),
    ({"runtime": {"env": {"HF_TOKEN": "hf_inline"}}}, "runtime.env.HF_TOKEN", "looks like a secret", "secret_env"),
    (
        {"runtime": {"env": {"VLLM_API_KEY": "x"}, "secret_env": {"VLLM_API_KEY": {"name": "s", "key": "k"}}}},
        "runtime.env.VLLM_API_KEY",
        "looks like a secret",
        "runtime.secret_env.VLLM_API_KEY",
    ),
    # SLO expressions are parsed with the spec, before anything is deployed.
    (
        {"validation": {"slo": {"checks": ["p95_ttft_ms <= 100ms"]}}},
        "validation.slo.checks[0]",
        "unexpected text after the number",
        "leave units out",
    ),
    (
        {"validation": {"slo": {"checks": ["error_rate == 0", "p95_ttft_ms => 100"]}}},
        "validation.slo.checks[1]",
        "not a comparison operator",
        "<=",
    ),
    (
        {"validation": {"recovery": {"checks": ["p95_ttfx_ms <= 100"]}}},
        "validation.recovery.checks[0]",
        "unknown metric 'p95_ttfx_ms'",
        "p95_ttft_ms",
    ),
]


@pytest.mark.parametrize(("doc", "field", "problem", "fix"), BAD_INPUTS, ids=[b[1] + ":" + b[2] for b in BAD_INPUTS])
def test_bad_input_names_field_and_fix(doc, field, problem, fix):
    with pytest.raises(SpecError) as info:
        parse_spec(doc)
    err = info.value
    assert err.field == field
    assert problem in err.problem, err
    assert fix in err.fix, err
    assert str(err).startswith(f"{field}: ")


def test_load_spec_reports_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match="not a mapping"):
        load_spec(lst)


def test_load_spec_merges_overrides(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: svc\nruntime:\n  max_model_len: 256\n")
    spec = load_spec(path, {"runtime": {"kv_cache_dtype": "auto"}})
    assert (spec.name, spec.runtime.max_model_len, spec.runtime.kv_cache_dtype) == ("svc", 256, "auto")


@pytest.mark.parametrize(
    "raw",
    ["lean-rag-inference", "My_Model.v2", "a" * 200, "Llama-3.1-8B-Instruct-W8A8-" + "x" * 50],
)
def test_names_are_dns_safe_deterministic_and_short(raw):
    name = dns_name(raw)
    assert is_dns_label(name, MAX_NAME_LEN)
    assert dns_name(raw) == name


def test_truncated_names_stay_distinct():
    a, b = dns_name("m" * 60 + "-one"), dns_name("m" * 60 + "-two")
    assert a != b and len(a) == len(b) == MAX_NAME_LEN


def test_member_names_are_stable_and_within_the_cap():
    name = member_name("x" * 40, "s3://bucket/model@sha256:abc")
    assert name == member_name("x" * 40, "s3://bucket/model@sha256:abc")
    assert is_dns_label(name, MAX_NAME_LEN)
    assert name != member_name("x" * 40, "s3://bucket/other")


def test_old_baseline_fields_map_to_recovery_with_a_deprecation_warning(caplog):
    with caplog.at_level("WARNING", logger="llm_rollout.spec"):
        spec = parse_spec(
            {
                "validation": {
                    "baseline_url": "http://base:8000",
                    "baseline_model": "orig",
                    "min_token_agreement": 0.8,
                    "slo": {"baseline_checks": ["output_throughput_ratio_vs_baseline >= 1.5"]},
                }
            }
        )
    recovery = spec.validation.recovery
    assert (recovery.base_url, recovery.base_model, recovery.min_token_agreement) == ("http://base:8000", "orig", 0.8)
    assert recovery.checks == ["output_throughput_ratio_vs_baseline >= 1.5"]
    text = caplog.text
    for old, new in [
        ("validation.baseline_url", "validation.recovery.base_url"),
        ("validation.min_token_agreement", "validation.recovery.min_token_agreement"),
        ("validation.slo.baseline_checks", "validation.recovery.checks"),
    ]:
        assert f"{old} is deprecated: it is now {new}" in text


def test_an_old_and_a_new_name_for_one_field_are_refused():
    with pytest.raises(SpecError) as caught:
        parse_spec({"validation": {"baseline_url": "http://a", "recovery": {"base_url": "http://b"}}})
    assert "validation.recovery.base_url is set together with its deprecated old name" in str(caught.value)


def test_comparison_statistic_must_be_one_we_compute():
    with pytest.raises(SpecError) as caught:
        parse_spec({"validation": {"comparison": {"ttft_statistic": "max"}}})
    assert "validation.comparison.ttft_statistic" in str(caught.value)


def test_the_suggested_prompt_length_reaches_the_pd_threshold():
    """The fix named by the input_words refusal is enough: those prompts pass the same check."""
    doc = {
        "llmd": {"enabled": True, "prefill": {}, "scheduler": {"profile": "pd", "pd_threshold_tokens": 256}},
        "validation": {"expect_disaggregation": True, "load": {"input_words": 64}},
    }
    with pytest.raises(SpecError) as info:
        parse_spec(doc)
    words = int(info.value.fix.split("about ", 1)[1].split(" ", 1)[0])
    doc["validation"]["load"]["input_words"] = words
    assert parse_spec(doc).validation.load.input_words == words
