"""promote-model's report of the canary steps' live analyses (validation/analysis_report.py), its
KFP Metrics (analysis_steps.step_metrics) and ``llm-rollout status`` (platform.format_status over
analysis_steps.live_record) all come from the steps' typed answers: one interval's evidence changed
shows in all three.

The step is built by the analysis' own judging code (paired_non_inferiority per metric over the
sub-window units so far, judge_measurement per interval, LiveAnalysis' answer) from the numbers a
Prometheus would have returned; reading Prometheus is tests/unit/test_analysis.py's."""

from __future__ import annotations

import re

from llm_rollout.platform import StableRecord, Status, format_status
from llm_rollout.validation.analysis import AnalysisConfig, LiveAnalysis, Measurement, SideValues, judge_measurement
from llm_rollout.validation.analysis_report import render_steps_html, steps_decision, write_steps_report
from llm_rollout.validation.analysis_steps import StepAnalysis, live_record, step_metrics
from llm_rollout.validation.stats import paired_non_inferiority, per_look_confidence

CONFIG = AnalysisConfig(
    "http://prometheus.monitoring:9090", interval_s=10, count=2, min_requests=3, resolution_s=2.5, margin=0.5,
    compare=("mean_ttft_ms",),
)  # fmt: skip
STABLE_UNITS = [100.0, 104.0, 98.0, 101.0]
"""The stable's mean TTFT (ms) per 2.5 s sub-window of an interval."""


def _step(second_requests: float = 6.0, second_factor: float = 1.0) -> StepAnalysis:
    """Step 1 at 50 %: two intervals; the second one's candidate requests and TTFT (x factor) given."""
    analysis = LiveAnalysis(CONFIG, candidate='pod="chat-v2"', stable='pod="chat-v1"', step=1, weight=50)
    per_look = per_look_confidence(CONFIG.confidence, CONFIG.count)
    cand_units: list[float] = []
    stab_units: list[float] = []
    measurements = []
    for index, (requests, factor) in enumerate(((8.0, 1.02), (second_requests, second_factor)), 1):
        units = [u * factor for u in STABLE_UNITS]
        cand_units += units
        stab_units += STABLE_UNITS
        comp = paired_non_inferiority(
            cand_units, stab_units, metric="mean_ttft_ms", better="lower", margin=CONFIG.margin,
            confidence=per_look, unit="sub-windows", rule="sign",
        )  # fmt: skip
        cand = SideValues(requests=requests, errors=0.0, values={"mean_ttft_ms": sum(units) / 4})
        stab = SideValues(requests=8.0, errors=0.0, values={"mean_ttft_ms": sum(STABLE_UNITS) / 4})
        decision, reasons = judge_measurement(index, cand, stab, {"mean_ttft_ms": comp}, CONFIG)
        ratios: dict[str, float | None] = {"mean_ttft_ms": cand.values["mean_ttft_ms"] / stab.values["mean_ttft_ms"]}  # type: ignore[operator]
        start = 1_700_000_000.0 + 10 * (index - 1)
        measurements.append(
            Measurement(index, start, start + 10, cand, stab, ratios, {"mean_ttft_ms": comp}, decision, reasons)
        )
    worst = "inconclusive" if any(m.decision == "inconclusive" for m in measurements) else "pass"
    result = analysis._result(measurements, worst, [r for m in measurements for r in m.reasons])
    return StepAnalysis(step=1, weight=50, held_s=22.0, attempts=[result], answer=result.answer)


def _interval_row(page: str, index: int) -> str:
    """The text of interval ``index``'s row in the intervals table."""
    table = page[page.index("<h3>Intervals</h3>") :]
    rows = re.findall(r"<tr>(.*?)</tr>", table)
    row = next(r for r in rows if r.startswith(f'<td class="n">{index}</td>'))
    return re.sub(r"<[^>]+>", "|", row)


def _status_lines(step: StepAnalysis) -> str:
    record = StableRecord(member="chat-v2", model_uri="/models/v2", run_id="run-1", **live_record([step]))
    return format_status(Status(platform="local", kind="LocalServer", name="chat", namespace="local", stable=record))


