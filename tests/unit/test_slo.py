"""SLO checks: strict parsing with a caret under the problem, the verdict rules, the capacity search."""

import asyncio
import random
import subprocess
import sys

import pytest

from llm_rollout.errors import SpecError
from llm_rollout.slo_expr import KNOWN_METRICS, RATIO_METRICS, SLOExpressionError, parse_check, parse_checks
from llm_rollout.spec import parse_spec
from llm_rollout.validation.metrics import RequestRecord, calculate_metrics
from llm_rollout.validation.slo import (
    capacity_search,
    goodput_limits,
    judge,
    judge_level,
    rate_capacity_search,
    rate_ladder,
)

# Parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "metric", "op", "threshold"),
    [
        ("p95_ttft_ms <= 100", "p95_ttft_ms", "<=", 100.0),
        ("p95_ttft_ms<=100", "p95_ttft_ms", "<=", 100.0),
        ("  error_rate == 0  ", "error_rate", "==", 0.0),
        ("output_throughput_tok_s >= 1.5e3", "output_throughput_tok_s", ">=", 1500.0),
        ("goodput_req_s > .5", "goodput_req_s", ">", 0.5),
        ("mean_tpot_ms < 20", "mean_tpot_ms", "<", 20.0),
        ("failed_requests != 3", "failed_requests", "!=", 3.0),
        ("output_throughput_ratio_vs_baseline >= 2", "output_throughput_ratio_vs_baseline", ">=", 2.0),
        ("p95_ttft_ratio_vs_baseline <= 1.1", "p95_ttft_ratio_vs_baseline", "<=", 1.1),
    ],
)
def test_valid_checks_parse(text, metric, op, threshold):
    check = parse_check(text)
    assert (check.metric, check.op, check.threshold) == (metric, op, threshold)
    assert check.baseline == metric.endswith("_ratio_vs_baseline")


def test_check_semantics():
    assert parse_check("p95_ttft_ms <= 100").holds(100.0)
    assert not parse_check("p95_ttft_ms < 100").holds(100.0)
    assert parse_check("error_rate == 0").holds(0.0)
    assert not parse_check("error_rate == 0").holds(0.01)
    assert parse_check("error_rate != 0").holds(0.5)


def caret_column(err: SLOExpressionError) -> int:
    lines = str(err).splitlines()
    pointer = next(line for line in lines if line.strip() and set(line.strip()) == {"^"})
    return len(pointer) - len(pointer.lstrip()) - 4  # the expression is indented by 4


@pytest.mark.parametrize(
    ("text", "column", "problem", "fix"),
    [
        ("p95_ttft <= 100", 0, "unknown metric 'p95_ttft'", "did you mean p95_ttft_ms"),
        ("p95_ttft_ms =< 100", 12, "not a comparison operator", "<="),
        ("p95_ttft_ms = 100", 12, "not a comparison operator", "equality is =="),
        ("p95_ttft_ms 100", 12, "expected a comparison operator", "<="),
        ("p95_ttft_ms <= ", 15, "expected a number", "plain number"),
        ("p95_ttft_ms <= fast", 15, "expected a number", "plain number"),
        ("p95_ttft_ms <= 100ms", 18, "unexpected text after the number", "units"),
        ("p95_ttft_ms <= 100 ms", 19, "unexpected text after the number", "units"),
        ("p95_ttft_ms <= 100 and error_rate == 0", 19, "unexpected text after the number", "one check per"),
        ("<= 100", 0, "must start with a metric name", "<metric> <op> <number>"),
        ("", 0, "empty SLO check", "<metric> <op> <number>"),
        ("ttft_p95_ms <= 1", 0, "unknown metric", "metric names carry their unit"),
        ("p95_ttft_ms <= nan", 15, "expected a number", "plain number"),
    ],
)
def test_malformed_checks_point_at_the_problem(text, column, problem, fix):
    with pytest.raises(SLOExpressionError) as info:
        parse_check(text, "validation.slo.checks[1]")
    err = info.value
    message = str(err)
    assert message.startswith("validation.slo.checks[1]: ")
    assert problem in message
    assert fix in message
    assert f"    {text}" in message, "the expression is repeated"
    assert err.column == column
    assert caret_column(err) == column
    assert isinstance(err, SpecError), "callers handle it as any spec error"


