"""Workloads: the JSONL request file (the shipped sample and every refusal), and the shapes of ``vllm bench serve``."""

from __future__ import annotations

import json
import math
import random

import pytest

from llm_rollout.errors import SpecError
from llm_rollout.spec import LoadSpec, parse_spec
from llm_rollout.validation.load import make_prompts
from llm_rollout.validation.workload import (
    SAMPLES,
    build_workload,
    generated_workload,
    load_file,
    prefix_repetition_workload,
    random_workload,
    sample_range,
)


def write(tmp_path, *lines: str):
    path = tmp_path / "w.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_the_shipped_sample_is_small_timed_and_mixes_prompts_and_chats():
    path = SAMPLES["support-rag"]
    assert path.stat().st_size < 32 * 1024, "the sample ships in the repo: keep it small"
    w = load_file("sample:support-rag")
    assert 20 <= len(w.requests) <= 64
    assert w.timed and w.trace_rate is not None and w.trace_rate > 0
    kinds = {r.api("completions") for r in w.requests}
    assert kinds == {"completions", "chat"}, "prompts go to load.endpoint, conversations to chat"
    stamps = [r.timestamp for r in w.requests]
    assert stamps == sorted(stamps)
    offsets = w.arrivals()
    assert offsets[0] == 0 and offsets[-1] == pytest.approx(w.span_s)
    # Rescaled to twice the recorded rate, the trace takes half the time, in the same order.
    fast = w.arrivals(2 * w.trace_rate)
    assert fast[-1] == pytest.approx(w.span_s / 2)
    assert [b / a for a, b in zip(offsets[1:], fast[1:], strict=True) if a] == pytest.approx(
        [0.5] * sum(1 for a in offsets[1:] if a)
    )


def test_a_line_becomes_the_request_vllm_would_get(tmp_path):
    w = load_file(
        write(
            tmp_path,
            json.dumps({"prompt": "Hello", "max_tokens": 5}),
            json.dumps({"messages": [{"role": "user", "content": "Hi"}], "output_tokens": 7}),
        )
    )
    assert not w.timed and w.trace_rate is None
    first, second = w.requests
    body = first.payload("completions", "m")
    assert body["prompt"] == "Hello" and body["max_tokens"] == 5 and body["stream"] is True
    assert first.payload("chat", "m")["messages"] == [{"role": "user", "content": "Hello"}]
    chat = second.payload("completions", "m")
    assert second.api("completions") == "chat"
    assert chat["messages"] == [{"role": "user", "content": "Hi"}] and chat["max_tokens"] == 7
    assert "prompt" not in chat


def test_timestamps_scale_and_sort(tmp_path):
    w = load_file(
        write(
            tmp_path,
            json.dumps({"prompt": "b", "max_tokens": 1, "timestamp": 2000}),
            json.dumps({"prompt": "a", "max_tokens": 1, "timestamp": 500}),
        ),
        time_scale=0.001,
    )
    assert [r.prompt for r in w.requests] == ["a", "b"]
    assert [r.timestamp for r in w.requests] == [0.5, 2.0]
    assert w.arrivals() == [0.0, 1.5]


