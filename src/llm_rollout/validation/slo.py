"""SLO checks: the verdict with its reasons, and the capacity search.

A check is ``<metric> <op> <number>`` (``p95_ttft_ms <= 100``), parsed strictly by
:mod:`llm_rollout.slo_expr` (below the spec, which checks them when it is loaded).

Decision rules (:func:`judge`), per judged level and then overall:

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
from typing import Any

# The parser lives below the spec; its names stay importable from here (validation/__init__, runner).
from llm_rollout.slo_expr import RATIO_METRICS, Check, SLOExpressionError, parse_check, parse_checks  # noqa: F401
from llm_rollout.validation.answers import Decision
from llm_rollout.validation.metrics import GOODPUT_SERIES, MetricValue

ERROR_METRICS = frozenset({"error_rate", "failed_requests"})
"""Metrics that can fail a level on any number of requests (see the module doc)."""

_LATENCY_STAT_RE = re.compile(r"^(mean|median|p\d+)_(" + "|".join(GOODPUT_SERIES) + r")_ms$")


def _series(metric: str) -> str:
    """The latency series of a ``<stat>_<series>_ms`` metric (``tpot``), empty for any other."""
    m = re.match(r"^[a-z0-9]+_(ttft|tpot|itl|e2el)_ms$", metric)
    return m.group(1) if m else ""


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
        status: ``pass``, ``fail`` or ``inconclusive`` (not judged).
        note: Why it was not judged (why unmeasured), or the baseline value a ratio used.
    """

    level: str
    check: str
    metric: str
    measured: float | None
    status: Decision
    note: str = ""


@dataclass
class Judgement:
    """The verdict with everything that led to it.

    Attributes:
        verdict: ``pass``, ``fail`` or ``inconclusive``.
        reasons: One line per failed check (with its measured value), per outside failure and per
            inconclusive level; empty on pass.
        results: Every check at every judged level.
        levels: Decision per judged level.
    """

    verdict: Decision
    reasons: list[str] = field(default_factory=list)
    results: list[CheckResult] = field(default_factory=list)
    levels: dict[str, Decision] = field(default_factory=dict)

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
    unmeasured: Mapping[str, str] | None = None,
) -> tuple[Decision, list[CheckResult]]:
    """Judges one level (see the module doc for the rules).

    Args:
        level: The level key (used in the results).
        metrics: The level's aggregates (:func:`~llm_rollout.validation.metrics.calculate_metrics`).
        checks: The checks; baseline checks need ``baseline``.
        min_successful: Successful requests needed to judge (and to pass).
        baseline: The baseline endpoint's aggregates at the same level, if measured.
        unmeasured: Series the level could not measure, with why
            (:func:`~llm_rollout.validation.metrics.unmeasured_series`): a check on one is
            inconclusive with that reason, never a pass.

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
                results.append(
                    CheckResult(level, check.text, check.metric, None, "inconclusive", "no baseline measured")
                )
                continue
            base_ok = int(baseline.get("successful_requests") or 0) >= min_successful
            if new is None or base is None or base == 0 or not base_ok:
                why = f"baseline {base_name} = {_fmt(base)} with {int(baseline.get('successful_requests') or 0)} "
                why += "successful requests"
                results.append(CheckResult(level, check.text, check.metric, None, "inconclusive", why))
                continue
            value: float | None = float(new) / float(base)
            note = f"new {_fmt(float(new))} / baseline {_fmt(float(base))}"
        else:
            raw = metrics.get(check.metric)
            value = None if raw is None else float(raw)
        if value is None:
            series = _series(check.metric)
            why = (unmeasured or {}).get(series, "not measured") if series else "not measured"
            results.append(CheckResult(level, check.text, check.metric, None, "inconclusive", why))
            continue
        ok = check.holds(value)
        if check.metric in ERROR_METRICS and not ok:
            results.append(CheckResult(level, check.text, check.metric, value, "fail", note))
        elif not enough:
            why = f"{successes} successful requests, {min_successful} needed"
            results.append(CheckResult(level, check.text, check.metric, value, "inconclusive", why))
        else:
            results.append(CheckResult(level, check.text, check.metric, value, "pass" if ok else "fail", note))
    if any(r.status == "fail" for r in results):
        return "fail", results
    if any(r.status == "inconclusive" for r in results) or not enough:
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
    unmeasured: Mapping[str, Mapping[str, str]] | None = None,
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
        unmeasured: Per level, the series it could not measure with why (see :func:`judge_level`).

    Returns:
        The judgement: verdict, reasons, per-check results and per-level verdicts.
    """
    out = Judgement("pass", reasons=list(failures))
    for key, metrics in levels.items():
        base = (baseline_levels or {}).get(key)
        verdict, results = judge_level(
            key, metrics, checks, min_successful=min_successful, baseline=base, unmeasured=(unmeasured or {}).get(key)
        )
        out.levels[key] = verdict
        out.results.extend(results)
        for r in results:
            if r.status == "fail":
                extra = f" ({r.note})" if r.note else ""
                out.reasons.append(f"{key}: {r.check} failed: measured {_fmt(r.measured)}{extra}")
        if verdict == "inconclusive":
            successes = int(metrics.get("successful_requests") or 0)
            notes = sorted({r.note for r in results if r.status == "inconclusive" and r.note})
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
    """Outcome of the capacity search (concurrency).

    The search settles values near the boundary by repeating them (see :func:`ladder_search`):
    ``max_concurrency`` (= ``low``) met the checks on every measurement, ``high`` is the highest
    value not settled as missing them; the capacity lies in ``[low, high]``.

    Attributes:
        max_concurrency: Highest concurrency that met every check on every measurement (0 when
            even the lowest did not).
        tried: Decision per concurrency measured, in the order first tried: ``pass`` (met on every
            measurement), ``fail`` (missed on every one), ``inconclusive`` (mixed).
        bounded: True when the upper bound itself passed (the real capacity may be higher).
        low: The interval's low end (= ``max_concurrency``).
        high: The interval's high end: the highest concurrency not settled as failing.
        measurements: Every measurement's verdict per concurrency.
        settled: The search ended with both ends settled, within its measurement budget.
    """

    max_concurrency: int
    tried: dict[int, Decision] = field(default_factory=dict)
    bounded: bool = False
    low: int = 0
    high: int = 0
    measurements: dict[int, list[Decision]] = field(default_factory=dict)
    settled: bool = True