def test_parse_checks_names_the_list_index():
    with pytest.raises(SLOExpressionError, match=r"validation\.slo\.checks\[2\]"):
        parse_checks(["error_rate == 0", "p95_ttft_ms <= 100", "p95_tft_ms <= 100"])


def test_spec_defaults_parse():
    validation = parse_spec({}).validation
    assert [c.metric for c in parse_checks(validation.slo.checks)] == ["p95_ttft_ms", "error_rate"]
    assert parse_checks(validation.recovery.checks)[0].baseline


def test_the_spec_checks_slo_expressions_without_the_validation_package():
    """The parser sits below the spec: loading a spec checks its SLO expressions, and imports no validation."""
    code = """
import sys
from llm_rollout.slo_expr import SLOExpressionError
from llm_rollout.spec import parse_spec

parse_spec({"validation": {"slo": {"checks": ["p95_ttft_ms <= 100", "error_rate == 0"]}}})
try:
    parse_spec({"validation": {"slo": {"checks": ["p95_ttft_ms <= 100ms"]}}})
except SLOExpressionError as err:
    print("refused:", str(err).splitlines()[0])
print("imported:", sorted(m for m in sys.modules if m.startswith("llm_rollout.validation")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "refused: validation.slo.checks[0]: unexpected text after the number" in out
    assert "imported: []" in out


def test_every_ratio_metric_divides_a_known_metric():
    assert RATIO_METRICS["output_throughput_ratio_vs_baseline"] == "output_throughput_tok_s"
    assert RATIO_METRICS["goodput_ratio_vs_baseline"] == "goodput_req_s"
    assert RATIO_METRICS["p95_ttft_ratio_vs_baseline"] == "p95_ttft_ms"
    assert all(parse_check(f"{name} >= 0").metric == name for name in KNOWN_METRICS)


def test_goodput_limits_come_from_latency_upper_bounds():
    checks = parse_checks(
        ["p95_ttft_ms <= 100", "p50_ttft_ms < 80", "mean_tpot_ms <= 20", "p99_itl_ms <= 5", "p95_e2el_ms >= 1"]
    )
    assert goodput_limits(checks) == {"ttft": 0.08, "tpot": 0.02}


# Verdict ----------------------------------------------------------------------------------------


def level(successes: int, failures: int = 0, ttft: float = 0.05, tokens: int = 8) -> dict:
    gaps = [0.01] * (tokens - 1)
    recs = [RequestRecord(True, ttft + 0.07, ttft, list(gaps), 10, tokens) for _ in range(successes)]
    recs += [RequestRecord(False, error="HTTP 500: boom", status_code=500) for _ in range(failures)]
    return calculate_metrics(recs, 1.0)


CHECKS = parse_checks(["p95_ttft_ms <= 100", "error_rate == 0"])


def test_healthy_levels_pass():
    j = judge({"c10": level(20), "c20": level(20)}, CHECKS, min_successful=10)
    assert j.verdict == "pass"
    assert j.reasons == []
    assert j.levels == {"c10": "pass", "c20": "pass"}
    assert all(r.status == "pass" for r in j.results)


def test_a_failed_check_fails_with_its_measured_value():
    j = judge({"c10": level(20), "c20": level(20, ttft=0.25)}, CHECKS, min_successful=10)
    assert j.verdict == "fail"
    assert j.levels == {"c10": "pass", "c20": "fail"}
    assert j.reasons == ["c20: p95_ttft_ms <= 100 failed: measured 250"]


def test_errors_fail_the_level_even_with_few_successes():
    j = judge({"c10": level(2, failures=3)}, CHECKS, min_successful=10)
    assert j.verdict == "fail"
    assert "c10: error_rate == 0 failed: measured 0.6" in j.reasons
    # the latency check is not judged on 2 requests, and says why
    ttft = next(r for r in j.results if r.metric == "p95_ttft_ms")
    assert ttft.status == "inconclusive" and "2 successful requests, 10 needed" in ttft.note


def test_zero_successes_never_pass():
    # nothing finished (e.g. every request cut by the time bound): inconclusive
    nothing = calculate_metrics([RequestRecord(incomplete=True)] * 5, 1.0)
    j = judge({"c10": nothing}, CHECKS, min_successful=10)
    assert j.verdict == "inconclusive"
    assert any("0 successful requests" in r or "not measured" in r for r in j.reasons)
    # only checks that could pass vacuously: still inconclusive
    j = judge({"c10": nothing}, parse_checks(["failed_requests == 0"]), min_successful=1)
    assert j.verdict == "inconclusive"
    # every request failed: fail, with the error rate
    j = judge({"c10": level(0, failures=10)}, CHECKS, min_successful=10)
    assert j.verdict == "fail"
    assert "c10: error_rate == 0 failed: measured 1" in j.reasons


def test_too_few_successes_is_inconclusive_not_pass():
    j = judge({"c10": level(5)}, CHECKS, min_successful=10)
    assert j.verdict == "inconclusive"
    assert j.reasons == ["c10: inconclusive: 5 successful requests, 10 needed"]


def test_outside_failures_and_missing_levels():
    j = judge({"c10": level(20)}, CHECKS, min_successful=10, failures=["correctness: probe 1 failed (exact)"])
    assert j.verdict == "fail" and j.reasons[0] == "correctness: probe 1 failed (exact)"
    j = judge({"c10": level(20)}, CHECKS, min_successful=10, missing_levels=["c20"])
    assert j.verdict == "inconclusive" and "c20: inconclusive: not measured" in j.reasons
    j = judge({}, CHECKS, min_successful=10)
    assert j.verdict == "inconclusive" and "no level was judged" in j.reasons
    j = judge({"c10": level(20)}, CHECKS, min_successful=10, inconclusive=["baseline not usable"])
    assert j.verdict == "inconclusive"


def test_failures_are_listed_before_inconclusive_notes():
    j = judge({"c10": level(5), "c20": level(20, ttft=0.3)}, CHECKS, min_successful=10)
    assert j.verdict == "fail"
    assert j.reasons[0].startswith("c20: p95_ttft_ms <= 100 failed")
    assert j.reasons[-1].startswith("c10: inconclusive")


def test_baseline_ratio_checks():
    checks = parse_checks(["output_throughput_ratio_vs_baseline >= 2"])
    new = level(20, tokens=16)
    slow = level(20, tokens=4)
    j = judge({"c10": new}, checks, min_successful=10, baseline_levels={"c10": slow})
    assert j.verdict == "pass"
    assert j.results[0].measured == pytest.approx(4.0)
    assert "new 320 / baseline 80" in j.results[0].note
    j = judge({"c10": slow}, checks, min_successful=10, baseline_levels={"c10": new})
    assert j.verdict == "fail"
    assert j.reasons[0].startswith("c10: output_throughput_ratio_vs_baseline >= 2 failed: measured 0.25")
    j = judge({"c10": new}, checks, min_successful=10, baseline_levels=None)
    assert j.verdict == "inconclusive" and "no baseline measured" in j.reasons[0]
    j = judge({"c10": new}, checks, min_successful=10, baseline_levels={"c10": level(0, failures=5)})
    assert j.verdict == "inconclusive"


def test_judge_level_reports_every_check():
    verdict, results = judge_level("c1", level(20), CHECKS, min_successful=10)
    assert verdict == "pass"
    assert [(r.level, r.check, r.status) for r in results] == [
        ("c1", "p95_ttft_ms <= 100", "pass"),
        ("c1", "error_rate == 0", "pass"),
    ]


# Capacity search --------------------------------------------------------------------------------


def run_capacity(capacity: int, high: int, known=None):
    """Capacity search over a fake server whose TTFT exceeds 100 ms above ``capacity`` requests."""
    measured: list[int] = []

    async def measure(concurrency: int):
        measured.append(concurrency)
        return level(20, ttft=0.05 if concurrency <= capacity else 0.2)

    result = asyncio.run(capacity_search(measure, CHECKS, min_successful=10, high=high, known=known))
    return result, measured


@pytest.mark.parametrize("capacity", [1, 2, 7, 13, 31, 63])
def test_capacity_search_bisects_to_the_highest_passing_level(capacity):
    result, measured = run_capacity(capacity, 64)
    assert result.max_concurrency == capacity
    assert not result.bounded
    assert len(measured) <= 2 + 6, "bisection, not a scan"
    assert len(set(measured)) == len(measured), "no level measured twice"


def test_capacity_search_edges():
    result, _ = run_capacity(0, 16)
    assert result.max_concurrency == 0 and result.tried == {1: "fail"}
    result, measured = run_capacity(100, 16)
    assert result.max_concurrency == 16 and result.bounded and measured == [1, 16]
    result, measured = run_capacity(5, 16, known={1: level(20), 16: level(20, ttft=0.3)})
    assert result.max_concurrency == 5 and 1 not in measured and 16 not in measured
    with pytest.raises(ValueError):
        asyncio.run(capacity_search(lambda c: None, CHECKS, min_successful=1, low=5, high=2))


def run_noisy(sharp: int, top: int, *, high: int, repeats: int, seed: int, budget: int = 1000):
    """A server that meets the SLO up to ``sharp``, misses it above ``top``, and is a coin toss between."""
    rng = random.Random(seed)
    measured: list[int] = []

    async def measure(concurrency: int):
        measured.append(concurrency)
        ok = concurrency <= sharp or (concurrency <= top and rng.random() < 0.5)
        return level(20, ttft=0.05 if ok else 0.2)

    result = asyncio.run(
        capacity_search(measure, CHECKS, min_successful=10, high=high, repeats=repeats, max_measurements=budget)
    )
    return result, measured


def test_a_sharp_boundary_is_settled_exactly_and_confirmed_by_repeats():
    result, measured = run_capacity_repeats(capacity=9, high=32, repeats=3)
    assert (result.max_concurrency, result.low, result.high) == (9, 9, 9)
    assert result.settled and not result.bounded
    assert measured.count(9) == 3 and measured.count(10) == 3, "both sides of the boundary repeated"
    assert result.tried[9] == "pass" and result.tried[10] == "fail"
    assert result.measurements[9] == ["pass"] * 3


def run_capacity_repeats(capacity: int, high: int, repeats: int):
    measured: list[int] = []

    async def measure(concurrency: int):
        measured.append(concurrency)
        return level(20, ttft=0.05 if concurrency <= capacity else 0.2)

    result = asyncio.run(capacity_search(measure, CHECKS, min_successful=10, high=high, repeats=repeats))
    return result, measured


@pytest.mark.parametrize("seed", range(12))
def test_a_noisy_boundary_gives_an_interval_that_holds_it(seed):
    sharp, top = 10, 16
    result, measured = run_noisy(sharp, top, high=40, repeats=3, seed=seed)
    # Met on every measurement: not in the always-failing zone. Settled missing: not in the always-passing one.
    assert result.low <= top
    assert result.high >= sharp
    assert result.low <= result.high
    for c, seen in result.measurements.items():
        assert len(seen) <= 3
        if c <= sharp:
            assert set(seen) == {"pass"}
        if c > top:
            assert set(seen) == {"fail"}
    assert len(measured) <= 3 * 2 * 7, "two bisections of at most log2(40) + 1 rungs, each rung at most 3 times"


def test_two_noisy_searches_agree_within_their_intervals():
    a, _ = run_noisy(10, 13, high=40, repeats=3, seed=1)
    b, _ = run_noisy(10, 13, high=40, repeats=3, seed=2)
    assert max(a.low, b.low) <= min(a.high, b.high), (a, b)


def test_the_search_stops_at_its_measurement_budget():
    result, measured = run_noisy(10, 16, high=40, repeats=3, seed=0, budget=5)
    assert len(measured) == 5 and not result.settled
    assert result.low <= result.high


def test_rate_search_walks_the_ladder():
    async def measure(rate: float):
        return level(20, ttft=0.05 if rate <= 7.5 else 0.2)

    assert rate_ladder(10, 4) == [2.5, 5.0, 7.5, 10.0]
    result = asyncio.run(rate_capacity_search(measure, CHECKS, min_successful=10, max_rate=10, steps=8, repeats=2))
    assert (result.max_request_rate, result.low, result.high, result.step) == (7.5, 7.5, 7.5, 1.25)
    assert result.tried[7.5] == "pass" and result.tried[8.75] == "fail" and not result.bounded
    none = asyncio.run(
        rate_capacity_search(lambda r: _async(level(20, ttft=0.2)), CHECKS, min_successful=10, max_rate=4, steps=4)
    )
    assert none.max_request_rate == 0.0 and none.high == 0.0
    every = asyncio.run(
        rate_capacity_search(lambda r: _async(level(20)), CHECKS, min_successful=10, max_rate=4, steps=4)
    )
    assert every.max_request_rate == 4.0 and every.bounded


async def _async(value):
    return value
