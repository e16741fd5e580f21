"""The gate's phases: each asks one question and returns its typed :class:`~llm_rollout.validation.answers.Answer`.

In order (:func:`run_phases`): :func:`readiness_phase`, :func:`correctness_phase`,
:func:`recovery_phase` (the original's readiness and greedy token agreement), then the measuring
phases of :mod:`llm_rollout.validation.load_phases` (the load levels with the server's
``/metrics`` around them and the llm-d proofs, the original's load for ratio checks, the capacity
searches, the sizing for the stated peak); then, from
:mod:`llm_rollout.validation.runner`, :func:`quality_phase` (likelihood of reference texts against
the stable revision and the floor of guessing), :func:`compare_stable` (the comparison with the
stable revision, which also pairs the suite's scored probes) and :func:`judge_phase` (the SLO and
recovery's ratio checks over the judged levels).

Each phase adds its answer to the run's :class:`~llm_rollout.validation.answers.Verdict` (its
reasons are the step's summary lines) and one :class:`~llm_rollout.validation.result.Phase` line
(timing) to the result; the run's state is :class:`~llm_rollout.validation.gate.Run`. The
answers are built from the phases' typed findings by the
``*_answer`` functions of :mod:`llm_rollout.validation.summary`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx

from llm_rollout.errors import RolloutError
from llm_rollout.validation.answers import Answer
from llm_rollout.validation.client import Endpoint
from llm_rollout.validation.compare import compare_with_stable
from llm_rollout.validation.gate import AGREEMENT_MAX_TOKENS, REPLAY_LABEL, LogFn, Run, Targets  # noqa: F401
from llm_rollout.validation.load import make_prompts
from llm_rollout.validation.load_phases import (
    baseline_load_phase,
    capacity_phase,
    load_phase,
    sizing_phase,
)
from llm_rollout.validation.probes import SMOKE_PROMPTS, failure_line, run_smoke, run_suite, tally_line, token_agreement
from llm_rollout.validation.quality import ReferenceTexts, ask_quality
from llm_rollout.validation.readiness import check_readiness
from llm_rollout.validation.slo import Check, judge
from llm_rollout.validation.summary import (
    comparison_answer,
    correctness_answer,
    inconclusive_lines,
    quality_answer,
    readiness_answer,
    recovery_answer,
    slo_answer,
)


async def run_phases(run: Run, t: Targets) -> None:
    """The measuring phases in order; a readiness failure ends them (nothing else can be asked)."""
    if (await readiness_phase(run, t)).decision == "fail":
        return
    await correctness_phase(run, t)
    if t.base is not None:
        await recovery_phase(run, t)
    await load_phase(run, t)
    if t.base is not None and t.base_checks and run.base_ready and not run.server_gone:
        await baseline_load_phase(run, t)
    if not run.server_gone:
        await capacity_phase(run, t)
    if run.sizing is not None and (run.result.capacity is not None or run.result.rate_capacity is not None):
        sizing_phase(run)


async def readiness_phase(run: Run, t: Targets) -> Answer:
    """Is it up? The model listed and one streamed completion within ``readiness_timeout_s``."""
    spec, res = run.spec, run.result
    started = time.monotonic()
    try:
        res.readiness = await check_readiness(
            t.client, t.endpoint, timeout_s=spec.readiness_timeout_s, api=spec.load.endpoint, log=run.log
        )
    except RolloutError as err:
        run.phase("readiness", "fail", started, str(err))
        return run.answer(readiness_answer(None, str(err)))
    run.phase("readiness", "ok", started, f"serves {', '.join(res.readiness.served_models)}")
    return run.answer(readiness_answer(res.readiness))


async def correctness_phase(run: Run, t: Targets) -> Answer | None:
    """Does it answer the suite? Must-pass probes each; scored probes as a proportion.

    Must-pass probes (the smoke checks, probes marked so) fail the gate on their own; scored
    probes are judged against the stable revision's item by item when the comparison runs
    (:func:`compare_stable` completes this answer), else against ``validation.suite_min_score``.
    """
    spec, res = run.spec, run.result
    started = time.monotonic()
    if spec.smoke_suite:
        res.correctness += await run_smoke(t.client, t.endpoint, chat=spec.load.endpoint == "chat")
    res.correctness += await run_suite(t.client, t.endpoint, t.probes)
    bad = [p for p in res.correctness if not p.passed]
    for p in res.correctness:
        if spec.log_text:
            run.log(f"validate: probe {p.name}: prompt={p.prompt!r} completion={p.text!r} passed={p.passed}")
    scored = [p for p in res.correctness if not p.must_pass]
    scored_right = sum(1 for p in scored if p.passed)
    below_bar = bool(scored) and not run.suite_paired and scored_right < spec.suite_min_score * len(scored)
    failing = [p for p in bad if p.must_pass or below_bar]
    reasons = []
    for p in failing:
        detail = "; ".join(p.failures) if spec.log_text else ", ".join(p.failed_checks())
        reasons.append(f"correctness: {failure_line(p.name, detail)}")
    if below_bar and spec.suite_min_score < 1:
        reasons.append(
            f"correctness: the suite scored {scored_right}/{len(scored)}, below validation.suite_min_score "
            f"{spec.suite_min_score:g}"
        )
    if not res.correctness:
        run.phase("correctness", "skipped", started, "no smoke suite and no probes")
        return None
    detail = tally_line(len(res.correctness) - len(bad), len(res.correctness))
    if scored and run.suite_paired:
        detail += f"; {scored_right}/{len(scored)} scored probes right, judged against the stable revision's"
    run.phase("correctness", "fail" if failing else "ok", started, detail)
    answer = correctness_answer(
        res.correctness, suite_paired=run.suite_paired, suite_min_score=spec.suite_min_score, reasons=reasons
    )
    return run.answer(answer)


def _recovery(run: Run, ratio_checks: Sequence[Any] = (), ratio_reasons: Sequence[str] = ()) -> Answer:
    res, need = run.result, run.spec.recovery.min_token_agreement
    return run.answer(
        recovery_answer(
            res.baseline_url or "",
            agreement=res.agreement.agreement if res.agreement else None,
            min_token_agreement=need,
            ratio_checks=ratio_checks,
            reasons=[*run.recovery_reasons, *ratio_reasons],
        )
    )


async def recovery_phase(run: Run, t: Targets) -> Answer:
    """Did compression keep the model? The original's readiness and greedy token agreement with it.

    Its ratio checks (``validation.recovery.checks``) are judged with the SLO's, in :func:`judge_phase`.
    """
    assert t.base is not None
    spec, res = run.spec, run.result
    base_ep, base_client = t.base
    started = time.monotonic()
    try:
        await check_readiness(base_client, base_ep, timeout_s=spec.readiness_timeout_s, api=spec.load.endpoint)
        run.base_ready = True
    except RolloutError as err:
        run.recovery_reasons += inconclusive_lines([f"baseline {base_ep.base_url} not usable: {err}"])
        run.phase("baseline", "fail", started, str(err))
    if run.base_ready:
        prompts = [p.prompt for p in t.probes if not p.chat] or list(SMOKE_PROMPTS)
        res.agreement = await token_agreement(
            t.client, t.endpoint, base_client, base_ep, prompts, max_tokens=AGREEMENT_MAX_TOKENS
        )
        value = res.agreement.agreement
        if value is None:
            run.recovery_reasons += inconclusive_lines(["token agreement with the baseline could not be measured"])
        elif value < spec.recovery.min_token_agreement:
            run.recovery_reasons.append(
                f"recovery: greedy token agreement with the original {value:.3f} < "
                f"{spec.recovery.min_token_agreement:g} (validation.recovery.min_token_agreement)"
            )
        run.phase("baseline", "ok", started, f"token agreement {'-' if value is None else f'{value:.3f}'}")
    return _recovery(run)


async def compare_stable(
    run: Run,
    t: Targets,
    stable_ep: Endpoint,
    stable_client: httpx.AsyncClient,
) -> Answer:
    """Is it at least as good as what serves now? The comparison with the stable revision.

    It also pairs the suite's scored probes with the stable's: the correctness answer is completed
    with that evidence (its reasons are the comparison's).
    """
    spec, load = run.spec, run.spec.load
    started = time.monotonic()
    run.log(
        f"validate: comparison with the stable revision at {stable_ep.base_url}: rounds of "
        f"{spec.comparison.round_requests} requests at concurrency {spec.comparison.concurrency}, "
        f"blocks of 4 rounds (candidate, stable, stable, candidate), {spec.comparison.min_blocks}-"
        f"{spec.comparison.max_blocks} blocks"
    )
    result = await compare_with_stable(
        spec.comparison,
        candidate=(t.client, t.endpoint),
        stable=(stable_client, stable_ep),
        candidate_suite=run.result.correctness,
        probes=t.probes,
        smoke=spec.smoke_suite,
        chat=load.endpoint == "chat",
        prompts=make_prompts(max(spec.comparison.round_requests, 1), load.input_words, seed=2),
        api=load.endpoint,
        output_tokens=spec.comparison.output_tokens,
        readiness_timeout_s=spec.readiness_timeout_s,
        max_duration_s=load.max_duration_s,
        log=run.log,
    )
    run.result.comparison = result
    correctness = run.gate.answer("correctness")
    if correctness is not None:
        run.answer(
            correctness_answer(
                run.result.correctness,
                paired=result.quality,
                suite_paired=run.suite_paired,
                suite_min_score=spec.suite_min_score,
                reasons=correctness.reasons,
            )
        )
    answer = run.answer(comparison_answer(result))
    status = {"fail": "fail", "inconclusive": "inconclusive"}.get(answer.decision, "ok")
    run.phase("comparison", status, started, f"{result.said} after {result.blocks} blocks")
    return answer


async def quality_phase(
    run: Run,
    t: Targets,
    stable: tuple[httpx.AsyncClient, Endpoint] | None,
    texts: ReferenceTexts,
) -> Answer:
    """Does it model the reference texts as well? (likelihood against the stable and the floor of guessing)."""
    spec = run.spec.quality
    started = time.monotonic()
    against = f"the stable revision at {stable[1].base_url}" if stable else "uniform guessing (no stable revision)"
    run.log(
        f"validate: quality: {len(texts.texts)} reference texts from {texts.source}, scored by likelihood "
        f"against {against}" + (f"; margin {spec.margin:g} bits per byte" if stable else "")
    )
    result = await ask_quality(spec, texts, candidate=(t.client, t.endpoint), stable=stable, log=run.log)
    run.result.quality = result
    answer = run.answer(quality_answer(result))
    status = {"fail": "fail", "inconclusive": "inconclusive"}.get(answer.decision, "ok")
    bpb = [f"candidate {result.candidate_bpb:.3f}" if result.candidate_bpb is not None else "candidate -"]
    if stable:
        bpb.append(f"stable {'-' if result.stable_bpb is None else f'{result.stable_bpb:.3f}'}")
    if result.uniform_bpb is not None:
        bpb.append(f"guessing {result.uniform_bpb:.3f}")
    run.phase("quality", status, started, f"{result.texts_scored} texts, bits per byte: {', '.join(bpb)}")
    return answer


def judge_phase(run: Run, checks: Sequence[Check], base_checks: Sequence[Check], judged_labels: set[str]) -> None:
    """The SLO's checks and recovery's ratio checks over the judged levels: the ``slo`` and ``recovery`` answers.

    Judged levels never reached are inconclusive (after a readiness failure there is no SLO
    answer: that failure says it all).
    """
    res = run.result
    if res.readiness is None:
        return
    judged = [lv for lv in res.levels if lv.judged]
    measured = {lv.label: lv.metrics for lv in judged}
    unmeasured = {lv.label: lv.unmeasured for lv in judged if lv.unmeasured}
    base = {lv.label: lv.metrics for lv in res.baseline_levels}
    min_successful = run.spec.slo.min_successful_requests
    slo = judge(
        measured,
        checks,
        min_successful=min_successful,
        missing_levels=sorted(judged_labels - measured.keys()),
        unmeasured=unmeasured,
    )
    res.judgement = slo
    run.answer(slo_answer(slo.results, slo.reasons, slo.verdict))
    if res.baseline_url:
        if base_checks:
            ratio = judge(measured, base_checks, min_successful=min_successful, baseline_levels=base or None)
            res.judgement.results += ratio.results
            # A recovery check's reason names its question (the run summary says which question failed).
            _recovery(run, ratio.results, [f"recovery: {r}" for r in ratio.reasons if r != "no level was judged"])
        else:
            _recovery(run)
