"""The gate's one typed answer (issue 29): the verdict is the worst answer, and the summary, the KFP
Metrics and the HTML report are rendered from the answers; an unmeasured metric is never a number."""

from __future__ import annotations

import re

import pytest

from llm_rollout.validation.answers import Answer, Evidence, Verdict, worst
from llm_rollout.validation.compare import StableComparison
from llm_rollout.validation.metrics import MIN_TOKEN_GAP_S, RequestRecord, calculate_metrics, unmeasured_series
from llm_rollout.validation.report import render_html
from llm_rollout.validation.result import LevelResult, ValidationResult
from llm_rollout.validation.slo import CheckResult, judge, parse_checks
from llm_rollout.validation.stats import Comparison
from llm_rollout.validation.summary import comparison_answer, kfp_metrics, slo_answer


def test_the_verdict_is_the_worst_answer_and_keeps_every_answer():
    assert worst(["pass", "inconclusive", "pass"]) == "inconclusive"
    assert worst(["inconclusive", "fail", "pass"]) == "fail"
    assert worst([]) == "inconclusive", "nothing shown to pass is not a pass"
    with pytest.raises(ValueError, match="not a gate decision"):
        worst(["not_worse"])
    with pytest.raises(ValueError, match="not a gate decision"):
        Answer("slo", "met")  # type: ignore[arg-type]
    gate = Verdict([
        Answer("quality", "inconclusive", reasons=["inconclusive: 3 texts, 8 needed"]),
        Answer("comparison", "fail", reasons=["comparison: median_ttft_ms: worse"]),
        Answer("slo", "pass"),
    ])  # fmt: skip
    assert gate.decision == "fail"
    assert gate.reasons == ["comparison: median_ttft_ms: worse", "inconclusive: 3 texts, 8 needed"], (
        "failures first, the inconclusive notes after them"
    )
    # A later phase completes an answer where it stands (the comparison pairs the suite's probes).
    gate.add(Answer("quality", "pass"))
    assert [a.key for a in gate.answers] == ["quality", "comparison", "slo"] and gate.decision == "fail"
    assert Verdict.from_answers([a.to_dict() for a in gate.answers]).to_dict() == gate.to_dict()


def test_evidence_names_its_metrics_and_an_unmeasured_value_names_none():
    e = Evidence("x", 1.5, low=1.2, high=1.9, metric="vs_x_ratio", metric_low="vs_x_low", metric_high="vs_x_high")
    assert e.metrics() == {"vs_x_ratio": 1.5, "vs_x_low": 1.2, "vs_x_high": 1.9}
    gone = Evidence("x", None, unmeasured="the streams arrived in one piece", metric="vs_x_ratio")
    assert gone.metrics() == {} and not gone.measured and "unmeasured" in str(gone)


def _gate(ttft_ratio: float, decision: str) -> ValidationResult:
    """A result whose comparison measured ``ttft_ratio`` [ratio - 0.2, ratio + 0.2] (the rest fixed)."""
    failures = [f"comparison: median_ttft_ms: worse: {ttft_ratio:.3f}"] if decision == "fail" else []
    comparison = StableComparison(
        stable_url="http://stable", blocks=6, failures=failures,
        speed=[Comparison("median_ttft_ms", "lower", 0.2, 0.95, ttft_ratio, ttft_ratio - 0.2, ttft_ratio + 0.2,
                          decision, 6)],  # type: ignore[arg-type]
    )  # fmt: skip
    slo = slo_answer([CheckResult("c4", "error_rate == 0", "error_rate", 0, "pass")], [], "pass")
    gate = Verdict([comparison_answer(comparison), slo])
    level = LevelResult("c4", 4, None, True, False, {"successful_requests": 40, "p95_ttft_ms": 20.0})
    result = ValidationResult(
        gate.decision, gate.reasons, {}, {}, "http://c", "m", levels=[level], comparison=comparison, gate=gate
    )
    result.metrics = kfp_metrics(result.to_dict())
    return result


def test_one_phases_evidence_changed_is_seen_in_the_summary_the_metrics_and_the_report():
    """The comparison's TTFT ratio moves from 0.9 (non-inferior) to 3.1 (inferior): all three outputs follow."""
    good, bad = _gate(0.9, "pass"), _gate(3.1, "fail")
    assert good.verdict == "pass" and bad.verdict == "fail"
    assert good.summary == "pass: every check met at c4 (comparison with the stable revision: non-inferior)"
    assert bad.summary.splitlines() == [
        "fail: comparison with the stable revision: inferior (slo: met)",
        "comparison: median_ttft_ms: worse: 3.100",
    ]
    assert (good.metrics["vs_stable_median_ttft_ms_ratio"], good.metrics["comparison_ok"]) == (0.9, 1.0)
    assert (bad.metrics["vs_stable_median_ttft_ms_ratio"], bad.metrics["comparison_ok"]) == (3.1, 0.0)
    assert bad.metrics["vs_stable_median_ttft_ms_high"] == pytest.approx(3.3) and bad.metrics["verdict_pass"] == 0
    good_page, bad_page = render_html(good.to_dict()), render_html(bad.to_dict())
    assert "candidate/stable 0.900 [0.700, 1.100]" in good_page and "non-inferior" in good_page
    assert "candidate/stable 3.100 [2.900, 3.300]" in bad_page and '<span class="fail">inferior</span>' in bad_page
    assert "3.100 [2.900" not in good_page


