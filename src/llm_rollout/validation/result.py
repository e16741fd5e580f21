"""What a validation found: :class:`ValidationResult` with its :class:`LevelResult` and :class:`Phase` parts.

Plain data with its JSON form (:meth:`ValidationResult.to_dict`, what ``validation.json`` holds) and
the step's one-line ``summary``; :mod:`llm_rollout.validation.phases` fills it in and
:func:`~llm_rollout.validation.runner.validate` returns it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_rollout.spec import ValidationSpec
from llm_rollout.validation.answers import Answer, Decision, Verdict
from llm_rollout.validation.compare import StableComparison
from llm_rollout.validation.metrics import RequestRecord
from llm_rollout.validation.probes import Agreement, ProbeResult
from llm_rollout.validation.quality import QualityResult
from llm_rollout.validation.readiness import Readiness
from llm_rollout.validation.sizing import Sizing
from llm_rollout.validation.slo import CapacityResult, Judgement, RateCapacityResult
from llm_rollout.validation.summary import summary_line


@dataclass
class LevelResult:
    """One measured load level.

    Attributes:
        label: ``c<N>`` or ``rate<R>``.
        concurrency: Concurrency (closed loop) or in-flight cap (Poisson).
        request_rate: Poisson rate, None for closed loop.
        judged: The SLO checks apply to this level.
        truncated: The level's time bound ended it early.
        metrics: The aggregates (:func:`~llm_rollout.validation.metrics.calculate_metrics`); an
            unmeasured one is None.
        records: Every request's record.
        errors: Distinct error texts with their counts (at most :data:`~llm_rollout.validation.gate.MAX_ERROR_KINDS`).
        purpose: ``load``, ``capacity`` (measured by the capacity search) or ``baseline``.
        unmeasured: Series the client could not measure at this level, with why
            (:func:`~llm_rollout.validation.metrics.unmeasured_series`: ``tpot``, ``itl``).
    """

    label: str
    concurrency: int | None
    request_rate: float | None
    judged: bool
    truncated: bool
    metrics: dict[str, Any]
    records: list[RequestRecord] = field(default_factory=list, repr=False)
    errors: dict[str, int] = field(default_factory=dict)
    purpose: str = "load"
    unmeasured: dict[str, str] = field(default_factory=dict)

    def to_dict(self, *, with_requests: bool = False) -> dict[str, Any]:
        """Plain JSON data; the TTFT sample (for the distribution plot) always, records on request."""
        data = {
            "label": self.label,
            "concurrency": self.concurrency,
            "request_rate": self.request_rate,
            "judged": self.judged,
            "truncated": self.truncated,
            "purpose": self.purpose,
            "metrics": self.metrics,
            "errors": self.errors,
            "unmeasured": self.unmeasured,
            "ttft_ms": [r.ttft * 1000 for r in self.records if r.success],
        }
        if with_requests:
            data["requests"] = [r.to_dict() for r in self.records]
        return data


@dataclass
class Phase:
    """One phase's outcome (shown in the report).

    Attributes:
        name: ``readiness``, ``correctness``, ``baseline``, ``load``, ``capacity``, ``verdict``.
        status: ``ok``, ``fail`` or ``skipped``.
        seconds: How long it took.
        detail: One line about it.
    """

    name: str
    status: str
    seconds: float = 0.0
    detail: str = ""


KEY_LEVEL_METRICS: tuple[str, ...] = ("p95_ttft_ms", "p95_tpot_ms", "output_throughput_tok_s", "error_rate")
"""Per judged level, the numbers :meth:`ValidationResult.key_metrics` carries."""


@dataclass
class ValidationResult:
    """Everything a validation found.

    Attributes:
        verdict: ``pass``, ``fail`` or ``inconclusive`` - the pipeline promotes on ``pass`` only:
            ``gate.decision``, the worst answer.
        reasons: Why: every answer's reasons (``gate.reasons``): every failed check with its
            measured value, every failed question, every inconclusive level (empty on pass). Free
            of prompts and completions unless ``log_text``.
        metrics: Flat KFP metrics (unit in the name; see :func:`~llm_rollout.validation.summary.kfp_metrics`).
        report_paths: ``{"html", "json", "metrics"}`` paths when a report directory was given.
        url: The endpoint validated.
        model: The model name used.
        baseline_url: The baseline endpoint, if any.
        baseline_model: The baseline model name, if any.
        readiness: What readiness saw (None when it failed).
        correctness: Every probe's result.
        agreement: Greedy token agreement with the baseline (None without a baseline).
        levels: Every measured level of the new revision.
        baseline_levels: Levels measured on the baseline (for ratio checks).
        server: Server view per metrics role.
        judgement: Per-check results and per-level verdicts.
        capacity: The capacity search's outcome, when it ran.
        rate_capacity: The open-loop (request rate) capacity search's outcome, when it ran.
        sizing: Replicas and GPUs for ``scaling.expected_peak_rps``, when a peak was given and a
            capacity measured.
        workload: What the load sent (:meth:`~llm_rollout.validation.workload.Workload.describe`
            and its kind).
        comparison: The comparison with the stable revision, when one was given.
        quality: The quality question (likelihood of the reference texts), when it was asked.
        suite_paired: The suite's scored probes are judged against the stable revision's.
        pd: The llm-d proofs from the roles' metrics, when they ran: ``disaggregation`` and
            ``prefix_cache`` (each :meth:`~llm_rollout.validation.pd.Proof.to_dict`).
        gate: The gate's answers, one per question asked
            (:class:`~llm_rollout.validation.answers.Verdict`): the verdict, the reasons, the
            summary, the Metrics and the report are rendered from them.
        phases: Per-phase status and timing.
        started_at: ISO time the validation began.
        seconds: Its duration.
        spec: The validation spec used.
    """

    verdict: Decision
    reasons: list[str]
    metrics: dict[str, float]
    report_paths: dict[str, Path]
    url: str
    model: str
    baseline_url: str | None = None
    baseline_model: str | None = None
    readiness: Readiness | None = None
    correctness: list[ProbeResult] = field(default_factory=list)
    agreement: Agreement | None = None
    levels: list[LevelResult] = field(default_factory=list)
    baseline_levels: list[LevelResult] = field(default_factory=list)
    server: dict[str, dict[str, Any]] = field(default_factory=dict)
    judgement: Judgement | None = None
    capacity: CapacityResult | None = None
    rate_capacity: RateCapacityResult | None = None
    sizing: Sizing | None = None
    workload: dict[str, Any] = field(default_factory=dict)
    comparison: StableComparison | None = None
    quality: QualityResult | None = None
    suite_paired: bool = False
    pd: dict[str, Any] = field(default_factory=dict)
    gate: Verdict = field(default_factory=Verdict)
    phases: list[Phase] = field(default_factory=list)
    started_at: str = ""
    seconds: float = 0.0
    spec: ValidationSpec | None = None

    @property
    def passed(self) -> bool:
        """Whether the verdict is ``pass``."""
        return self.verdict == "pass"

    @property
    def questions(self) -> list[Answer]:
        """The answers the summary line names (the questions a reader asks), in the gate's order."""
        return [a for a in self.gate.answers if a.summarized]

    @property
    def summary(self) -> str:
        """The step's ``summary`` output (:func:`~llm_rollout.validation.summary.summary_line`).

        The first line answers each question asked, e.g. ``fail: comparison with the stable
        revision: inferior (recovery: not asked; slo: met)``; then one line per reason.
        """
        return summary_line(self.gate, [lv.label for lv in self.levels if lv.judged])

    def key_metrics(self) -> dict[str, float]:
        """The headline numbers a summary shows and a promotion records, by name, never by a fragment.

        The judged levels' :data:`KEY_LEVEL_METRICS` (an unmeasured one is left out) and every number
        the questions' answers name (token agreement, the ratios with their intervals, quality,
        the capacity searches, the sizing).
        """
        out: dict[str, float] = {}
        for lv in self.levels:
            if lv.judged:
                for name in KEY_LEVEL_METRICS:
                    value = lv.metrics.get(name)
                    if value is not None:
                        out[f"{lv.label}_{name}"] = float(value)
        for answer in self.gate.answers:
            if answer.summarized or answer.key in ("capacity", "sizing"):
                for e in answer.evidence:
                    if e.level == "" or e.metric.endswith("_ratio_vs_baseline"):
                        out.update(e.metrics())
        return out

    @property
    def report_html(self) -> Path | None:
        """The HTML report's path, if written."""
        return self.report_paths.get("html")

    @property
    def report_json(self) -> Path | None:
        """The full JSON's path, if written."""
        return self.report_paths.get("json")

    def level(self, label: str) -> LevelResult:
        """A measured level by label (``c10``)."""
        for lv in self.levels:
            if lv.label == label:
                return lv
        raise KeyError(f"no level {label!r}; measured: {[lv.label for lv in self.levels]}")

    def to_dict(self, *, with_requests: bool = False) -> dict[str, Any]:
        """Plain JSON data (what ``validation.json`` holds; per-request records with ``with_requests``)."""
        spec = self.spec.model_dump(mode="json") if self.spec is not None else None
        return {
            "verdict": self.verdict,
            "reasons": self.reasons,
            "summary": self.summary,
            "endpoint": {"url": self.url, "model": self.model},
            "baseline": {"url": self.baseline_url, "model": self.baseline_model} if self.baseline_url else None,
            "started_at": self.started_at,
            "seconds": self.seconds,
            "phases": [vars(p) for p in self.phases],
            "readiness": vars(self.readiness) if self.readiness else None,
            "correctness": [p.to_dict() for p in self.correctness],
            "agreement": vars(self.agreement) if self.agreement else None,
            "levels": [lv.to_dict(with_requests=with_requests) for lv in self.levels],
            "baseline_levels": [lv.to_dict(with_requests=with_requests) for lv in self.baseline_levels],
            "server": self.server,
            "judgement": self.judgement.to_dict() if self.judgement else None,
            "capacity": vars(self.capacity) if self.capacity else None,
            "rate_capacity": vars(self.rate_capacity) if self.rate_capacity else None,
            "sizing": self.sizing.to_dict() if self.sizing else None,
            "workload": self.workload,
            "comparison": self.comparison.to_dict() if self.comparison else None,
            "quality": self.quality.to_dict() if self.quality else None,
            "suite_paired": self.suite_paired,
            "pd": self.pd,
            "answers": [a.to_dict() for a in self.gate.answers],
            "metrics": self.metrics,
            "spec": spec,
        }
