"""Aggregates with ``vllm bench serve``'s definitions (TTFT, TPOT, ITL, E2E, throughput, goodput).

The serving tier cross-checks these against vLLM's own ``calculate_metrics`` on real records;
here every definition is pinned on records whose answers are known by hand.
"""

import math
import statistics

import pytest

from llm_rollout.validation.metrics import (
    METRIC_UNITS,
    RequestRecord,
    calculate_metrics,
    describe,
    is_good,
    peak_output_rate,
    percentile,
    tpot_of,
)


def ok(ttft: float, latency: float, tokens: int, *, start: float = 0.0, prompt: int = 10) -> RequestRecord:
    """A successful request with evenly spaced tokens."""
    gaps = [(latency - ttft) / (tokens - 1)] * (tokens - 1) if tokens > 1 else []
    return RequestRecord(True, latency, ttft, gaps, prompt, tokens, "", start)


def failed(error: str = "HTTP 500: boom") -> RequestRecord:
    return RequestRecord(False, error=error, status_code=500)


@pytest.mark.parametrize(
    "values",
    [[5.0], [1.0, 2.0], [3.0, 1.0, 2.0], [0.1, 0.5, 0.2, 0.9, 0.3, 0.7, 0.4], list(map(float, range(1, 101)))],
)
@pytest.mark.parametrize("p", [1, 25, 50, 90, 95, 99])
def test_percentile_is_numpys_linear_method(values, p):
    data = sorted(values)
    # statistics' "inclusive" method is numpy's default (linear) percentile
    expected = data[0] if len(data) == 1 else statistics.quantiles(data, n=100, method="inclusive")[p - 1]
    assert percentile(data, p) == pytest.approx(expected)


def test_percentile_of_nothing_is_none():
    assert percentile([], 50) is None
    assert set(describe([]).values()) == {None}


def test_describe_scales_seconds_to_ms_and_uses_population_std():
    d = describe([0.1, 0.2, 0.3])
    assert d["mean"] == pytest.approx(200.0)
    assert d["median"] == d["p50"] == pytest.approx(200.0)
    assert d["std"] == pytest.approx(statistics.pstdev([100.0, 200.0, 300.0]))
    assert d["p99"] == pytest.approx(298.0)


def test_tpot_is_decode_time_over_tokens_after_the_first():
    assert tpot_of(ok(0.1, 1.0, 10)) == pytest.approx(0.1)
    assert tpot_of(ok(0.1, 0.1, 1)) is None


def test_level_aggregates_match_hand_computed_values():
    records = [ok(0.1, 1.0, 10, start=0.0), ok(0.3, 2.1, 10, start=0.5), ok(0.2, 0.2, 1, start=1.0), failed()]
    m = calculate_metrics(records, duration_s=2.0)
    assert m["successful_requests"] == 3
    assert m["failed_requests"] == 1
    assert m["error_rate"] == pytest.approx(0.25)
    assert m["total_output_tokens"] == 21
    assert m["total_input_tokens"] == 30
    assert m["output_throughput_tok_s"] == pytest.approx(10.5)
    assert m["request_throughput_req_s"] == pytest.approx(1.5)
    assert m["total_token_throughput_tok_s"] == pytest.approx(25.5)
    assert m["mean_ttft_ms"] == pytest.approx(200.0)
    assert m["median_ttft_ms"] == pytest.approx(200.0)
    # TPOT only from requests with more than one token: 0.1 s and 0.2 s
    assert m["mean_tpot_ms"] == pytest.approx(150.0)
    # ITL pools every gap: 9 of 0.1 s and 9 of 0.2 s
    assert m["mean_itl_ms"] == pytest.approx(150.0)
    assert m["p50_itl_ms"] == pytest.approx(150.0)
    assert m["mean_e2el_ms"] == pytest.approx(1100.0)
    # no latency limit: every successful request is good
    assert m["goodput_req_s"] == pytest.approx(1.5)


def test_goodput_counts_requests_meeting_every_limit():
    records = [ok(0.05, 0.5, 10), ok(0.2, 0.6, 10), ok(0.05, 2.0, 10), ok(0.05, 0.05, 1)]
    m = calculate_metrics(records, 1.0, {"ttft": 0.1, "tpot": 0.1})
    # second misses TTFT, third misses TPOT (0.217 s), the 1-token one counts TPOT as 0
    assert m["goodput_req_s"] == pytest.approx(2.0)
    assert is_good(ok(0.1, 1.0, 10), {"ttft": 0.1, "e2el": 1.0}), "a limit is met when equal (vLLM uses >=)"
    with pytest.raises(ValueError, match="itl"):
        is_good(ok(0.1, 1.0, 10), {"itl": 0.1})


def test_incomplete_requests_count_neither_as_success_nor_as_error():
    records = [ok(0.1, 0.5, 5), RequestRecord(incomplete=True, error="still running")]
    m = calculate_metrics(records, 1.0)
    assert (m["successful_requests"], m["failed_requests"], m["incomplete_requests"]) == (1, 0, 1)
    assert m["error_rate"] == 0
    assert m["sent_requests"] == 2


def test_nothing_measured_gives_none_never_zero():
    m = calculate_metrics([failed(), failed()], 1.0)
    assert m["error_rate"] == 1.0
    assert m["p95_ttft_ms"] is None and m["mean_tpot_ms"] is None
    assert m["output_throughput_tok_s"] == 0.0
    m = calculate_metrics([], 0.0)
    assert m["error_rate"] is None and m["request_throughput_req_s"] is None


def test_peak_output_rate_buckets_tokens_per_second():
    records = [ok(0.1, 0.9, 10, start=0.0), ok(0.1, 0.9, 10, start=0.0), ok(0.5, 1.4, 5, start=1.0)]
    tokens, active = peak_output_rate(records)
    assert tokens == 20.0
    assert active == 2


# vLLM bench serve's latency names (vllm/benchmarks/serve.py): <stat>_<metric>_ms.
LATENCY_NAMES = {
    f"{stat}_{metric}_ms"
    for metric in ("ttft", "tpot", "itl", "e2el")
    for stat in ("mean", "median", "std", "p50", "p90", "p95", "p99")
}
COUNT_NAMES = {
    "successful_requests": "requests",
    "failed_requests": "requests",
    "incomplete_requests": "requests",
    "sent_requests": "requests",
    "peak_concurrent_requests": "requests",
    "total_input_tokens": "tokens",
    "total_output_tokens": "tokens",
    "error_rate": "fraction",
    "duration_s": "s",
    "request_throughput_req_s": "req/s",
    "goodput_req_s": "req/s",
    "output_throughput_tok_s": "tok/s",
    "total_token_throughput_tok_s": "tok/s",
    "peak_output_throughput_tok_s": "tok/s",
}


def test_every_returned_name_has_its_unit():
    m = calculate_metrics([ok(0.1, 0.5, 5)], 1.0)
    assert set(m) == LATENCY_NAMES | set(COUNT_NAMES)
    units = {**COUNT_NAMES, **dict.fromkeys(LATENCY_NAMES, "ms")}
    assert units == METRIC_UNITS
    assert all(math.isfinite(v) for v in m.values() if v is not None)


def test_record_serialises_without_text_unless_asked():
    rec = ok(0.1, 0.5, 5)
    rec.generated_text = "secret completion"
    assert "generated_text" not in rec.to_dict()
    assert rec.to_dict(with_text=True)["generated_text"] == "secret completion"
