"""Pure parts of validation: suite files, expectations, Prometheus parsing, the report, the command line."""

import json
import re

import pytest

from llm_rollout.errors import SpecError
from llm_rollout.validation.cli import build_parser, spec_from_args, validate_command
from llm_rollout.validation.client import Endpoint, build_payload, resolve_api_key
from llm_rollout.validation.load import level_label, make_prompts
from llm_rollout.validation.probes import Probe, ProbeResult, compare_tokens, evaluate, load_suite, parse_probe
from llm_rollout.validation.prom import parse_prometheus, reduce, server_view
from llm_rollout.validation.report import render_html
from llm_rollout.validation.slo import CheckResult
from llm_rollout.validation.summary import correctness_answer, kfp_metrics, slo_answer

# Suites and expectations ------------------------------------------------------------------------


def test_tiny_model_probes_format_loads_as_exact_probes(tmp_path):
    path = tmp_path / "probes.json"
    path.write_text(
        json.dumps([{"prompt": "The capital of France is", "expected": " Paris.", "max_tokens": 6, "margin": 9.8}])
    )
    [probe] = load_suite(path)
    assert probe.exact == " Paris."
    assert probe.max_tokens == 6
    assert probe.name == "probes.json[0]", "names never carry prompt text (logs stay free of it)"


