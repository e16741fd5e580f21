"""What one comparison round measures (llm_rollout.validation.compare), from request records.

The records are built as the load client writes them; expected values are literals.
"""

from __future__ import annotations

import pytest

from llm_rollout.spec import ComparisonSpec
from llm_rollout.validation.compare import MIN_TOKEN_GAP_S, _Rounds, compare_with_stable, judge_speed
from llm_rollout.validation.metrics import RequestRecord


def record(ttft: float, gap: float, tokens: int = 5) -> RequestRecord:
    """A successful stream: first token after ``ttft`` s, then ``tokens - 1`` gaps of ``gap`` s."""
    return RequestRecord(
        success=True, ttft=ttft, latency=ttft + gap * (tokens - 1), itl=[gap] * (tokens - 1), output_tokens=tokens
    )


def test_a_round_gives_median_ttft_token_weighted_tpot_and_the_median_requests_throughput():
    rounds = _Rounds()
    rounds.add([record(0.010, 0.002), record(0.020, 0.002), record(0.030, 0.004)], ComparisonSpec(concurrency=4))
    assert rounds.ttft == [pytest.approx(20.0)]
    assert rounds.tpot == [pytest.approx(1000 * (0.008 + 0.008 + 0.016) / 12)]
    # Median of tokens / latency: 5/0.018, 5/0.028, 5/0.046 -> 5/0.028, times 4 streams.
    assert rounds.throughput == [pytest.approx(4 * 5 / 0.028)]


def test_streams_that_arrived_in_one_piece_give_no_tpot_instead_of_zero():
    burst = MIN_TOKEN_GAP_S / 10  # parse time between events of one read
    rounds = _Rounds()
    rounds.add([record(0.05, burst), record(0.05, burst), record(0.01, 0.002)], ComparisonSpec())
    assert rounds.tpot == [None]  # 1 of 3 streamed: not this round's TPOT
    rounds.add([record(0.05, burst), record(0.01, 0.002), record(0.01, 0.004)], ComparisonSpec())
    assert rounds.tpot[1] == pytest.approx(1000 * (0.008 + 0.016) / 8)  # the two streamed ones


def test_tpot_is_unmeasured_when_most_blocks_had_none_and_the_rest_still_decides():
    spec = ComparisonSpec()
    cand, stable = _Rounds(), _Rounds()
    burst = MIN_TOKEN_GAP_S / 10
    for _ in range(2 * spec.min_blocks):  # two rounds per side and block
        for side in (cand, stable):
            side.add([record(0.02, burst)] * 4, spec)
    ttft, tpot, throughput = judge_speed(cand, stable, spec, 0.9833)
    assert tpot.decision == "inconclusive" and not tpot.measured and tpot.word == "unmeasured"
    assert f"0/{spec.min_blocks} blocks had token gaps" in tpot.note
    assert ttft.decision == "pass" and throughput.decision == "pass" and ttft.word == "not worse"


def _answers_side_by_side():
    """Recovery kept, comparison inferior, SLO met: the three phases' answers."""
    from llm_rollout.validation.compare import StableComparison
    from llm_rollout.validation.slo import CheckResult
    from llm_rollout.validation.stats import Comparison
    from llm_rollout.validation.summary import comparison_answer, recovery_answer, slo_answer

    ratio = CheckResult("c4", "output_throughput_ratio_vs_baseline >= 2", "output_throughput_ratio_vs_baseline", 2.4,
                        "pass")  # fmt: skip
    comparison = StableComparison(
        stable_url="http://stable", blocks=6, failures=["comparison: median_ttft_ms: worse: ..."],
        quality={"candidate_passed": 5, "stable_passed": 5, "total": 5},
        speed=[
            Comparison("median_ttft_ms", "lower", 0.2, 0.98333, 3.1, 2.5, 3.9, "fail", 6),
            Comparison("mean_tpot_ms", "lower", 0.2, 0.98333, None, None, None, "inconclusive", 0,
                       note="only 0/6 blocks had token gaps", measured=False),
        ],
    )  # fmt: skip
    return [
        recovery_answer("http://base", agreement=0.95, min_token_agreement=0.9, ratio_checks=[ratio]),
        comparison_answer(comparison),
        slo_answer([CheckResult("c4", "error_rate == 0", "error_rate", 0, "pass")], [], "pass"),
    ]