@pytest.mark.parametrize(
    ("lines", "where", "fix"),
    [
        (['{"prompt": "a", "max_tokens": 4', ""], "line 1", "one JSON object per line"),
        (['{"prompt": "a", "max_tokens": 4}', "[1, 2]"], "line 2", "one JSON object per line"),
        (['{"prompt": "a"}'], "line 1", "max_tokens: 64"),
        (['{"prompt": "a", "max_tokens": 0}'], "line 1): max_tokens", "e.g. 64"),
        (['{"prompt": "a", "max_tokens": "64"}'], "line 1): max_tokens", "e.g. 64"),
        (['{"max_tokens": 4}'], "line 1", "exactly one of prompt"),
        (['{"prompt": "a", "messages": [], "max_tokens": 4}'], "line 1", "exactly one of prompt"),
        (['{"prompt": "", "max_tokens": 4}'], "line 1): prompt", "JSON string"),
        (['{"messages": [{"role": "robot", "content": "x"}], "max_tokens": 4}'], "line 1): messages[0]", "role"),
        (['{"messages": "hello", "max_tokens": 4}'], "line 1): messages", '"role": "user"'),
        (['{"prompt": "a", "max_tokens": 4, "temperature": 1}'], "line 1): temperature", "timestamp"),
        (['{"prompt": "a", "max_tokens": 4, "timestamp": -1}'], "line 1): timestamp", "seconds"),
        (['{"prompt": "a", "max_tokens": 4, "timestamp": true}'], "line 1): timestamp", "seconds"),
        (['{"prompt": "a", "max_tokens": 4, "output_tokens": 4}'], "line 1", "keep max_tokens"),
        (
            ['{"prompt": "a", "max_tokens": 4, "timestamp": 0}', "", '{"prompt": "b", "max_tokens": 4}'],
            "request 2 lacks a timestamp",
            "every line a timestamp",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_the_line_field_and_fix(tmp_path, lines, where, fix):
    path = write(tmp_path, *lines)
    with pytest.raises(SpecError) as err:
        load_file(path)
    text = str(err.value)
    assert text.startswith("validation.load.workload.path"), text
    assert where in text and fix in text and "Fix:" in text, text


def test_unreadable_empty_and_oversized_files_are_refused(tmp_path):
    with pytest.raises(SpecError, match=r"workload.path: cannot read .*missing.jsonl.*check the path"):
        load_file(str(tmp_path / "missing.jsonl"))
    with pytest.raises(SpecError, match=r"holds no request"):
        load_file(write(tmp_path, "", "  "))
    with pytest.raises(SpecError, match=r"more than 2 requests.*sample fewer"):
        load_file(write(tmp_path, *[json.dumps({"prompt": "a", "max_tokens": 1})] * 3), max_requests=2)
    with pytest.raises(SpecError, match=r"no shipped sample 'nope'.*support-rag"):
        load_file("sample:nope")
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"prompt": "caf\xe9", "max_tokens": 1}\n')
    with pytest.raises(SpecError, match=r"not UTF-8"):
        load_file(str(bad))


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.9])
def test_sample_range_is_vllms_interval(ratio):
    # vllm/benchmarks/datasets/utils.py get_sampling_params: [floor(n(1-r)), ceil(n(1+r))], output >= 1.
    rng = random.Random(3)
    drawn = [sample_range(rng, 40, ratio, minimum=1) for _ in range(2000)]
    assert min(drawn) == max(1, math.floor(40 * (1 - ratio)))
    assert max(drawn) == math.ceil(40 * (1 + ratio))
    assert min(sample_range(rng, 1, 0.9, minimum=1) for _ in range(200)) == 1


def test_random_shape_lengths_and_prefix():
    w = random_workload(200, input_len=20, output_len=10, range_ratio=0.5, prefix_len=6)
    words = [len(r.prompt.split()) - 6 for r in w.requests]
    outs = [r.max_tokens for r in w.requests]
    assert min(words) >= 10 and max(words) <= 30 and len(set(words)) > 5
    assert min(outs) >= 5 and max(outs) <= 15 and len(set(outs)) > 3
    prefixes = {" ".join(r.prompt.split()[:6]) for r in w.requests}
    assert len(prefixes) == 1, "one fixed prefix in front of every prompt"
    assert len({r.prompt for r in w.requests}) == 200
    assert random_workload(3, input_len=5, output_len=2) == random_workload(3, input_len=5, output_len=2), "seeded"


def test_prefix_repetition_shape_and_upstreams_refusal():
    w = prefix_repetition_workload(23, prefix_len=12, suffix_len=5, num_prefixes=5, output_len=8)
    assert len(w.requests) == 20, "num_requests // num_prefixes per prefix, as upstream"
    heads = [r.prompt.split("\n")[0] for r in w.requests]
    assert len(set(heads)) == 5 and all(heads.count(h) == 4 for h in set(heads))
    assert all(len(h.split()) == 12 for h in heads)
    assert all(r.max_tokens == 8 for r in w.requests)
    with pytest.raises(SpecError, match=r"workload.num_prefixes: 5 prefixes need .*num_prompts is 3"):
        prefix_repetition_workload(3, prefix_len=4, suffix_len=2, num_prefixes=5, output_len=8)


