"""The quality question's parts without a server (llm_rollout.validation.quality).

The server-side behaviour (vLLM's echoed prompt logprobs, its logit_bias check, the tiny models
separated) is tested against real servers in tests/serving/test_quality.py; here: the bits-per-byte
arithmetic on a response shaped like vLLM 0.32's (``OpenAIServingCompletion._create_completion_logprobs``),
where the texts come from, and how the question is shown.
"""

from __future__ import annotations

import json
import math

import pytest

from llm_rollout.errors import SpecError
from llm_rollout.spec import parse_spec
from llm_rollout.validation.probes import ProbeResult
from llm_rollout.validation.quality import SAMPLE_TEXTS, QualityResult, parse_echo, read_texts_file, reference_texts
from llm_rollout.validation.stats import Comparison
from llm_rollout.validation.summary import correctness_answer, kfp_metrics, quality_answer


def echo_response(tokens, logprobs, prompt_tokens):
    return {
        "choices": [{"text": "".join(tokens), "logprobs": {"tokens": tokens, "token_logprobs": logprobs}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1},
    }


def test_bits_per_byte_with_a_bos_scores_every_text_byte():
    # "<s>" has no logprob; "ab" and "cd" cost ln(1/2) and ln(1/4): 1 + 2 bits over 4 bytes.
    # The generated token after the prompt (" x") is not the text's.
    resp = echo_response(["<s>", "ab", "cd", " x"], [None, math.log(0.5), math.log(0.25), -0.1], 3)
    score = parse_echo("abcd", resp)
    assert (score.bytes, score.tokens, score.error) == (4, 2, "")
    assert score.bits == pytest.approx(3.0) and score.bpb == pytest.approx(0.75)


def test_bits_per_byte_without_a_bos_leaves_the_unscored_first_token_out():
    # No BOS: "ab" (2 bytes) has no logprob, so only "cd" (2 bytes, 1 bit) is scored.
    resp = echo_response(["ab", "cd", "!"], [None, math.log(0.5), -1.0], 2)
    score = parse_echo("abcd", resp)
    assert (score.bytes, score.tokens) == (2, 1) and score.bpb == pytest.approx(0.5)


def test_bytes_are_utf8_bytes_not_characters():
    resp = echo_response(["<s>", "é"], [None, math.log(0.5)], 2)
    assert parse_echo("é", resp).bytes == 2


def test_a_response_without_prompt_logprobs_is_an_error_not_a_score():
    assert "no echoed prompt logprobs" in parse_echo("abc", {"choices": [{"text": "abc"}]}).error
    short = parse_echo("a", echo_response(["<s>"], [None], 1))
    assert short.error and short.bpb is None


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def spec_with(**validation):
    return parse_spec({"validation": validation}).validation


def test_texts_come_from_the_spec_file_first(tmp_path):
    texts = write_jsonl(tmp_path / "ref.jsonl", [{"text": f"line {i}"} for i in range(10)])
    spec = spec_with(quality={"texts": str(texts)})
    ref = reference_texts(spec.quality, spec.load)
    assert ref.source == f"validation.quality.texts ({texts})"
    assert sorted(ref.texts) == sorted(f"line {i}" for i in range(10))
    # Shuffled with a fixed seed: every look is a sample, and every run scores the same order.
    assert list(ref.texts) != [f"line {i}" for i in range(10)]
    assert reference_texts(spec.quality, spec.load).texts == ref.texts


def test_too_few_texts_in_the_spec_file_is_refused_with_the_fix(tmp_path):
    texts = write_jsonl(tmp_path / "ref.jsonl", [{"text": "one"}, {"text": "two"}])
    spec = spec_with(quality={"texts": str(texts)})
    with pytest.raises(SpecError) as err:
        reference_texts(spec.quality, spec.load)
    assert err.value.field == "validation.quality.texts" and "min_texts 8" in str(err.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [('{"prompt": "x"}', 'non-empty string "text"'), ("not json", "not JSON"), ('{"text": "  "}', "non-empty")],
)
def test_bad_lines_name_the_line(tmp_path, line, message):
    path = tmp_path / "ref.jsonl"
    path.write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(SpecError) as err:
        read_texts_file(path)
    assert "line 2" in err.value.field and message in str(err.value)


def test_workload_prompts_are_the_texts_when_there_are_enough(tmp_path):
    many = write_jsonl(tmp_path / "w.jsonl", [{"prompt": f"question {i}?", "max_tokens": 8} for i in range(9)])
    spec = spec_with(load={"workload": {"dataset": "custom", "path": str(many)}})
    ref = reference_texts(spec.quality, spec.load)
    assert ref.source == f"workload prompts ({many})" and len(ref.texts) == 9
    few = write_jsonl(tmp_path / "few.jsonl", [{"prompt": "a?", "max_tokens": 8}, {"prompt": "b?", "max_tokens": 8}])
    spec = spec_with(load={"workload": {"dataset": "custom", "path": str(few)}})
    ref = reference_texts(spec.quality, spec.load)
    assert ref.source.startswith("shipped sample") and "2 distinct prompts, fewer than min_texts 8" in ref.note


def test_the_shipped_sample_is_the_default_and_long_texts_are_cut_at_a_word():
    spec = spec_with(quality={"max_text_chars": 40})
    ref = reference_texts(spec.quality, spec.load)
    assert ref.source == f"shipped sample ({SAMPLE_TEXTS.name})" and len(ref.texts) >= 40
    assert all(len(t) <= 40 and not t.endswith(" ") for t in ref.texts)


def test_min_texts_above_max_texts_is_a_spec_error():
    with pytest.raises(SpecError) as err:
        spec_with(quality={"min_texts": 20, "max_texts": 10})
    assert err.value.field == "validation.quality.min_texts"


def quality_result(**overrides):
    fields = {
        "source": "validation.quality.texts (ref.jsonl)", "note": "", "texts_available": 99,
        "rows": [{"index": i} for i in range(8)], "stable_url": "http://stable", "candidate_bpb": 4.5,
        "stable_bpb": 0.42, "uniform_bpb": 3.9, "vocab_size": 640, "vocab_source": "the server's logit_bias check",
        "floor_ok": False,
        "comparison": Comparison(
            metric="bits_per_byte", better="lower", margin=0.05, confidence=0.9875, ratio=4.65, low=0.78, high=6.77,
            decision="fail", pairs=8, unit="texts", scale="difference",
        ),
        "looks": 1, "confidence": 0.9875, "margin": 0.05, "failures": ["quality: ..."], "inconclusive": [],
    }  # fmt: skip
    return QualityResult(**(fields | overrides))


def test_the_quality_question_shows_texts_both_sides_the_interval_and_the_margin():
    q = quality_answer(quality_result())
    assert q.key == "quality" and q.ok is False and q.said == "worse than guessing"
    text = "\n".join(q.lines)
    assert "8 texts scored from validation.quality.texts (ref.jsonl)" in text
    assert "bits per byte: candidate 4.500, stable 0.420" in text
    assert "median +4.6500 [+0.7800, +6.7700] at 98.75%, needed <= +0.0500" in text
    assert "uniform guessing over 640 tokens = 3.900 bits per byte: NOT beaten" in text
    ok = quality_answer(quality_result(floor_ok=True, failures=[]))
    assert ok.said == "non-inferior" and ok.ok is True
    first = quality_answer(quality_result(stable_url=None, comparison=None, stable_bpb=None))
    assert first.said == "worse than guessing" and first.against == "uniform guessing over its vocabulary"


def test_the_quality_question_in_the_metrics():
    metrics = kfp_metrics({"verdict": "fail", "answers": [quality_answer(quality_result()).to_dict()]})
    assert metrics["quality_ok"] == 0.0 and metrics["quality_texts_scored"] == 8.0
    assert metrics["quality_candidate_bits_per_byte"] == 4.5 and metrics["quality_stable_bits_per_byte"] == 0.42
    assert metrics["quality_uniform_bits_per_byte"] == 3.9 and metrics["quality_margin_bits_per_byte"] == 0.05
    assert metrics["quality_difference_median_bits_per_byte"] == 4.65
    assert (metrics["quality_difference_low_bits_per_byte"], metrics["quality_difference_high_bits_per_byte"]) == (
        0.78,
        6.77,
    )


def test_a_jsonl_suite_loads_scored_and_must_pass_probes(tmp_path):
    from llm_rollout.validation.probes import load_suite

    suite = write_jsonl(
        tmp_path / "suite.jsonl",
        [
            {"name": "capital", "prompt": "The capital of France is", "exact": " Paris."},
            {"prompt": "Say JSON:", "json": True, "must_pass": True},
            {"prompt": "Count:", "regex": r"\d", "contains": ["1"]},
        ],
    )
    probes = load_suite(suite)
    assert [p.must_pass for p in probes] == [False, True, False]
    assert probes[0].exact == " Paris." and probes[1].json and probes[2].contains == ["1"]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x", "exact": "y"}\n{"prompt": "z", "must_pass": "yes"}\n')
    with pytest.raises(SpecError) as err:
        load_suite(tmp_path / "bad.jsonl")
    assert err.value.field == "bad.jsonl[1].must_pass"
    (tmp_path / "broken.jsonl").write_text('{"prompt": "x", "exact": "y"}\nnot json\n')
    with pytest.raises(SpecError) as err:
        load_suite(tmp_path / "broken.jsonl")
    assert "line 2" in err.value.field


def test_the_suite_question_pairs_scored_probes_with_the_stable_and_must_pass_fails_alone():
    def probe(name, passed, must_pass=False):
        return ProbeResult(name=name, source="s", passed=passed, failures=[] if passed else ["exact: x"],
                           must_pass=must_pass)  # fmt: skip

    paired = {"p_value": 1 / 64, "ok": False, "candidate_right": 3, "stable_right": 9, "scored": 9,
              "only_stable": 6, "only_candidate": 0, "confidence": 0.95}  # fmt: skip
    probes = [probe("smoke", True, True)] + [probe(f"p{i}", i < 3) for i in range(9)]
    q = correctness_answer(probes, paired=paired, suite_paired=True)
    assert q.said == "failed" and "McNemar's exact p = 0.01562" in q.lines[-1]
    q = correctness_answer(probes, paired=paired | {"ok": True})
    assert q.said == "passed" and q.decision == "pass"
    # A first rollout: the scored share against suite_min_score (default 1: every one).
    q = correctness_answer(probes, suite_min_score=0.3)
    assert q.said == "passed" and "3/9 right (needed 0.3" in q.lines[-1]
    assert correctness_answer(probes).said == "failed"
    # Paired, but the comparison did not run (another question failed first): not judged.
    q = correctness_answer(probes, suite_paired=True)
    assert q.said == "not judged" and q.ok is None and q.decision == "inconclusive"
    # A must-pass failure fails the question whatever the score.
    assert correctness_answer([probe("smoke", False, True), probe("p", True)]).decision == "fail"