@dataclass
class RateCapacityResult:
    """Outcome of the request-rate capacity search (open loop), like :class:`CapacityResult`.

    Attributes:
        max_request_rate: Highest rate (requests/s) that met every check on every measurement
            (0.0 when even the lowest rung did not).
        low: The interval's low end (= ``max_request_rate``).
        high: The highest rate not settled as failing.
        step: The ladder's resolution (requests/s).
        tried: Decision per rate, in the order first tried.
        measurements: Every measurement's verdict per rate.
        bounded: The ladder's top rate passed (the real capacity may be higher).
        settled: Both ends settled within the budget.
    """

    max_request_rate: float
    low: float = 0.0
    high: float = 0.0
    step: float = 0.0
    tried: dict[float, Decision] = field(default_factory=dict)
    measurements: dict[float, list[Decision]] = field(default_factory=dict)
    bounded: bool = False
    settled: bool = True


@dataclass
class LadderResult:
    """Indexes into the ladder that :func:`ladder_search` settled.

    Attributes:
        low: Highest index that met the checks on every measurement (-1: none).
        high: Highest index not settled as failing (the interval's top).
        measurements: Verdicts per index, in the order the search first looked at each.
        settled: Finished within the budget.
    """

    low: int
    high: int
    measurements: dict[int, list[Decision]]
    settled: bool


