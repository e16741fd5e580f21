"""The scheduled retrain-and-redeploy loop on the local platform, with a new user's spec.

The default validation spec with no correctness suite, only the absolute SLO relaxed to CPU
figures and the tiny model's reference texts: the tiny model is promoted and keeps serving; a
scrambled copy is rolled back for its quality (likelihood of the tiny model's corpus); a
retrained copy (same size and speed, 5 % weight noise) is promoted over it; a first rollout of
the scrambled copy is refused by the floor of uniform guessing. No recovery base is served: the
stable is the model being replaced, never a "baseline" to agree with.

The loop with a correctness suite (a retrained copy promoted, a scrambled one rolled back for
its answers and quality, a deeper, slower one rolled back by the comparison with the stable
revision with its evidence, a rerun already promoted) is ``make demo``'s story with the
comparison's default settings: tests/e2e/test_local_pipeline.py asserts it on the demo's runs
(one run of those five pipelines serves both).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from kfp_llm_rollout.pipelines.run_local import run_local
from llm_rollout.local.platform import LocalPlatform
from llm_rollout.local.session import cleanup
from llm_rollout.spec import parse_spec
from llm_rollout.steplog import read_run_log
from tests.fixtures.serving import in_background, tiny_quality

pytestmark = [pytest.mark.e2e, pytest.mark.serving, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]


def status_of(state):
    return LocalPlatform(parse_spec({"platform": "local", "local": {"state_dir": str(state)}})).status()


def test_default_gate_without_a_suite_rolls_back_a_scrambled_model_for_quality(
    tmp_path, tiny_model, scrambled_model, retrained_model, vllm_python, monkeypatch
):
    """A new user's spec (no correctness suite, only a CPU-sized SLO and the model's reference texts).

    The tiny model is promoted, the scrambled copy is rolled back for quality (its smoke checks
    all pass) at the first look without any speed measured, and the 5 %-noise retrained copy is
    promoted over the tiny model (quality not worse); a first rollout of the scrambled copy is
    refused by the floor of uniform guessing.

    That first rollout has a state directory of its own, so it runs beside the first two runs, as
    ``llm-rollout run-local`` (one run per process: a run sets the process' environment and
    kfp.local's configuration); nothing it decides depends on timing (likelihoods, an SLO of 3 s),
    and it has ended before run 3 measures speed against the stable.
    """
    state, fresh = tmp_path / "state", tmp_path / "fresh-state"
    monkeypatch.setenv("LLM_ROLLOUT_STATE_DIR", str(state))

    def doc_for(state_dir):
        return {
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

    def spec_for(state_dir):
        return parse_spec(doc_for(state_dir))

    def run(model, label, state_dir=state):
        # --keep-serving: the promoted model keeps serving between runs, as in production.
        return run_local(
            pipeline="llm-deploy", model=str(model), spec=spec_for(state_dir), out_dir=tmp_path / label,
            keep_serving=True,
        )  # fmt: skip

    spec_file, first_out = tmp_path / "fresh-spec.json", tmp_path / "4-first-scrambled"
    spec_file.write_text(json.dumps(doc_for(fresh)))
    argv = [sys.executable, "-m", "kfp_llm_rollout.pipelines.cli", "run-local", "--model", str(scrambled_model)]
    argv += ["--spec", str(spec_file), "--out", str(first_out), "--keep-serving"]
    env = {**os.environ, "LLM_ROLLOUT_STATE_DIR": str(fresh)}
    try:
        with in_background(argv, log_path=tmp_path / "4-first-scrambled.log", timeout=900, cwd=ROOT, env=env) as first:
            assert run(tiny_model, "1-tiny").outcome == "promoted"
            scrambled = run(scrambled_model, "2-scrambled")
        assert scrambled.outcome == "rolled back", scrambled.steps
        validate = scrambled.step("validate-deployment")
        assert validate["summary"].splitlines()[0].startswith("fail: quality of the reference texts: "), validate
        results = json.loads(Path(validate["results"]).read_text())
        assert results["quality"]["looks"] == 1 and results["quality"]["comparison"]["decision"] == "fail"
        assert results["comparison"] is None, "decided by quality, whatever speed would say"
        assert results["correctness"] and all(p["passed"] for p in results["correctness"])
        assert status_of(state).stable.model_uri == str(tiny_model)

        retrained = run(retrained_model, "3-retrained")
        assert retrained.outcome == "promoted", retrained.step("validate-deployment")
        results = json.loads(Path(retrained.step("validate-deployment")["results"]).read_text())
        assert results["quality"]["comparison"]["decision"] == "pass", results["quality"]
        assert status_of(state).stable.model_uri == str(retrained_model)
    finally:
        cleanup(state)
        cleanup(fresh)
    # Run 4: the first rollout of the scrambled copy (exit 3: rolled back).
    assert first.returncode == 3, (tmp_path / "4-first-scrambled.log").read_text()[-5000:]
    [summary] = [s["summary"] for s in read_run_log(first_out / "steps.jsonl") if s["step"] == "validate-deployment"]
    assert "quality of the reference texts: worse than guessing" in summary.splitlines()[0], summary
    assert "worse than uniform guessing" in summary
    assert status_of(fresh).stable is None
