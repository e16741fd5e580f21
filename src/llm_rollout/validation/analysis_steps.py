"""A canary step's hold and live analysis, as stepped promotion runs it (both platforms).

:func:`analyse_step` holds the step and repeats an inconclusive analysis while a whole one fits
before the step's deadline (never promoting on "could not tell"); :func:`run_step` builds the
step's :class:`~llm_rollout.validation.analysis.LiveAnalysis` from the spec; :func:`step_metrics`,
:func:`step_lines` and :func:`live_record` give what the KFP Metrics, the step log and
``llm-rollout status`` show. Judging one analysis is :mod:`llm_rollout.validation.analysis`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llm_rollout.urls import redact_url
from llm_rollout.validation.analysis import AnalysisResult, LiveAnalysis, config_from_spec, describe
from llm_rollout.validation.answers import Answer, Evidence
from llm_rollout.validation.promql import selectors_for

if TYPE_CHECKING:
    from llm_rollout.spec import RolloutSpec


@dataclass
class StepAnalysis:
    """A step's hold and analysis: every attempt (an inconclusive one is repeated) and the answer."""

    step: int
    weight: int
    held_s: float
    attempts: list[AnalysisResult]
    answer: Answer

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (the promote step's output, the report, ``llm-rollout status``)."""
        return {
            "step": self.step, "weight": self.weight, "held_s": self.held_s, "decision": self.answer.decision,
            "attempts": [a.to_dict() for a in self.attempts], "answer": self.answer.to_dict(),
        }  # fmt: skip


def analyse_step(
    make: Callable[[], LiveAnalysis],
    *,
    hold_s: float,
    deadline_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> StepAnalysis:
    """Holds the step ``hold_s``, then analyses it; an inconclusive analysis is repeated while a whole
    one still fits before ``deadline_s`` (from the step's start), and the step is never promoted on it.

    ``pass``: the next step may go on. ``fail`` (a failed analysis, Prometheus unreachable): roll back
    at once. ``inconclusive`` at the deadline: the step ends without promoting, with every attempt's
    reasons.
    """
    started = clock()
    if hold_s > 0:
        sleep(hold_s)
    attempts: list[AnalysisResult] = []
    while True:
        analysis = make()
        attempts.append(analysis.run())
        last = attempts[-1]
        length = analysis.config.interval_s * analysis.config.count + 1.5
        if last.answer.decision != "inconclusive" or clock() - started + length > deadline_s:
            break
        log_line = "; ".join(last.answer.reasons[:2])
        logging.getLogger(__name__).info("step %d: analysis inconclusive, holding: %s", last.step, log_line)
    held = clock() - started
    answer = last.answer
    if answer.decision == "inconclusive":
        answer = Answer(
            key=answer.key,
            decision="inconclusive",
            question=answer.question,
            against=answer.against,
            said="held, not promoted",
            evidence=answer.evidence,
            reasons=[
                f"step {last.step} ({last.weight} %): live analysis inconclusive in {len(attempts)} attempt(s); held "
                f"{held:.0f} s until the step's deadline ({deadline_s:g} s) and not promoted",
                *answer.reasons,
            ],
        )
    return StepAnalysis(last.step, last.weight, held, attempts, answer)


def step_metrics(step: StepAnalysis) -> dict[str, float]:
    """The step's KFP Metrics: ``analysis_step<N>_ok`` (1 pass, 0 fail, -1 inconclusive), the requests
    seen per side and each ratio with its interval at the last look (unmeasured ratios are left out,
    never written as a number)."""
    prefix = f"analysis_step{step.step}"
    out: dict[str, float] = {
        f"{prefix}_ok": {"pass": 1.0, "fail": 0.0, "inconclusive": -1.0}[step.answer.decision],
        f"{prefix}_weight_percent": float(step.weight),
        f"{prefix}_attempts": float(len(step.attempts)),
    }
    for ev in step.answer.evidence:
        if ev.value is None:
            continue
        out[f"{prefix}_{ev.name}"] = float(ev.value)
        if ev.low is not None and ev.high is not None:
            out[f"{prefix}_{ev.name}_low"] = float(ev.low)
            out[f"{prefix}_{ev.name}_high"] = float(ev.high)
    return out


def not_run(reason: str) -> Answer:
    """The answer when no live analysis ran (no ``validation.analysis.prometheus_url``): inconclusive is
    wrong there (the step promotes as before), so it is a pass that says so."""
    return Answer(
        key="analysis",
        decision="pass",
        question="do the users served by the candidate fare no worse?",
        said="not run",
        evidence=[Evidence(name="analysis", value=None, unmeasured=reason, line=f"no live analysis ran: {reason}")],
        summarized=False,
    )


NO_PROMETHEUS = "validation.analysis.prometheus_url is not set"


def no_analysis_note(spec: RolloutSpec) -> str:
    """Why a stepped promotion runs without live analysis ("" when some step is analysed)."""
    if not spec.canary.steps:
        return ""
    if not spec.validation.analysis.prometheus_url:
        return f"no live analysis ran: {NO_PROMETHEUS} (the steps promote on the gate alone)"
    if not any(not isinstance(s, int) and s.analysis is not None for s in spec.canary.steps):
        return "no live analysis ran: no step of canary.steps has an analysis"
    return ""


def run_step(
    spec: RolloutSpec,
    percent: int,
    *,
    flavor: str,
    candidate: str,
    stable: str,
    namespace: str = "",
    token: str = "",
) -> StepAnalysis | None:
    """Holds and analyses the step of ``canary.steps`` with weight ``percent``, after the platform
    applied that weight (None: the step has no analysis, or no ``prometheus_url``).

    ``flavor`` is the platform's (``auto`` in the step's analysis resolves to it); ``candidate`` and
    ``stable`` name each side's workload (:func:`default_selector`). Rerun-safe: nothing is stored
    between attempts, so a promote step rerun after a crash analyses the step it was in again.
    """
    url = spec.validation.analysis.prometheus_url
    step = spec.canary.step_at(percent)
    if step.analysis is None or not url:
        return None
    a = step.analysis
    index = spec.canary.weights.index(percent)
    config = config_from_spec(a, url, field=f"canary.steps[{index}].analysis", token=token)
    cand, stab = selectors_for(
        a,
        flavor if a.flavor == "auto" else a.flavor,  # type: ignore[arg-type]
        namespace=namespace,
        candidate=candidate,
        stable=stable,
    )
    logging.getLogger(__name__).info(
        "step %d (%d %%): live analysis on %s, candidate {%s}, stable {%s}",
        index + 1, percent, redact_url(url), cand, stab,
    )  # fmt: skip
    done = analyse_step(
        lambda: LiveAnalysis(config, candidate=cand, stable=stab, step=index + 1, weight=percent),
        hold_s=step.hold_s,
        deadline_s=a.deadline_s,
    )
    for seen in _RECORDED.get():
        seen.append(done)
    return done


_RECORDED: ContextVar[tuple[list[StepAnalysis], ...]] = ContextVar("recorded_steps", default=())


@contextlib.contextmanager
def recorded_steps() -> Iterator[list[StepAnalysis]]:
    """Every step :func:`run_step` analyses inside the block, in order, whether the promotion went
    on or stopped and rolled back (an error leaves the list as far as it got): what promote-model's
    Metrics and step-analysis report are rendered from (steps.py), and what each platform records
    with the promotion (its own block inside that one; each block gets every step run inside it)."""
    seen: list[StepAnalysis] = []
    token = _RECORDED.set((*_RECORDED.get(), seen))
    try:
        yield seen
    finally:
        _RECORDED.reset(token)


def step_lines(step: StepAnalysis) -> list[str]:
    """A step's analysis for the step log, the promotion record and ``llm-rollout status``: the
    answer's first reasons, then each interval of the last attempt (:func:`describe`)."""
    head = f"step {step.step} ({step.weight} %): live analysis {step.answer.word} after {step.held_s:.0f} s"
    lines = [head, *(f"  {r}" for r in step.answer.reasons[:3])]
    if step.attempts:
        lines += describe(step.attempts[-1])[1:]
    return lines


RECORD_LINES = 40
"""Lines of the steps' analyses kept in the promotion record (the Lease annotation stays small)."""


def live_record(steps: list[StepAnalysis]) -> dict[str, Any]:
    """The promotion record's extra fields for the steps' analyses ({} without any): ``analysis`` (the
    lines :func:`llm_rollout.platform.format_status` prints) and ``analysis_metrics`` (:func:`step_metrics`)."""
    if not steps:
        return {}
    lines = [line for step in steps for line in step_lines(step)]
    metrics = {k: v for step in steps for k, v in step_metrics(step).items()}
    return {"analysis": lines[:RECORD_LINES], "analysis_metrics": metrics}


def gate_answer(step: StepAnalysis) -> tuple[str, str]:
    """The step's analysis as the stepped promotion's gate reads it: ``(verdict, why)``; anything
    but ``pass`` rolls the canary back (an inconclusive step never promotes)."""
    return step.answer.decision, "; ".join(step.answer.reasons) or "live analysis passed"
