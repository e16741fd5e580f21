"""SLO checks: the verdict with its reasons, and the capacity search.

A check is ``<metric> <op> <number>`` (``p95_ttft_ms <= 100``), parsed strictly by
:mod:`llm_rollout.slo_expr` (below the spec, which checks them when it is loaded).

Verdict rules (:func:`judge`), per judged level and then overall:

* A latency or throughput check is judged only with at least ``min_successful`` successful
  requests; with fewer it is *not judged* and the level is **inconclusive**.
* An error check (``error_rate``, ``failed_requests``) that is violated **fails** on any number
  of requests (an error is a fact, not a statistic); it *passes* only with ``min_successful``
  successful requests behind it. So zero successful requests never pass: they fail when requests
  failed, and are inconclusive when none finished.
* A level **fails** when any check fails, is **inconclusive** when any is not judged, else passes.
* Overall: **fail** when any level fails or an outside failure is given (readiness, correctness,
  the server stopping mid-load); else **inconclusive** when any level is inconclusive or none was
  judged; else **pass**. Every failed check is listed with its measured value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# The parser lives below the spec; its names stay importable from here (validation/__init__, runner).
from llm_rollout.slo_expr import RATIO_METRICS, Check, SLOExpressionError, parse_check, parse_checks  # noqa: F401
from llm_rollout.validation.metrics import GOODPUT_SERIES, MetricValue

Verdict = Literal["pass", "fail", "inconclusive"]

ERROR_METRICS = frozenset({"error_rate", "failed_requests"})
"""Metrics that can fail a level on any number of requests (see the module doc)."""

_LATENCY_STAT_RE = re.compile(r"^(mean|median|p\d+)_(" + "|".join(GOODPUT_SERIES) + r")_ms$")


def goodput_limits(checks: Iterable[Check]) -> dict[str, float]:
    """Per-request latency limits (seconds) implied by the latency checks, for goodput.

    A check ``<stat>_<series>_ms <= X`` or ``< X`` (``stat`` mean, median or a percentile, ``series``
    ttft, tpot or e2el) makes ``X`` ms a limit on every request's ``series``; the tightest wins.
    ITL has no per-request value, so ITL checks set no limit (as in ``vllm bench serve --goodput``).
    """
    limits: dict[str, float] = {}
    for check in checks:
        m = _LATENCY_STAT_RE.match(check.metric)
        if m and check.op in ("<=", "<"):
            series = m.group(2)
            limit = check.threshold / 1000.0
            limits[series] = min(limit, limits.get(series, math.inf))
    return limits


@dataclass
class CheckResult:
    """One check judged at one level.

    Attributes:
        level: The level key (``c10`` for concurrency 10, ``rate2`` for a Poisson rate).
        check: The check's canonical text.
        metric: Its metric.
        measured: The measured value (the ratio for baseline checks); None when not measured.
        status: ``pass``, ``fail`` or ``not_judged``.
        note: Why it was not judged, or the baseline value a ratio used.
    """

    level: str
    check: str
    metric: str
    measured: float | None
    status: Literal["pass", "fail", "not_judged"]
    note: str = ""


@dataclass
class Judgement:
    """The verdict with everything that led to it.

    Attributes:
        verdict: ``pass``, ``fail`` or ``inconclusive``.
        reasons: One line per failed check (with its measured value), per outside failure and per
            inconclusive level; empty on pass.
        results: Every check at every judged level.
        levels: Verdict per judged level.
    """

    verdict: Verdict
    reasons: list[str] = field(default_factory=list)
    results: list[CheckResult] = field(default_factory=list)
    levels: dict[str, Verdict] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return asdict(self)


def _fmt(value: float | None) -> str:
    if value is None:
        return "not measured"
    if value == int(value) and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.4g}"


def judge_level(
    level: str,
    metrics: Mapping[str, MetricValue],
    checks: Sequence[Check],
    *,
    min_successful: int,
    baseline: Mapping[str, MetricValue] | None = None,
) -> tuple[Verdict, list[CheckResult]]:
    """Judges one level (see the module doc for the rules).

    Args:
        level: The level key (used in the results).
        metrics: The level's aggregates (:func:`~llm_rollout.validation.metrics.calculate_metrics`).
        checks: The checks; baseline checks need ``baseline``.
        min_successful: Successful requests needed to judge (and to pass).
        baseline: The baseline endpoint's aggregates at the same level, if measured.

    Returns:
        The level's verdict and one result per check.
    """
    successes = int(metrics.get("successful_requests") or 0)
    enough = successes >= min_successful
    results: list[CheckResult] = []
    for check in checks:
        note = ""
        if check.baseline:
            base_name = RATIO_METRICS[check.metric]
            new = metrics.get(base_name)
            base = baseline.get(base_name) if baseline is not None else None
            if baseline is None:
                results.append(CheckResult(level, check.text, check.metric, None, "not_judged", "no baseline measured"))
                continue
            base_ok = int(baseline.get("successful_requests") or 0) >= min_successful
            if new is None or base is None or base == 0 or not base_ok:
                why = f"baseline {base_name} = {_fmt(base)} with {int(baseline.get('successful_requests') or 0)} "
                why += "successful requests"
                results.append(CheckResult(level, check.text, check.metric, None, "not_judged", why))
                continue
            value: float | None = float(new) / float(base)
            note = f"new {_fmt(float(new))} / baseline {_fmt(float(base))}"
        else:
            raw = metrics.get(check.metric)
            value = None if raw is None else float(raw)
        if value is None:
            results.append(CheckResult(level, check.text, check.metric, None, "not_judged", "not measured"))
            continue
        ok = check.holds(value)
        if check.metric in ERROR_METRICS and not ok:
            results.append(CheckResult(level, check.text, check.metric, value, "fail", note))
        elif not enough:
            why = f"{successes} successful requests, {min_successful} needed"
            results.append(CheckResult(level, check.text, check.metric, value, "not_judged", why))
        else:
            results.append(CheckResult(level, check.text, check.metric, value, "pass" if ok else "fail", note))
    if any(r.status == "fail" for r in results):
        return "fail", results
    if any(r.status == "not_judged" for r in results) or not enough:
        return "inconclusive", results
    return "pass", results


def judge(
    levels: Mapping[str, Mapping[str, MetricValue]],
    checks: Sequence[Check],
    *,
    min_successful: int,
    baseline_levels: Mapping[str, Mapping[str, MetricValue]] | None = None,
    failures: Sequence[str] = (),
    inconclusive: Sequence[str] = (),
    missing_levels: Sequence[str] = (),
) -> Judgement:
    """The overall verdict over the judged levels (see the module doc for the rules).

    Args:
        levels: Aggregates of every judged level, by level key.
        checks: The checks (baseline checks are judged only where ``baseline_levels`` has the level).
        min_successful: Successful requests needed to judge a level.
        baseline_levels: The baseline's aggregates by level key.
        failures: Failures found outside the load phase (readiness, correctness, server gone);
            each is a reason and makes the verdict ``fail``.
        inconclusive: Things that could not be judged outside the load phase (e.g. the baseline
            was unreachable); each is a reason and makes a non-failing verdict ``inconclusive``.
        missing_levels: Judged levels that could not be measured (e.g. after the server stopped).

    Returns:
        The judgement: verdict, reasons, per-check results and per-level verdicts.
    """
    out = Judgement("pass", reasons=list(failures))
    for key, metrics in levels.items():
        base = (baseline_levels or {}).get(key)
        verdict, results = judge_level(key, metrics, checks, min_successful=min_successful, baseline=base)
        out.levels[key] = verdict
        out.results.extend(results)
        for r in results:
            if r.status == "fail":
                extra = f" ({r.note})" if r.note else ""
                out.reasons.append(f"{key}: {r.check} failed: measured {_fmt(r.measured)}{extra}")
        if verdict == "inconclusive":
            successes = int(metrics.get("successful_requests") or 0)
            notes = sorted({r.note for r in results if r.status == "not_judged" and r.note})
            why = "; ".join(notes) or f"{successes} successful requests, {min_successful} needed"
            out.reasons.append(f"{key}: inconclusive: {why}")
    for key in missing_levels:
        out.levels[key] = "inconclusive"
        out.reasons.append(f"{key}: inconclusive: not measured")
    out.reasons.extend(f"inconclusive: {why}" for why in inconclusive)
    if failures or any(v == "fail" for v in out.levels.values()):
        out.verdict = "fail"
    elif inconclusive or not out.levels or any(v == "inconclusive" for v in out.levels.values()):
        out.verdict = "inconclusive"
        if not out.levels:
            out.reasons.append("no level was judged")
    if out.verdict == "fail":
        # Inconclusive notes stay (they explain), but failures come first.
        out.reasons.sort(key=lambda line: "inconclusive" in line)
    return out


@dataclass
class CapacityResult:
    """Outcome of the capacity search.

    Attributes:
        max_concurrency: Highest concurrency that met every check (0 when even the lowest failed).
        tried: Verdict of every concurrency measured, in the order tried.
        bounded: True when the upper bound itself passed (the real capacity may be higher).
    """

    max_concurrency: int
    tried: dict[int, Verdict] = field(default_factory=dict)
    bounded: bool = False


async def capacity_search(
    measure: Callable[[int], Awaitable[Mapping[str, MetricValue]]],
    checks: Sequence[Check],
    *,
    min_successful: int,
    low: int = 1,
    high: int,
    known: Mapping[int, Mapping[str, MetricValue]] | None = None,
) -> CapacityResult:
    """Bisects for the highest concurrency meeting every (non-baseline) check.

    Assumes the checks get harder to meet as concurrency grows (latency rises with load). A level
    passes only when :func:`judge_level` says ``pass``; inconclusive counts as not passing.

    Args:
        measure: Runs the load at one concurrency and returns its aggregates.
        checks: The checks (baseline checks are ignored here).
        min_successful: Successful requests needed to judge.
        low: Lowest concurrency considered.
        high: Highest concurrency considered.
        known: Aggregates already measured, by concurrency (not measured again).

    Returns:
        The highest passing concurrency and what was tried.
    """
    if high < low:
        raise ValueError(f"capacity search needs low <= high, got {low} > {high}")
    own = [c for c in checks if not c.baseline]
    cache: dict[int, Mapping[str, MetricValue]] = dict(known or {})
    tried: dict[int, Verdict] = {}

    async def passes(concurrency: int) -> bool:
        if concurrency not in cache:
            cache[concurrency] = await measure(concurrency)
        verdict, _ = judge_level(f"c{concurrency}", cache[concurrency], own, min_successful=min_successful)
        tried[concurrency] = verdict
        return verdict == "pass"

    if not await passes(low):
        return CapacityResult(0, tried)
    if await passes(high):
        return CapacityResult(high, tried, bounded=True)
    good, bad = low, high
    while bad - good > 1:
        mid = (good + bad) // 2
        if await passes(mid):
            good = mid
        else:
            bad = mid
    return CapacityResult(good, tried)