async def ladder_search(
    passes: Callable[[int], Awaitable[bool]],
    size: int,
    *,
    repeats: int,
    max_measurements: int,
    known: Mapping[int, bool] | None = None,
) -> LadderResult:
    """The highest rung of a ladder (load that grows with the index) that meets the SLO, with an interval.

    Measurements near the boundary are noisy, so a rung is *met* only when ``repeats``
    measurements all pass and *missed* only when ``repeats`` all fail; a mixed rung is neither.
    Two bisections run over the same cache of measurements: one for the highest met rung
    (``low``; a failing measurement stops a rung's repeats at once), one for the lowest missed
    rung above it (a passing one stops them); the capacity lies between ``low`` and the missed
    rung less one (``high``). With ``repeats=1`` this is a plain bisection. At most
    ``max_measurements`` new measurements are made; when they run out, the interval holds what
    was settled (``settled`` False).

    Args:
        passes: Measures rung ``i`` once; True when every check is met.
        size: Rungs (indexes 0 .. size-1).
        repeats: Measurements that settle a rung.
        max_measurements: Budget of new measurements.
        known: One measurement per rung already made (counted as its first).

    Returns:
        The settled indexes and every verdict.
    """
    runs: dict[int, list[bool]] = {i: [ok] for i, ok in (known or {}).items()}
    looked: list[int] = []
    budget = max_measurements

    class _Spent(Exception):
        pass

    async def measure(i: int) -> bool:
        nonlocal budget
        if budget <= 0:
            raise _Spent
        budget -= 1
        ok = await passes(i)
        runs.setdefault(i, []).append(ok)
        return ok

    async def met(i: int) -> bool:
        if i not in looked:
            looked.append(i)
        seen = runs.get(i, [])
        while len(seen) < repeats and all(seen):
            await measure(i)
            seen = runs[i]
        return len(seen) >= repeats and all(seen)

    async def missed(i: int) -> bool:
        if i not in looked:
            looked.append(i)
        seen = runs.get(i, [])
        while len(seen) < repeats and not any(seen):
            await measure(i)
            seen = runs[i]
        return len(seen) >= repeats and not any(seen)

    async def bisect(good: int, bad: int, holds) -> tuple[int, int]:
        """Narrows ``good < bad`` (``holds`` true at good, false at bad) until they are adjacent."""
        while bad - good > 1:
            mid = (good + bad) // 2
            if await holds(mid):
                good = mid
            else:
                bad = mid
        return good, bad

    last = size - 1
    low, top, settled = -1, last, True
    try:
        # The highest met rung: bisect between a met rung and one that is not.
        if await met(0):
            low = 0
            if await met(last):
                low = last
            else:
                low, _ = await bisect(low, last, met)
        # The lowest missed rung above it: bisect between a rung not missed and a missed one.
        if low < last:
            lo = low
            hi = None
            # Start from the lowest rung already seen failing (the first bisection's bracket).
            for i in [*sorted(i for i, seen in runs.items() if i > low and not any(seen)), last]:
                if await missed(i):
                    hi = i
                    break
                lo = max(lo, i)
            if hi is not None:

                async def not_missed(i: int) -> bool:
                    return not await missed(i)

                _, hi = await bisect(lo, hi, not_missed)
                top = hi - 1
    except _Spent:
        settled = False
        # What is settled so far: the lowest rung known missed bounds the interval from above.
        missed_rungs = [i for i, seen in runs.items() if len(seen) >= repeats and not any(seen) and i > low]
        top = min(missed_rungs) - 1 if missed_rungs else last
    verdicts = {i: ["pass" if ok else "fail" for ok in runs[i]] for i in looked if i in runs}
    return LadderResult(low, max(top, low), verdicts, settled)  # type: ignore[arg-type]


def _decision(seen: Sequence[Decision]) -> Decision:
    if all(v == "pass" for v in seen):
        return "pass"
    if all(v == "fail" for v in seen):
        return "fail"
    return "inconclusive"


