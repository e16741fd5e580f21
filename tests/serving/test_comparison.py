"""The comparison with the stable revision against real vLLM servers (validation.comparison).

Two scenarios of the retrain-and-redeploy loop, each candidate served beside the tiny model as
the stable revision: a retrained copy (the same size and speed, 5 % weight noise) must never be
called worse, and a deeper copy (the same answers, 30 extra no-op layers, several times slower)
must be caught. The first is held at 99.9 % confidence, so a false "worse" from a noisy shared
machine is a 1-in-1000 event per metric, not a flaky test; the speed figures themselves live in
``make bench``.
"""

from __future__ import annotations

import pytest

from llm_rollout.validation import validate
from tests.fixtures.serving import start_vllm
from tests.serving.test_validation import small_spec

pytestmark = [pytest.mark.serving, pytest.mark.timeout(600)]


def test_a_retrained_model_is_never_called_worse_than_the_stable(retrained_model, vllm_server, tmp_path):
    with start_vllm(retrained_model, "tiny-retrained", log_path=tmp_path / "vllm.log") as server:
        result = validate(
            small_spec(comparison={"confidence": 0.999, "max_blocks": 12}),
            server.base_url,
            "tiny-retrained",
            stable_url=vllm_server.base_url,
            stable_model="tiny",
            report_dir=tmp_path / "report",
        )
    comparison = result.comparison
    assert comparison is not None and comparison.stable_url == vllm_server.base_url
    assert comparison.quality["ok"] and comparison.quality["total"] == comparison.quality["stable_passed"]
    assert comparison.blocks >= 6 and comparison.rounds == 2 * comparison.blocks and comparison.speed
    assert all(c.decision in ("not_worse", "undecided", "unmeasured") for c in comparison.speed), [
        c.describe() for c in comparison.speed
    ]
    assert not comparison.failures
    # No recovery question here: the stable is another model, never a "baseline" to agree with.
    assert result.agreement is None and not result.baseline_levels
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Against the stable revision" in html
    assert "vs_stable_not_worse" in result.metrics


def test_a_slower_model_fails_the_comparison_with_the_evidence(deep_model, vllm_server, tmp_path):
    with start_vllm(deep_model, "tiny-deep", log_path=tmp_path / "vllm.log") as server:
        result = validate(
            small_spec(slo={"checks": ["error_rate == 0"]}),  # only the comparison may judge speed here
            server.base_url,
            "tiny-deep",
            stable_url=vllm_server.base_url,
            stable_model="tiny",
        )
    assert result.verdict == "fail", result.reasons
    worse = [c for c in result.comparison.speed if c.decision == "worse"]
    assert worse, [c.describe() for c in result.comparison.speed]
    reason = next(r for r in result.reasons if r.startswith("comparison: "))
    assert "worse: candidate/stable" in reason and "confidence" in reason and "blocks" in reason
    # The deeper model answers exactly like the tiny one: only speed failed.
    assert all(p.passed for p in result.correctness)
