"""Per-request records and their aggregates, defined exactly like ``vllm bench serve``.

The record (:class:`RequestRecord`) mirrors vLLM's ``RequestFuncOutput`` and the aggregation
(:func:`calculate_metrics`) mirrors ``vllm.benchmarks.serve.calculate_metrics`` (vLLM 0.32), so a
number from the validator and one from ``vllm bench serve`` mean the same thing:

* **TTFT**: time from sending the request to the first streamed event that carries ``choices``
  (even an empty text, as vLLM's own client counts it).
* **ITL**: the gaps between consecutive events that carry ``choices``; all requests' gaps are
  pooled before the statistics are taken.
* **E2E latency** (``e2el``): time from sending to the *last* event that carries ``choices``
  (the trailing usage event and ``[DONE]`` do not move it).
* **TPOT**: ``(latency - ttft) / (output_tokens - 1)`` per request with more than one output
  token; for goodput a request with one token counts as TPOT 0.
* **Output tokens**: ``completion_tokens`` of the server's usage event; when a server sends no
  usage, the number of events that carried ``choices`` (vLLM would use a tokenizer here).
* **Throughputs** divide by the level's wall-clock duration (first send to last completion):
  requests = successful requests / duration, output = successful requests' output tokens / duration,
  total = (input + output tokens) / duration.
* **Goodput**: successful requests that meet *every* per-request latency limit (``ttft``, ``tpot``,
  ``e2el``; a request meets a limit when its value is ``<=`` it) / duration. With no limit at all,
  every successful request is good (vLLM reports 0 then; we report the request throughput).
* **Percentiles**: numpy's default (linear interpolation between closest ranks); ``median`` is
  p50; ``std`` is the population standard deviation.
* **Error rate** (ours): failed / (successful + failed). Requests still in flight when a level's
  time bound ran out are ``incomplete`` and counted in neither.

Metric names carry their unit (``_ms``, ``_s``, ``_req_s``, ``_tok_s``); an empty sample gives
``None`` (not measured), never 0, so nothing can pass on missing data.

**Unmeasured decode latency** (ours): when most successful multi-token requests arrived in one piece
(their token gaps are the client parsing one network read, under :data:`MIN_TOKEN_GAP_S`), the
client saw no decode time: TPOT and ITL of that level are ``None`` with the reason
(:func:`unmeasured_series`), never the 0 their arithmetic would give.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from llm_rollout.slo_expr import METRIC_UNITS as METRIC_UNITS
from llm_rollout.slo_expr import PERCENTILES

GOODPUT_SERIES: tuple[str, ...] = ("ttft", "tpot", "e2el")
"""Series that can carry a per-request limit for goodput (vLLM's ``--goodput`` keys)."""

MetricValue = float | int | None


@dataclass(slots=True)
class RequestRecord:
    """One request, recorded the way ``vllm bench serve`` records it (``RequestFuncOutput``).

    Times are ``time.perf_counter()`` seconds. Errors are captured here, never raised.

    Attributes:
        success: The stream completed (HTTP 200, at least one token event, ``[DONE]`` seen).
        latency: Send to last token event (E2E latency).
        ttft: Send to first token event.
        itl: Gaps between consecutive token events.
        prompt_len: Prompt tokens (from the usage event; 0 when unknown).
        output_tokens: Output tokens (from the usage event, else the number of token events).
        error: What went wrong (HTTP status and body excerpt, exception, truncated stream).
        start_time: When the request was sent.
        finish_reason: The last ``finish_reason`` seen (``length``, ``stop``...), when parsed.
        status_code: HTTP status (0 when no response came).
        generated_text: The completion text (kept only when asked for: probes, not load).
        incomplete: Still running when the level's time bound ran out (neither success nor failure).
    """

    success: bool = False
    latency: float = 0.0
    ttft: float = 0.0
    itl: list[float] = field(default_factory=list)
    prompt_len: int = 0
    output_tokens: int = 0
    error: str = ""
    start_time: float = 0.0
    finish_reason: str | None = None
    status_code: int = 0
    generated_text: str = ""
    incomplete: bool = False

    def to_dict(self, *, with_text: bool = False) -> dict[str, Any]:
        """The record as plain JSON data (the completion text only when ``with_text``)."""
        data = asdict(self)
        if not with_text:
            data.pop("generated_text")
        return data


MIN_TOKEN_GAP_S = 0.0002
"""A gap between two token events shorter than this (200 us) is the client parsing one read, not
the server making a token (the tiny model on CPU takes ~2 ms a token, a GPU server 5+ ms)."""

DECODE_SERIES: tuple[str, ...] = ("tpot", "itl")
"""The series a stream that arrived in one piece cannot measure."""


def streamed(record: RequestRecord) -> bool:
    """Whether the client saw at least half of the request's token gaps as real gaps."""
    gaps = record.itl
    return bool(gaps) and 2 * sum(1 for g in gaps if g >= MIN_TOKEN_GAP_S) >= len(gaps)


def unmeasured_series(records: Sequence[RequestRecord]) -> dict[str, str]:
    """The decode series (TPOT, ITL) the client could not see in these records, with why.

    Returns:
        ``{"tpot": why, "itl": why}`` when most successful requests with more than one output
        token arrived in one piece (see the module doc); else empty.
    """
    multi = [r for r in records if r.success and not r.incomplete and r.output_tokens > 1]
    seen = sum(1 for r in multi if streamed(r))
    if not multi or 2 * seen >= len(multi):
        return {}
    why = (
        f"unmeasured: the streams arrived in one piece ({seen}/{len(multi)} requests had token gaps), "
        "so the client saw no decode time"
    )
    return dict.fromkeys(DECODE_SERIES, why)


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile of sorted values, numpy's default ("linear") method.

    Args:
        sorted_values: Values in ascending order.
        p: Percentile, 0-100.

    Returns:
        The interpolated value, or None for an empty sample.
    """
    n = len(sorted_values)
    if n == 0:
        return None
    rank = (n - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, n - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def describe(values: Iterable[float], scale: float = 1000.0) -> dict[str, float | None]:
    """Mean, median, std and :data:`PERCENTILES` of a sample, multiplied by ``scale``.

    Args:
        values: The sample (seconds for latencies).
        scale: Factor applied to every statistic (1000 turns seconds into ms).

    Returns:
        ``{"mean", "median", "std", "p50", "p90", "p95", "p99"}``; every value None when empty.
    """
    data = sorted(values)
    n = len(data)
    if n == 0:
        return {"mean": None, "median": None, "std": None, **{f"p{p}": None for p in PERCENTILES}}
    mean = math.fsum(data) / n
    var = math.fsum((x - mean) ** 2 for x in data) / n
    out: dict[str, float | None] = {"mean": mean * scale, "std": math.sqrt(var) * scale}
    out["median"] = percentile(data, 50) * scale  # type: ignore[operator]
    for p in PERCENTILES:
        out[f"p{p}"] = percentile(data, p) * scale  # type: ignore[operator]
    return out


def tpot_of(record: RequestRecord) -> float | None:
    """TPOT of one successful request: ``(latency - ttft) / (output_tokens - 1)``; None for 1 token."""
    if record.output_tokens > 1:
        return (record.latency - record.ttft) / (record.output_tokens - 1)
    return None


def is_good(record: RequestRecord, limits_s: Mapping[str, float]) -> bool:
    """Whether a successful request meets every per-request latency limit (vLLM's goodput rule).

    Args:
        record: A successful request.
        limits_s: Limits in seconds keyed by ``ttft``, ``tpot`` and/or ``e2el``.

    Returns:
        True when every given limit is ``>=`` the request's value (TPOT counts as 0 for one token).
    """
    for key, limit in limits_s.items():
        if key == "ttft":
            value = record.ttft
        elif key == "tpot":
            value = tpot_of(record) or 0.0
        elif key == "e2el":
            value = record.latency
        else:
            raise ValueError(f"no per-request limit for {key!r}; use one of {', '.join(GOODPUT_SERIES)}")
        if value > limit:
            return False
    return True


def peak_output_rate(records: Sequence[RequestRecord]) -> tuple[float, int]:
    """Peak output tokens in any one-second bucket and peak concurrent requests (vLLM's definition).

    Token times are rebuilt from ``start_time``, ``ttft`` and ``itl`` of successful requests.

    Returns:
        ``(max tokens in one second, max requests active in one second)``; ``(0.0, 0)`` when none.
    """
    ok = [r for r in records if r.success]
    if not ok:
        return 0.0, 0
    t0 = min(r.start_time for r in ok)
    t1 = max(r.start_time + r.latency for r in ok)
    buckets = math.ceil(t1 - t0) + 1
    tokens = [0] * buckets
    active = [0] * buckets
    for r in ok:
        t = r.start_time + r.ttft
        tokens[min(int(t - t0), buckets - 1)] += 1
        for gap in r.itl:
            t += gap
            idx = int(t - t0)
            if 0 <= idx < buckets:
                tokens[idx] += 1
        for second in range(int(r.start_time - t0), min(int(r.start_time + r.latency - t0), buckets - 1) + 1):
            active[second] += 1
    return float(max(tokens)), max(active)


def calculate_metrics(
    records: Sequence[RequestRecord],
    duration_s: float,
    goodput_limits_s: Mapping[str, float] | None = None,
) -> dict[str, MetricValue]:
    """Aggregates one level's records with ``vllm bench serve``'s definitions (see the module doc).

    Args:
        records: Every request of the level (successful, failed and incomplete).
        duration_s: Wall-clock seconds of the level (first send to last completion).
        goodput_limits_s: Per-request latency limits in seconds (``ttft``, ``tpot``, ``e2el``).

    Returns:
        A flat dict, unit in every name: ``successful_requests``, ``failed_requests``,
        ``incomplete_requests``, ``sent_requests``, ``error_rate``, ``duration_s``,
        ``total_input_tokens``, ``total_output_tokens``, ``request_throughput_req_s``,
        ``output_throughput_tok_s``, ``total_token_throughput_tok_s``, ``goodput_req_s``,
        ``peak_output_throughput_tok_s``, ``peak_concurrent_requests`` and, for each of
        ``ttft``, ``tpot``, ``itl``, ``e2el``: ``mean_X_ms``, ``median_X_ms``, ``std_X_ms``,
        ``p50_X_ms``, ``p90_X_ms``, ``p95_X_ms``, ``p99_X_ms``. Statistics of an empty sample
        and throughputs of a zero-length level are None, and so are TPOT's and ITL's when the
        streams arrived in one piece (:func:`unmeasured_series`).
    """
    limits = dict(goodput_limits_s or {})
    unmeasured = unmeasured_series(records)
    ttfts: list[float] = []
    tpots: list[float] = []
    itls: list[float] = []
    e2els: list[float] = []
    completed = failed = incomplete = good = 0
    total_input = total_output = 0
    for r in records:
        if r.incomplete:
            incomplete += 1
            continue
        if not r.success:
            failed += 1
            continue
        completed += 1
        total_input += r.prompt_len
        total_output += r.output_tokens
        ttfts.append(r.ttft)
        e2els.append(r.latency)
        itls.extend(r.itl)
        tpot = tpot_of(r)
        if tpot is not None:
            tpots.append(tpot)
        if is_good(r, limits):
            good += 1

    def per_s(x: float) -> float | None:
        return x / duration_s if duration_s > 0 else None

    finished = completed + failed
    peak_tokens, peak_active = peak_output_rate(records)
    out: dict[str, MetricValue] = {
        "successful_requests": completed,
        "failed_requests": failed,
        "incomplete_requests": incomplete,
        "sent_requests": len(records),
        "error_rate": failed / finished if finished else None,
        "duration_s": duration_s,
        "total_input_tokens": total_input,
        "total_output_tokens": total_output,
        "request_throughput_req_s": per_s(completed),
        "output_throughput_tok_s": per_s(total_output),
        "total_token_throughput_tok_s": per_s(total_input + total_output),
        "goodput_req_s": per_s(good),
        "peak_output_throughput_tok_s": peak_tokens,
        "peak_concurrent_requests": peak_active,
    }
    for name, sample in (("ttft", ttfts), ("tpot", tpots), ("itl", itls), ("e2el", e2els)):
        for stat, value in describe([] if name in unmeasured else sample).items():
            out[f"{stat}_{name}_ms"] = value
    return out