def _one_piece_records(n: int = 20) -> list[RequestRecord]:
    """Successful 32-token streams whose events all arrived in one read (gaps far under MIN_TOKEN_GAP_S)."""
    burst = MIN_TOKEN_GAP_S / 100
    return [
        RequestRecord(success=True, latency=0.05 + 31 * burst, ttft=0.05, itl=[burst] * 31, prompt_len=8,
                      output_tokens=32, start_time=i * 0.01)
        for i in range(n)
    ]  # fmt: skip


def test_streams_that_arrived_in_one_piece_leave_tpot_and_itl_unmeasured_never_zero():
    records = _one_piece_records()
    why = unmeasured_series(records)
    assert set(why) == {"tpot", "itl"} and "arrived in one piece (0/20 requests had token gaps)" in why["tpot"]
    m = calculate_metrics(records, 1.0)
    assert m["p95_tpot_ms"] is None and m["mean_tpot_ms"] is None and m["p50_itl_ms"] is None
    assert m["p95_ttft_ms"] == pytest.approx(50.0) and m["output_throughput_tok_s"] == 640.0
    # Streamed normally (2 ms a token): measured as before.
    streamed = [RequestRecord(success=True, latency=0.112, ttft=0.05, itl=[0.002] * 31, output_tokens=32)] * 20
    assert unmeasured_series(streamed) == {} and calculate_metrics(streamed, 1.0)["p95_tpot_ms"] == pytest.approx(2.0)


def test_an_slo_check_on_an_unmeasured_metric_is_inconclusive_with_the_reason_and_nowhere_a_number():
    records = _one_piece_records()
    metrics = calculate_metrics(records, 1.0)
    unmeasured = unmeasured_series(records)
    checks = parse_checks(["p95_tpot_ms <= 250", "p95_ttft_ms <= 500"])
    j = judge({"c4": metrics}, checks, min_successful=10, unmeasured={"c4": unmeasured})
    tpot = next(r for r in j.results if r.metric == "p95_tpot_ms")
    assert tpot.status == "inconclusive" and tpot.measured is None and "arrived in one piece" in tpot.note
    assert j.verdict == "inconclusive", "never '0 (pass)'"
    assert any(r.startswith("c4: inconclusive: unmeasured: the streams arrived in one piece") for r in j.reasons)
    answer = slo_answer(j.results, j.reasons, j.verdict)
    assert answer.decision == "inconclusive" and answer.said == "inconclusive"
    assert answer.lines == ["c4: p95_tpot_ms <= 250: unmeasured, " + unmeasured["tpot"] + " (inconclusive)"], (
        "the check's line says unmeasured and why"
    )
    level = LevelResult("c4", 4, None, True, False, metrics, records, unmeasured=unmeasured)
    gate = Verdict([answer])
    result = ValidationResult(
        gate.decision, gate.reasons, {}, {}, "http://c", "m", levels=[level], gate=gate, judgement=j
    )
    data = result.to_dict()
    kfp = kfp_metrics(data)
    assert "c4_p95_tpot_ms" not in kfp and "c4_mean_itl_ms" not in kfp and kfp["c4_p95_ttft_ms"] == 50.0
    assert kfp["slo_ok"] == -1.0
    page = render_html(data)
    rows = dict(re.findall(r"<tr><td>((?:mean|p95)_(?:tpot|itl)_ms)</td><td[^>]*>([^<]*)</td>", page))
    assert rows == dict.fromkeys(("mean_tpot_ms", "p95_tpot_ms", "mean_itl_ms", "p95_itl_ms"), "unmeasured")
    assert re.search(r"p95_tpot_ms &lt;= 250</span></td><td[^>]*>unmeasured</td>", page), "the SLO checks table"
    decode = re.search(r'<svg[^>]*aria-label="Decode latency by level".*?</svg>', page, re.S).group(0)
    assert ">unmeasured<" in decode and "<circle" not in decode, "no point drawn at 0"


def test_promotion_receives_the_capacity_typed_not_through_metric_names():
    """validate-deployment's key_metrics carries the Capacity beside the headline; promote-model reads it back."""
    import json

    from llm_rollout.autoscaling import Capacity, Measured, autoscaling_evidence
    from llm_rollout.platform import ValidationConclusion
    from llm_rollout.spec import parse_spec
    from llm_rollout.steps import key_metrics

    capacity = Capacity(request_rate=Measured(value=7.5, low=7.0, high=8.0), per_replica_req_s=6.0)
    verdict = ValidationConclusion(verdict="pass", capacity=capacity, headline={"c4_p95_ttft_ms": 20.0})
    sent = json.loads(json.dumps(key_metrics(verdict)))  # the KFP parameter between the two steps
    assert sent["c4_p95_ttft_ms"] == 20.0 and not any(k.startswith("capacity_max") for k in sent)
    received = Capacity.model_validate(sent.pop("capacity"))
    spec = parse_spec({"platform": "kserve", "scaling": {"target": "auto"},
                       "validation": {"slo": {"capacity_max_request_rate": 20}}})  # fmt: skip
    ev = autoscaling_evidence(spec.scaling, received, "run-1")
    assert (ev["target"], ev["capacity"], ev["low"], ev["high"]) == (6, 7.5, 7.0, 8.0)
    assert autoscaling_evidence(spec.scaling, Capacity(per_replica_req_s=9.0), "r")["target"] == 7