def test_yaml_suite_with_every_expectation(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(
        """
probes:
  - name: json
    prompt: '{"status":'
    max_tokens: 8
    json: false
    contains: ok
    regex: '^\\s*"'
    finish_reason: [stop, length]
    non_empty: true
  - prompt: hi
    chat: true
    exact: hello
"""
    )
    first, second = load_suite(path)
    assert first.contains == ["ok"] and first.finish_reason == ["stop", "length"] and first.non_empty
    assert second.chat and second.exact == "hello" and second.max_tokens == 32


@pytest.mark.parametrize(
    ("item", "field", "problem"),
    [
        ({"exact": "x"}, "s[0].prompt", "missing"),
        ({"prompt": "p"}, "s[0]", "no expectation"),
        ({"prompt": "p", "exact": "x", "bogus": 1}, "s[0].bogus", "unknown probe key"),
        ({"prompt": "p", "regex": "("}, "s[0].regex", "not a valid regular expression"),
        ({"prompt": "p", "exact": 3}, "s[0].exact", "must be a string"),
        ({"prompt": "p", "exact": "x", "max_tokens": 0}, "s[0].max_tokens", "positive integer"),
        ({"prompt": "p", "finish_reason": "eos"}, "s[0].finish_reason", "unknown finish reason"),
        ({"prompt": "p", "json": "yes"}, "s[0].json", "true or false"),
        ({"prompt": "p", "exact": "a", "expected": "a"}, "s[0].expected", "both exact and expected"),
        ("just a string", "s[0]", "must be a mapping"),
    ],
)
def test_bad_probes_are_refused_with_field_and_fix(item, field, problem):
    with pytest.raises(SpecError) as info:
        parse_probe(item, "s[0]", "s")
    assert info.value.field == field
    assert problem in str(info.value)
    assert "Fix:" in str(info.value)


def test_bad_suite_files(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        load_suite(tmp_path / "missing.yaml")
    (tmp_path / "empty.yaml").write_text("[]")
    with pytest.raises(SpecError, match="holds no list of probes"):
        load_suite(tmp_path / "empty.yaml")
    (tmp_path / "bad.yaml").write_text("- prompt: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML/JSON"):
        load_suite(tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    ("probe", "text", "reason", "kinds"),
    [
        (Probe("p", "x", exact=" Paris."), " Paris.", "stop", []),
        (Probe("p", "x", exact=" Paris."), " Paris", "stop", ["exact"]),
        (Probe("p", "x", contains=["a", "b"]), "xax", "stop", ["contains"]),
        (Probe("p", "x", regex=r"^\d+$"), "12a", "stop", ["regex"]),
        (Probe("p", "x", json=True), ' {"a": 1} ', "stop", []),
        (Probe("p", "x", json=True), '{"a": ', "length", ["json"]),
        (Probe("p", "x", finish_reason=["stop"]), "a", "length", ["finish_reason"]),
        (Probe("p", "x", non_empty=True), "  ", "stop", ["non_empty"]),
    ],
)
def test_expectations(probe, text, reason, kinds):
    failures = evaluate(probe, text, reason)
    assert sorted({f.split(":", 1)[0] for f in failures}) == kinds


def test_token_comparison_is_positionwise():
    assert compare_tokens(["a", "b", "c"], ["a", "b", "c"]) == (3, 3, None)
    assert compare_tokens(["a", "x", "c"], ["a", "b", "c"]) == (2, 3, 1)
    assert compare_tokens(["a", "b"], ["a", "b", "c", "d"]) == (2, 4, 2)
    assert compare_tokens([], []) == (0, 0, None)


# Client pieces ----------------------------------------------------------------------------------


def test_endpoint_normalises_the_url_and_hides_the_key():
    ep = Endpoint("http://h:8000/v1/", "m", api_key="sk-very-secret")
    assert ep.url("/v1/models") == "http://h:8000/v1/models"
    assert "sk-very-secret" not in repr(ep)
    assert (
        Endpoint("https://gw/serving/ns/svc", "m").url("/v1/completions") == "https://gw/serving/ns/svc/v1/completions"
    )


def test_api_key_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-1")
    assert resolve_api_key("MY_KEY") == "sk-1"
    secret = tmp_path / "key"
    secret.write_text("sk-2\n")
    assert resolve_api_key(None, str(secret)) == "sk-2"
    assert resolve_api_key() is None
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(SpecError, match="MY_KEY is not set"):
        resolve_api_key("MY_KEY")
    secret.write_text("  ")
    with pytest.raises(SpecError, match="is empty"):
        resolve_api_key(None, str(secret))


def test_payloads_are_greedy_streamed_with_usage():
    body = build_payload("completions", "m", "hello", 16)
    assert body == {
        "model": "m",
        "max_tokens": 16,
        "temperature": 0,
        "prompt": "hello",
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    chat = build_payload("chat", "m", "hello", 4, stream=False, ignore_eos=False)
    assert chat["messages"] == [{"role": "user", "content": "hello"}] and "stream" not in chat


def test_prompts_are_distinct_seeded_and_sized():
    prompts = make_prompts(50, 16, seed=1)
    assert len(set(prompts)) == 50
    assert prompts == make_prompts(50, 16, seed=1)
    assert all(len(p.split()) == 16 for p in prompts)
    assert level_label(10, None) == "c10" and level_label(None, 2.5) == "rate2_5"


# Prometheus -------------------------------------------------------------------------------------

V1_BEFORE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 0.0
vllm:num_requests_waiting{engine="0",model_name="tiny"} 0.0
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.0
vllm:num_preemptions_total{engine="0",model_name="tiny"} 0.0
vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} 10.0
vllm:prefix_cache_queries_total{engine="0",model_name="tiny"} 100.0
vllm:prefix_cache_hits_created{engine="0",model_name="tiny"} 1.7e9
vllm:prompt_tokens_total{engine="0",model_name="tiny"} 24.0
vllm:generation_tokens_total{engine="0",model_name="tiny"} 8.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="tiny"} 1.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="tiny"} 2.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="tiny"} 0.3
vllm:time_to_first_token_seconds_count{engine="0",model_name="tiny"} 3.0
"""


def v1_after_load() -> str:
    """V1_BEFORE after 100 prompt tokens, 50 prefix-cache hits in 100 queries and 10 requests."""
    return (
        V1_BEFORE.replace('"tiny"} 24.0', '"tiny"} 124.0')
        .replace(
            'prefix_cache_hits_total{engine="0",model_name="tiny"} 10.0',
            'prefix_cache_hits_total{engine="0",model_name="tiny"} 60.0',
        )
        .replace(
            'prefix_cache_queries_total{engine="0",model_name="tiny"} 100.0',
            'prefix_cache_queries_total{engine="0",model_name="tiny"} 200.0',
        )
        .replace('finished_reason="length",model_name="tiny"} 2.0', 'finished_reason="length",model_name="tiny"} 12.0')
        .replace('seconds_sum{engine="0",model_name="tiny"} 0.3', 'seconds_sum{engine="0",model_name="tiny"} 1.3')
        .replace('seconds_count{engine="0",model_name="tiny"} 3.0', 'seconds_count{engine="0",model_name="tiny"} 13.0')
    )


def test_v1_names_are_read_and_deltas_taken():
    before = reduce(parse_prometheus(V1_BEFORE))
    after = reduce(parse_prometheus(v1_after_load()))
    view = server_view(before, after, {"kv_cache_usage_ratio": 0.4})
    assert view["prompt_tokens"] == 100.0
    assert view["prefix_cache_hit_ratio"] == pytest.approx(0.5)
    assert view["requests_finished_by_reason"] == {"length": 10.0}
    assert view["server_ttft_mean_ms"] == pytest.approx(100.0)
    assert view["kv_cache_usage_ratio_peak"] == 0.4
    assert view["metric_names"]["kv_cache_usage_ratio"] == "vllm:kv_cache_usage_perc"


def test_older_metric_names_are_aliases():
    old = """\