def test_one_intervals_evidence_shows_in_the_report_the_metrics_and_status():
    before, after = _step(), _step(second_requests=2.0, second_factor=1.3)
    pages = [render_steps_html([s.to_dict()], service="chat", member="chat-v2") for s in (before, after)]
    metrics = [step_metrics(s) for s in (before, after)]
    status = [_status_lines(s) for s in (before, after)]

    # The report: interval 2's row carries its requests per side, its ratio and the interval so far.
    row = [_interval_row(p, 2) for p in pages]
    assert "|6|" in row[0] and "|8|" in row[0] and "|pass|" in row[0], row[0]
    assert "|2|" in row[1] and "|inconclusive|" in row[1] and "|1.3|" in row[1], row[1]
    assert _interval_row(pages[0], 1) == _interval_row(pages[1], 1)  # interval 1 is untouched
    assert "PASS" in pages[0] and "INCONCLUSIVE" in pages[1]
    assert "fewer than 3 requests finished (candidate 2)" in pages[1]
    # The KFP Metrics: the step's decision, the requests seen, the ratio and its interval at the last look.
    assert metrics[0]["analysis_step1_ok"] == 1.0 and metrics[1]["analysis_step1_ok"] == -1.0
    requests = [m["analysis_step1_candidate_requests"] for m in metrics]
    assert requests == [14, 10]
    assert metrics[1]["analysis_step1_mean_ttft_ms_ratio"] > metrics[0]["analysis_step1_mean_ttft_ms_ratio"]
    assert metrics[1]["analysis_step1_mean_ttft_ms_ratio_high"] > metrics[0]["analysis_step1_mean_ttft_ms_ratio_high"]
    ratio, low, high = (metrics[1][f"analysis_step1_mean_ttft_ms_ratio{s}"] for s in ("", "_low", "_high"))
    assert f"{ratio:.3f} [{low:.3f}, {high:.3f}]" in pages[1]  # the same interval in the report
    # `llm-rollout status`: the same interval, the same requests per side.
    assert "interval 2: pass: candidate 6 / stable 8 requests" in status[0]
    assert "interval 2: inconclusive: candidate 2 / stable 8 requests" in status[1]
    assert f"so far {ratio:.3f} [{low:.3f}, {high:.3f}]" in status[1]


def test_report_is_self_contained_escaped_and_says_when_no_step_was_analysed(tmp_path):
    step = _step().to_dict()
    step["answer"]["against"] = "<script>alert(1)</script>"
    path = write_steps_report(tmp_path / "out" / "analysis.html", [step], service="chat", member="v2<b>")
    page = path.read_text()
    assert "<script" not in page and "&lt;script&gt;" in page and "v2&lt;b&gt;" in page
    assert "default-src 'none'" in page and not re.search(r"\b(src|href)=", page)  # nothing loaded from outside
    empty = render_steps_html([], service="chat", member="v2", outcome="promoted v2")
    assert "NO STEP ANALYSED" in empty and "No canary step was analysed" in empty and "promoted v2" in empty
    assert steps_decision([]) == "none"
    assert steps_decision([_step().to_dict(), _step(second_requests=1).to_dict()]) == "inconclusive"


def test_run_local_summary_names_the_page_of_a_failed_promotion_too(tmp_path):
    from kfp_llm_rollout.pipelines.run_local import RunSummary, format_summary

    page = str(tmp_path / "promote-model" / "analysis_report")
    promote = {"step": "promote-model", "status": "failed", "error": "promotion of v2 stopped at step 1 (10% traffic)",
               "analysis_report": page, "analysis_decision": "fail"}  # fmt: skip
    summary = RunSummary(pipeline="llm-deploy", outcome="failed", returncode=1, steps=[promote], out_dir=tmp_path,
                         seconds=1.0)  # fmt: skip
    assert f"live analysis report:  {page}" in format_summary(summary)