def test_the_gate_questions_stand_side_by_side_in_the_metrics_and_the_report():
    """Recovery kept, comparison inferior, SLO met: each answered with its own evidence."""
    from llm_rollout.validation.report import render_html
    from llm_rollout.validation.summary import kfp_metrics

    answers = {a.key: a for a in _answers_side_by_side()}
    assert [answers[k].said for k in ("recovery", "comparison", "slo")] == ["kept", "inferior", "met"]
    assert [answers[k].decision for k in ("recovery", "comparison", "slo")] == ["pass", "fail", "pass"]
    assert answers["recovery"].lines[0] == "greedy token agreement 0.950 (needed >= 0.9)"
    assert answers["comparison"].lines[1] == (
        "median_ttft_ms: candidate/stable 3.100 [2.500, 3.900] at 98.33%, needed <= 1.200: worse"
    )
    assert answers["comparison"].lines[2] == "mean_tpot_ms: unmeasured (only 0/6 blocks had token gaps)"
    result = {
        "verdict": "fail", "endpoint": {"url": "http://c", "model": "m"},
        "answers": [a.to_dict() for a in answers.values()],
    }  # fmt: skip
    metrics = kfp_metrics(result)
    assert (metrics["recovery_ok"], metrics["comparison_ok"], metrics["slo_ok"]) == (1.0, 0.0, 1.0)
    assert metrics["vs_stable_median_ttft_ms_low"] == 2.5 and metrics["vs_stable_blocks"] == 6
    assert metrics["c4_output_throughput_ratio_vs_baseline"] == 2.4 and metrics["token_agreement_ratio"] == 0.95
    assert "vs_stable_mean_tpot_ms_ratio" not in metrics, "an unmeasured ratio is never a number"
    page = render_html(result)
    assert page.index("Did compression keep the model?") < page.index("Is it at least as good as what serves now?")
    assert "[2.500, 3.900]" in page


def test_the_summary_first_names_the_question_that_failed():
    from llm_rollout.validation.answers import Verdict
    from llm_rollout.validation.result import ValidationResult

    gate = Verdict(_answers_side_by_side()[1:])
    result = ValidationResult(
        verdict=gate.decision, reasons=gate.reasons, metrics={}, report_paths={}, url="http://c", model="m", gate=gate
    )
    assert result.summary.splitlines() == [
        "fail: comparison with the stable revision: inferior (slo: met)",
        "comparison: median_ttft_ms: worse: ...",
    ]


def test_a_wrong_answer_is_named_as_the_failed_question_not_as_validation():
    """A scrambled model: the suite failed (no comparison was run), the SLO met."""
    from llm_rollout.validation.answers import Verdict
    from llm_rollout.validation.probes import ProbeResult
    from llm_rollout.validation.result import ValidationResult
    from llm_rollout.validation.slo import CheckResult
    from llm_rollout.validation.summary import correctness_answer, kfp_metrics, slo_answer

    probes = [
        ProbeResult(
            name="probes.json[0]", source="probes.json", passed=False, failures=["exact: expected 'a', got 'b'"]
        ),
        ProbeResult(name="probes.json[1]", source="probes.json", passed=True),
    ]
    gate = Verdict([
        correctness_answer(probes, reasons=["correctness: probes.json[0] failed (exact)"]),
        slo_answer([CheckResult("c2", "error_rate == 0", "error_rate", 0, "pass")], [], "pass"),
    ])  # fmt: skip
    result = ValidationResult(
        verdict=gate.decision, reasons=gate.reasons, metrics={}, report_paths={}, url="http://c", model="m", gate=gate
    )
    assert result.summary.splitlines()[0] == "fail: correctness suite: failed (slo: met)"
    correctness = result.questions[0]
    assert correctness.lines == [
        "1/2 probes passed", "probes.json[0] failed (exact)",
        "scored probes: 1/2 right (needed 1 of them, suite_min_score)",
    ]  # fmt: skip
    assert kfp_metrics({"answers": [correctness.to_dict()]})["correctness_ok"] == 0.0


def test_one_server_reached_as_both_sides_is_never_compared_with_itself():
    """Both addresses mapped to one server: inconclusive with the fix, before any request is sent."""
    import asyncio

    import httpx

    from llm_rollout.validation.client import Endpoint

    async def compare():
        # Port 9 (discard) on loopback: any request would fail with a connection error, not this reason.
        async with httpx.AsyncClient() as client:
            same = Endpoint("http://127.0.0.1:9/v1", "tiny")
            return await compare_with_stable(
                ComparisonSpec(), candidate=(client, same), stable=(client, Endpoint("http://127.0.0.1:9", "tiny")),
                candidate_suite=[], probes=[], smoke=False, chat=False, prompts=["p"], api="completions",
                output_tokens=8, readiness_timeout_s=1, max_duration_s=1, log=lambda _line: None,
            )  # fmt: skip

    out = asyncio.run(compare())
    assert out.decision == "inconclusive" and out.blocks == 0 and not out.quality
    assert "both reached at http://127.0.0.1:9" in out.inconclusive[0]
    assert "LLM_ROLLOUT_ADDRESS_MAP" in out.inconclusive[0]