vllm:gpu_cache_usage_perc{model_name="m"} 0.25
vllm:gpu_prefix_cache_hits_total{model_name="m"} 5
vllm:gpu_prefix_cache_queries_total{model_name="m"} 10
vllm:num_preemptions_total{model_name="m"} 2
"""
    snap = reduce(parse_prometheus(old))
    assert snap.values["kv_cache_usage_ratio"] == 0.25
    assert snap.names["prefix_cache_hits_tokens"] == "vllm:gpu_prefix_cache_hits_total"
    assert snap.values["prefix_cache_queries_tokens"] == 10


def test_series_are_summed_over_engines():
    text = 'vllm:num_requests_running{engine="0"} 3\nvllm:num_requests_running{engine="1"} 4\ngarbage line\n'
    assert reduce(parse_prometheus(text)).values["requests_running"] == 7


# Report -----------------------------------------------------------------------------------------

EVIL = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'


def result_with_text(text: str) -> dict:
    metrics = {"successful_requests": 3, "p95_ttft_ms": 12.5, "output_throughput_tok_s": 100.0, "error_rate": 0.0}
    return {
        "verdict": "fail",
        "reasons": [f"c1: {EVIL}"],
        "endpoint": {"url": "http://h", "model": EVIL},
        "phases": [{"name": "load", "status": "ok", "seconds": 1.0, "detail": EVIL}],
        "correctness": [{"name": "p", "source": EVIL, "passed": False, "failures": [EVIL], "text": text}],
        "levels": [
            {
                "label": "c1",
                "judged": True,
                "metrics": metrics,
                "errors": {f"HTTP 500: {EVIL}": 2},
                "ttft_ms": [1.0, 2.0],
            }
        ],
        "judgement": {
            "results": [
                {
                    "level": "c1",
                    "check": "p95_ttft_ms <= 10",
                    "metric": "p95_ttft_ms",
                    "measured": 12.5,
                    "status": "fail",
                }
            ]
        },
        "server": {EVIL: {"prompt_tokens": 3.0, "errors": [EVIL]}},
        # The gate's answers (what the report's questions and the Metrics' judged numbers come from).
        "answers": [
            correctness_answer([ProbeResult(name=EVIL, source=EVIL, passed=False, failures=[EVIL])]).to_dict(),
            slo_answer(
                [CheckResult("c1", "p95_ttft_ms <= 10", "p95_ttft_ms", 12.5, "fail")], [f"c1: {EVIL}"], "fail"
            ).to_dict(),
        ],
    }


def test_report_escapes_every_outside_text_and_forbids_scripts():
    page = render_html(result_with_text(EVIL))
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert "&lt;script&gt;" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "no external resource"


def test_kfp_metrics_are_flat_numbers_with_units():
    m = kfp_metrics(result_with_text("x"))
    assert m["verdict_pass"] == 0.0
    assert m["c1_p95_ttft_ms"] == 12.5
    assert m["correctness_total"] == 1.0
    assert all(isinstance(v, float) for v in m.values())


def test_server_metrics_carry_one_server_prefix():
    """The run summary's key metrics come from these names: ``server_<name>``, never ``server_server_<name>``."""
    before = reduce(parse_prometheus(V1_BEFORE))
    after = reduce(parse_prometheus(v1_after_load()))
    view = server_view(before, after)
    single = kfp_metrics({**result_with_text("x"), "server": {"server": view}})
    assert single["server_prefix_cache_hit_ratio"] == pytest.approx(0.5)
    assert single["server_ttft_mean_ms"] == pytest.approx(100.0)
    roles = kfp_metrics({**result_with_text("x"), "server": {"prefill": view, "decode": view}})
    assert roles["server_decode_ttft_mean_ms"] == roles["server_prefill_ttft_mean_ms"] == pytest.approx(100.0)
    assert roles["server_decode_prefix_cache_hit_ratio"] == pytest.approx(0.5)
    for metrics in (single, roles):
        doubled = [k for k in metrics if k.count("server_") > 1]
        assert not doubled, doubled


# Command line -----------------------------------------------------------------------------------


def test_flags_override_the_spec_file(tmp_path):
    spec_file = tmp_path / "v.yaml"
    spec_file.write_text("load:\n  num_prompts: 7\nslo:\n  checks: ['error_rate == 0']\n")
    args = build_parser().parse_args(
        ["--url", "http://h", "--model", "m", "--spec", str(spec_file), "--concurrency", "1,2", "--insecure"]
    )
    spec = spec_from_args(args)
    assert spec.load.num_prompts == 7 and spec.load.concurrency == [1, 2]
    assert spec.slo.checks == ["error_rate == 0"]
    assert spec.tls_verify is False


def test_baseline_checks_are_recovery_checks(tmp_path):
    args = build_parser().parse_args(
        ["--url", "http://h", "--model", "m", "--baseline-check", "output_throughput_ratio_vs_baseline >= 1.5"]
    )
    assert spec_from_args(args).recovery.checks == ["output_throughput_ratio_vs_baseline >= 1.5"]
    stable = build_parser().parse_args(["--url", "http://h", "--model", "m", "--stable-url", "http://s"])
    assert (stable.stable_url, stable.stable_model) == ("http://s", None)


def test_usage_errors_exit_2(tmp_path, capsys):
    assert validate_command(["--model", "m"]) == 2
    assert validate_command(["--url", "http://h", "--model", "m", "--concurrency", "0"]) == 2
    assert validate_command(["--url", "http://127.0.0.1:9", "--model", "m", "--check", "p95_ttft <= 1"]) == 2
    err = capsys.readouterr().err
    assert "did you mean p95_ttft_ms" in err and "^^^^^^^^" in err
    (tmp_path / "v.yaml").write_text("load:\n  concurency: [1]\n")
    assert validate_command(["--url", "http://h", "--model", "m", "--spec", str(tmp_path / "v.yaml")]) == 2
    assert "validation.load.concurency" in capsys.readouterr().err
    assert validate_command(["--help"]) == 0