async def capacity_search(
    measure: Callable[[int], Awaitable[Mapping[str, MetricValue]]],
    checks: Sequence[Check],
    *,
    min_successful: int,
    low: int = 1,
    high: int,
    known: Mapping[int, Mapping[str, MetricValue]] | None = None,
    repeats: int = 1,
    max_measurements: int = 1000,
) -> CapacityResult:
    """Searches for the highest concurrency meeting every (non-baseline) check, with an interval.

    Assumes the checks get harder to meet as concurrency grows (latency rises with load). A
    measurement passes only when :func:`judge_level` says ``pass``; inconclusive counts as not
    passing. Near the boundary each concurrency is measured up to ``repeats`` times
    (:func:`ladder_search`); ``repeats=1`` is a plain bisection.

    Args:
        measure: Runs the load at one concurrency and returns its aggregates.
        checks: The checks (baseline checks are ignored here).
        min_successful: Successful requests needed to judge.
        low: Lowest concurrency considered.
        high: Highest concurrency considered.
        known: Aggregates already measured, by concurrency (their first measurement).
        repeats: Measurements that settle a concurrency.
        max_measurements: Budget of new measurements.

    Returns:
        The highest concurrency met on every measurement, the interval and what was tried.
    """
    if high < low:
        raise ValueError(f"capacity search needs low <= high, got {low} > {high}")
    own = [c for c in checks if not c.baseline]
    values = list(range(low, high + 1))

    def ok(concurrency: int, metrics: Mapping[str, MetricValue]) -> bool:
        verdict, _ = judge_level(f"c{concurrency}", metrics, own, min_successful=min_successful)
        return verdict == "pass"

    async def passes(i: int) -> bool:
        return ok(values[i], await measure(values[i]))

    first = {c - low: ok(c, m) for c, m in (known or {}).items() if low <= c <= high}
    found = await ladder_search(passes, len(values), repeats=repeats, max_measurements=max_measurements, known=first)
    seen = {values[i]: v for i, v in found.measurements.items()}
    tried = {c: _decision(v) for c, v in seen.items()}
    cap = values[found.low] if found.low >= 0 else 0
    top = values[found.high] if found.high >= 0 else 0
    return CapacityResult(
        cap,
        tried,
        bounded=found.low == len(values) - 1,
        low=cap,
        high=top,
        measurements={c: seen[c] for c in tried},
        settled=found.settled,
    )


def rate_ladder(max_rate: float, steps: int) -> list[float]:
    """The rates a rate search tries: ``max_rate * k / steps`` for k = 1 .. steps (rounded to 1e-6)."""
    return [round(max_rate * k / steps, 6) for k in range(1, steps + 1)]


async def rate_capacity_search(
    measure: Callable[[float], Awaitable[Mapping[str, MetricValue]]],
    checks: Sequence[Check],
    *,
    min_successful: int,
    max_rate: float,
    steps: int,
    repeats: int = 1,
    max_measurements: int = 1000,
) -> RateCapacityResult:
    """Searches for the highest open-loop request rate meeting every (non-baseline) check.

    The same search as :func:`capacity_search` over the ladder :func:`rate_ladder`.

    Args:
        measure: Runs the load at one request rate (requests/s) and returns its aggregates.
        checks: The checks (baseline checks are ignored here).
        min_successful: Successful requests needed to judge.
        max_rate: The ladder's top rate.
        steps: Rungs.
        repeats: Measurements that settle a rate.
        max_measurements: Budget of new measurements.

    Returns:
        The highest rate met on every measurement, its interval and what was tried.
    """
    own = [c for c in checks if not c.baseline]
    values = rate_ladder(max_rate, steps)

    async def passes(i: int) -> bool:
        verdict, _ = judge_level(f"rate{values[i]:g}", await measure(values[i]), own, min_successful=min_successful)
        return verdict == "pass"

    found = await ladder_search(passes, len(values), repeats=repeats, max_measurements=max_measurements)
    seen = {values[i]: v for i, v in found.measurements.items()}
    tried = {r: _decision(v) for r, v in seen.items()}
    cap = values[found.low] if found.low >= 0 else 0.0
    top = values[found.high] if found.high >= 0 else 0.0
    return RateCapacityResult(
        cap,
        low=cap,
        high=top,
        step=values[0],
        tried=tried,
        measurements={r: seen[r] for r in tried},
        bounded=found.low == len(values) - 1,
        settled=found.settled,
    )
