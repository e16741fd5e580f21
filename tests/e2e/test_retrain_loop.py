"""The scheduled retrain-and-redeploy loop on the local platform, as a user runs it.

The default validation spec with only the absolute SLO relaxed to CPU figures: the tiny model is
promoted and keeps serving; a retrained copy (same size and speed, 5 % weight noise) is promoted
over it; a scrambled copy is rolled back for its answers and its quality (likelihood of the tiny model's
corpus); a deeper copy (the same answers,
about twice as slow) is rolled back for its speed by the comparison with the stable revision
(its answers all pass: only speed failed); a rerun with the promoted model is "already promoted".
No recovery base is served: the stable is the model being replaced, never a "baseline" to agree
with. This is also the comparison's test against real servers (a retrained copy never called
worse, a slower one caught with the evidence), on the user's path rather than beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm_rollout.local.platform import LocalPlatform
from llm_rollout.local.session import cleanup
from llm_rollout.spec import parse_spec
from pipelines.run_local import run_local
from tests.fixtures.serving import tiny_quality

pytestmark = [pytest.mark.e2e, pytest.mark.serving, pytest.mark.timeout(1500)]


def status_of(state):
    return LocalPlatform(parse_spec({"platform": "local", "local": {"state_dir": str(state)}})).status()


def loop_spec(state, probes) -> object:
    return parse_spec(
        {
            "name": "tiny-loop",
            "platform": "local",
            "runtime": {"max_model_len": 256},
            "local": {"state_dir": str(state)},
            "validation": {
                "suite_file": str(probes),
                # The serving design's GPU SLO made CPU-sized; everything else is the default.
                "slo": {"checks": ["p95_ttft_ms <= 3000", "error_rate == 0"], "judge_concurrency": [10]},
                "load": {"concurrency": [1, 10], "num_prompts": 30, "output_tokens": 16, "input_words": 16},
                "quality": tiny_quality(),
            },
        }
    )


def test_retrain_loop_promotes_a_good_model_and_rolls_back_bad_and_slow_ones(
    tmp_path, tiny_model, retrained_model, scrambled_model, deep_model, vllm_python, monkeypatch
):
    state = tmp_path / "state"
    monkeypatch.setenv("LLM_ROLLOUT_STATE_DIR", str(state))
    spec = loop_spec(state, tiny_model / "probes.json")

    def run(model, label):
        return run_local(
            pipeline="llm-deploy", model=str(model), spec=spec, out_dir=tmp_path / label, keep_serving=True
        )

    try:
        first = run(tiny_model, "1-first")
        assert first.outcome == "promoted", first.steps

        retrained = run(retrained_model, "2-retrained")
        assert retrained.outcome == "promoted", retrained.step("validate-deployment")
        validate = retrained.step("validate-deployment")
        assert validate["stable"] and validate["recovery_base"] is None
        assert "token agreement" not in validate["summary"]
        # The comparison decided (not skipped): the suite scored alike on both, every speed metric
        # not worse, on blocks of candidate/stable rounds; the report and the Metrics carry it.
        results = json.loads(Path(validate["results"]).read_text())
        comparison = results["comparison"]
        assert comparison["stable_url"] == validate["stable"] and comparison["decision"] == "not_worse", comparison
        assert comparison["quality"]["ok"] and comparison["quality"]["stable_passed"] == comparison["quality"]["total"]
        assert comparison["blocks"] >= 6 and comparison["rounds"] == 2 * comparison["blocks"]
        assert {c["metric"]: c["decision"] for c in comparison["speed"]} == {
            "median_ttft_ms": "not_worse", "mean_tpot_ms": "not_worse", "output_throughput_tok_s": "not_worse",
        }  # fmt: skip
        # No recovery question: the stable is another model, never a "baseline" to agree with.
        assert results["agreement"] is None and not results["baseline_levels"]
        assert results["metrics"]["vs_stable_not_worse"] == 1.0
        assert "Against the stable revision" in Path(validate["report"]).read_text()
        promoted = status_of(state).stable
        assert promoted is not None and promoted.model_uri == str(retrained_model)

        scrambled = run(scrambled_model, "3-scrambled")
        assert scrambled.outcome == "rolled back", scrambled.steps
        summary = scrambled.step("validate-deployment")["summary"]
        assert "correctness" in summary and "quality of the reference texts: " in summary, summary

        deep = run(deep_model, "4-deep")
        assert deep.outcome == "rolled back", deep.steps
        summary = deep.step("validate-deployment")["summary"]
        assert "comparison: " in summary and "worse: candidate/stable" in summary, summary
        assert "confidence" in summary and "blocks" in summary, summary
        deep_results = json.loads(Path(deep.step("validate-deployment")["results"]).read_text())
        # The deeper copy answers exactly like the tiny one: only its speed failed.
        assert all(p["passed"] for p in deep_results["correctness"]), deep_results["correctness"]
        assert "worse" in {c["decision"] for c in deep_results["comparison"]["speed"]}
        assert status_of(state).stable.member == promoted.member

        again = run(retrained_model, "5-rerun")
        assert again.outcome == "already promoted", again.steps
        history = [h.action for h in status_of(state).history]
        assert history.count("promote") == 2, history
    finally:
        cleanup(state)


def test_default_gate_without_a_suite_rolls_back_a_scrambled_model_for_quality(
    tmp_path, tiny_model, scrambled_model, retrained_model, vllm_python, monkeypatch
):
    """A new user's spec (no correctness suite, only a CPU-sized SLO and the model's reference texts).

    The tiny model is promoted, the scrambled copy is rolled back for quality (its smoke checks
    all pass) at the first look without any speed measured, and the 5 %-noise retrained copy is
    promoted over the tiny model (quality not worse); a first rollout of the scrambled copy is
    refused by the floor of uniform guessing.
    """
    state = tmp_path / "state"
    monkeypatch.setenv("LLM_ROLLOUT_STATE_DIR", str(state))

    def spec_for(state_dir):
        return parse_spec(
            {
                "name": "tiny-quality",
                "platform": "local",
                "runtime": {"max_model_len": 256},
                "local": {"state_dir": str(state_dir)},
                "validation": {
                    "slo": {"checks": ["p95_ttft_ms <= 3000", "error_rate == 0"], "judge_concurrency": [4]},
                    "load": {"concurrency": [4], "num_prompts": 16, "output_tokens": 8, "input_words": 8},
                    "quality": tiny_quality(),
                },
            }
        )

    def run(model, label, state_dir=state):
        # --keep-serving: the promoted model keeps serving between runs, as in production.
        return run_local(
            pipeline="llm-deploy", model=str(model), spec=spec_for(state_dir), out_dir=tmp_path / label,
            keep_serving=True,
        )  # fmt: skip

    try:
        assert run(tiny_model, "1-tiny").outcome == "promoted"
        scrambled = run(scrambled_model, "2-scrambled")
        assert scrambled.outcome == "rolled back", scrambled.steps
        validate = scrambled.step("validate-deployment")
        assert validate["summary"].splitlines()[0].startswith("fail: quality of the reference texts: "), validate
        results = json.loads(Path(validate["results"]).read_text())
        assert results["quality"]["looks"] == 1 and results["quality"]["comparison"]["decision"] == "worse"
        assert results["comparison"] is None, "decided by quality, whatever speed would say"
        assert results["correctness"] and all(p["passed"] for p in results["correctness"])
        assert status_of(state).stable.model_uri == str(tiny_model)

        retrained = run(retrained_model, "3-retrained")
        assert retrained.outcome == "promoted", retrained.step("validate-deployment")
        results = json.loads(Path(retrained.step("validate-deployment")["results"]).read_text())
        assert results["quality"]["comparison"]["decision"] == "not_worse", results["quality"]
        assert status_of(state).stable.model_uri == str(retrained_model)
    finally:
        cleanup(state)
    fresh = tmp_path / "fresh-state"
    monkeypatch.setenv("LLM_ROLLOUT_STATE_DIR", str(fresh))
    try:
        first = run(scrambled_model, "4-first-scrambled", fresh)
        assert first.outcome == "rolled back", first.steps
        summary = first.step("validate-deployment")["summary"]
        assert "quality of the reference texts: worse than guessing" in summary.splitlines()[0], summary
        assert "worse than uniform guessing" in summary
        assert status_of(fresh).stable is None
    finally:
        cleanup(fresh)