def test_without_a_workload_the_generated_prompts_are_unchanged():
    load = LoadSpec(num_prompts=7, input_words=9, output_tokens=11, shared_prefix_words=4)
    w = build_workload(load)
    shared = make_prompts(1, 4, seed=1)[0].split(" ", 1)[-1]
    assert [r.prompt for r in w.requests] == [f"{shared} {p}" for p in make_prompts(7, 9)]
    assert {r.max_tokens for r in w.requests} == {11}
    assert w.name == "generated" and not w.timed
    assert generated_workload(LoadSpec(num_prompts=2)).requests[0].prompt == make_prompts(2, 64)[0]


def test_spec_fields_of_the_workload():
    def load(workload, **more):
        return parse_spec({"validation": {"load": {"workload": workload, **more}}}).validation.load

    w = build_workload(load({"dataset": "random", "input_len": 8, "output_len": 3}, num_prompts=5))
    assert w.name == "random" and len(w.requests) == 5
    w = build_workload(load({"dataset": "prefix_repetition", "num_prefixes": 2}, num_prompts=6, input_words=10))
    assert len(w.requests) == 6 and len({r.prompt.split("\n")[0] for r in w.requests}) == 2
    assert build_workload(load({"dataset": "custom", "path": "sample:support-rag"})).timed
    for bad, field in (
        ({"dataset": "custom"}, "validation.load.workload.path"),
        ({"dataset": "random", "path": "x.jsonl"}, "validation.load.workload.path"),
        ({"dataset": "custom", "path": "x", "input_len": 3}, "validation.load.workload.input_len"),
        ({"dataset": "prefix_repetition", "range_ratio": 0.2}, "validation.load.workload.range_ratio"),
        ({"dataset": "random", "range_ratio": 1.0}, "validation.load.workload.range_ratio"),
        ({"dataset": "sharegpt"}, "validation.load.workload.dataset"),
    ):
        with pytest.raises(SpecError) as err:
            load(bad)
        assert err.value.field == field, err.value
    # A dumped spec (every field, as the steps pass it on as JSON) parses back to the same.
    for workload in ({"dataset": "custom", "path": "x.jsonl"}, {"dataset": "random", "range_ratio": 0.3}):
        spec = parse_spec({"validation": {"load": {"workload": workload}}})
        assert parse_spec(json.loads(spec.model_dump_json())) == spec
    with pytest.raises(SpecError) as err:
        load({"dataset": "random"}, shared_prefix_words=8)
    assert err.value.field == "validation.load.shared_prefix_words" and "prefix_repetition" in err.value.fix


def test_validate_refuses_a_bad_workload_before_any_request(tmp_path):
    from llm_rollout.validation import validate

    def spec(path, **slo):
        doc = {"load": {"workload": {"dataset": "custom", "path": path}}, "slo": slo}
        return parse_spec({"validation": doc}).validation

    lines: list[str] = []
    bad = write(tmp_path, json.dumps({"prompt": "a", "max_tokens": 2}), '{"prompt": 3, "max_tokens": 2}')
    # Port 9 (discard) on loopback: nothing answers there, and nothing may be tried before the check.
    with pytest.raises(SpecError, match=r"line 2\): prompt"):
        validate(spec(bad), "http://127.0.0.1:9", "m", log=lines.append)
    assert lines == []
    flat = tmp_path / "flat.jsonl"
    flat.write_text("".join(json.dumps({"prompt": "a", "max_tokens": 2, "timestamp": 0}) + "\n" for _ in range(3)))
    with pytest.raises(SpecError) as err:
        validate(spec(str(flat), capacity_max_request_rate=5), "http://127.0.0.1:9", "m", log=lines.append)
    assert err.value.field == "validation.slo.capacity_max_request_rate" and lines == []
