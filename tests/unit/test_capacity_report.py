"""The report's capacity section: latency against load with the SLO line and capacity point; sizing; metrics."""

from __future__ import annotations

import re

from llm_rollout.validation.charts import line_chart
from llm_rollout.validation.report import capacity_section, render_html
from llm_rollout.validation.sizing import SizingInput, size
from llm_rollout.validation.slo import CapacityResult, RateCapacityResult
from llm_rollout.validation.summary import capacity_answer, kfp_metrics, sizing_answer

EVIL = "<script>alert(1)</script>"


def lv(label, concurrency, rate, ttft, purpose="load"):
    metrics = {"successful_requests": 20, "p95_ttft_ms": ttft, "request_throughput_req_s": 3.0, "error_rate": 0.0}
    return {
        "label": label,
        "concurrency": concurrency,
        "request_rate": rate,
        "judged": False,
        "purpose": purpose,
        "metrics": metrics,
        "errors": {},
        "ttft_ms": [],
    }


def result(**more):
    data = {
        "verdict": "pass",
        "endpoint": {"url": "http://h", "model": "m"},
        "levels": [
            lv("c1", 1, None, 20.0),
            lv("c2", 2, None, 60.0, "capacity"),
            lv("c2", 2, None, 80.0, "capacity"),
            lv("c4", 4, None, 300.0, "capacity"),
            lv("rate2", None, 2.0, 30.0, "capacity"),
            lv("rate4", None, 4.0, 500.0, "capacity"),
        ],
        "capacity": {
            "max_concurrency": 2,
            "low": 2,
            "high": 3,
            "bounded": False,
            "settled": True,
            "tried": {1: "pass", 4: "fail", 2: "pass", 3: "inconclusive"},
        },
        "rate_capacity": {"max_request_rate": 2.0, "low": 2.0, "high": 3.0, "step": 1.0, "tried": {2.0: "pass"}},
        "sizing": size(SizingInput(9, 2, 1), 2.0, low=2.0, high=3.0, source="open loop").to_dict(),
        "workload": {"description": f"custom ({EVIL}): 28 requests"},
        "spec": {"slo": {"checks": ["p95_ttft_ms <= 100", "error_rate == 0", "output_throughput_tok_s >= 5"]}},
    }
    # The capacity searches' and the sizing's answers (the Metrics' capacity and sizing numbers come from them).
    data["answers"] = [
        capacity_answer(CapacityResult(2, low=2, high=3), RateCapacityResult(2.0, low=2.0, high=3.0)).to_dict(),
        sizing_answer(size(SizingInput(9, 2, 1), 2.0, low=2.0, high=3.0, source="open loop")).to_dict(),
    ]
    data.update(more)
    return data


def test_curves_carry_the_slo_line_and_the_capacity_point():
    html = "\n".join(capacity_section(result()))
    charts = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    titles = [re.search(r'aria-label="([^"]+)"', c).group(1) for c in charts]
    assert titles == ["p95_ttft_ms against concurrency", "p95_ttft_ms against request rate (req/s)"], (
        "one chart per judged latency/throughput metric that was measured, per kind of load; error checks have none"
    )
    by_conc = charts[0]
    assert by_conc.count('class="hline"') == 1 and ">SLO &lt;= 100<" in by_conc
    assert by_conc.count('class="vline"') == 1 and ">capacity 2<" in by_conc
    assert ">capacity 2 req/s<" in charts[1]
    # Repeats at one concurrency are one point (their mean): 3 points for c1, c2 (x2), c4.
    assert by_conc.count("<circle") == 3
    assert "<script" not in html and "&lt;script&gt;" in html


def test_the_slo_line_sits_at_its_threshold():
    svg = line_chart("t", ["1", "2"], {"y": [50.0, 150.0]}, x_values=[1.0, 2.0], hlines={"SLO": 100.0})
    ys = [float(y) for y in re.findall(r'<circle cx="[\d.]+" cy="([\d.]+)"', svg)]
    line_y = float(re.search(r'class="hline"[^>]*y1="([\d.]+)"', svg).group(1))
    assert ys[0] > line_y > ys[1] and abs((ys[0] + ys[1]) / 2 - line_y) < 0.2


def test_sizing_table_and_its_failure():
    ok = "\n".join(capacity_section(result()))
    assert 'id="sizing"' in ok and "replicas needed" in ok
    assert re.search(r"<td>replicas needed</td><td class=\"n\">5</td>", ok)
    assert re.search(r"<td>replicas the interval allows</td><td class=\"n\">3 .. 5</td>", ok)
    assert "scaling.max_replicas" in ok and '<span class="fail">fail</span>' in ok
    assert "Fix: raise scaling.max_replicas to 5" in ok
    page = render_html(result())
    assert '<p class="muted" id="workload">Load: custom (&lt;script&gt;' in page
    assert 'id="capacity"' in page and "within [2, 3]" in page and "within [2, 3] (steps of 1 req/s)" in page


def test_no_capacity_no_section():
    assert capacity_section(result(capacity=None, rate_capacity=None, sizing=None)) == []


def test_metrics_gain_the_capacity_interval_and_the_sizing():
    m = kfp_metrics(result())
    assert m["capacity_max_concurrency"] == 2.0
    assert (m["capacity_max_concurrency_low"], m["capacity_max_concurrency_high"]) == (2.0, 3.0)
    assert m["capacity_max_request_rate_req_s"] == 2.0 and m["capacity_max_request_rate_high_req_s"] == 3.0
    assert m["sizing_replicas_needed"] == 5.0 and m["sizing_gpus_needed"] == 5.0
    assert m["sizing_capacity_per_replica_req_s"] == 2.0 and m["sizing_expected_peak_req_s"] == 9.0
    assert m["sizing_fits"] == 0.0
