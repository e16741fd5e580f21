"""What a validation answered: each question's typed answer, the summary line and the KFP metrics.

The ``*_answer`` functions turn one phase's typed findings into its answer (the phases in
:mod:`llm_rollout.validation.phases` call them as each question is settled): the correctness
suite, recovery against the uncompressed original, the quality of the reference texts, the
comparison with the stable revision, the SLO, readiness, the load, the capacity searches, the
sizing and the llm-d proofs. :func:`summary_line` and :func:`kfp_metrics` render the answers (and
the raw measurements) for the step's outputs and KFP's ``Metrics`` artifact;
:mod:`llm_rollout.validation.report` renders the same answers in the HTML report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from llm_rollout.validation.answers import Answer, Decision, Evidence, Verdict, decision_of
from llm_rollout.validation.probes import ProbeResult, failure_line, tally_line
from llm_rollout.validation.stats import pct

if TYPE_CHECKING:
    from llm_rollout.validation.compare import StableComparison
    from llm_rollout.validation.pd import Proof
    from llm_rollout.validation.quality import QualityResult
    from llm_rollout.validation.readiness import Readiness
    from llm_rollout.validation.sizing import Sizing
    from llm_rollout.validation.slo import CapacityResult, CheckResult, RateCapacityResult

KFP_LEVEL_METRICS: tuple[str, ...] = (
    "successful_requests",
    "failed_requests",
    "error_rate",
    "request_throughput_req_s",
    "output_throughput_tok_s",
    "goodput_req_s",
    *(
        f"{stat}_{series}_ms"
        for series in ("ttft", "tpot", "itl", "e2el")
        for stat in ("mean", "p50", "p90", "p95", "p99")
    ),
)
"""Per-level metrics copied into the KFP ``Metrics`` artifact as ``<level>_<metric>``."""


# The gate's questions ---------------------------------------------------------------------------

QUESTION_CORRECTNESS = "Does it answer the correctness suite? (the suite's expected answers)"
QUESTION_RECOVERY = "Did compression keep the model? (against its uncompressed original)"
QUESTION_COMPARISON = "Is it at least as good as what serves now? (against the stable revision)"
QUESTION_QUALITY = "Does it model the reference texts as well? (likelihood, bits per byte)"
QUESTION_SLO = "Does it meet the SLO? (absolute thresholds)"

QUESTION_NAMES = {
    "correctness": "correctness suite",
    "quality": "quality of the reference texts",
    "recovery": "recovery against the original",
    "comparison": "comparison with the stable revision",
    "slo": "slo",
}
"""How the summary line names each question (a question not listed is named by its key)."""


def inconclusive_lines(reasons: Sequence[str]) -> list[str]:
    """Reasons a question could not be decided, as the summary lists them (``inconclusive: ...``)."""
    return [f"inconclusive: {r}" for r in reasons]


def correctness_answer(
    probes: Sequence[ProbeResult],
    *,
    paired: Mapping[str, Any] | None = None,
    suite_paired: bool = False,
    suite_min_score: float = 1.0,
    reasons: Sequence[str] = (),
) -> Answer:
    """The suite's answer: must-pass probes each, scored probes as a proportion.

    Args:
        probes: Every probe's result.
        paired: The comparison's pairing of the scored probes with the stable's
            (``StableComparison.quality``, McNemar's counts), when the comparison ran.
        suite_paired: The scored probes are judged against the stable's (a comparison is asked);
            without ``paired`` they are then not judged (another question failed first).
        suite_min_score: The share of scored probes needed on a first rollout.
        reasons: The phase's failure lines (the paired judgement's are the comparison's).

    Returns:
        ``correctness``: ``passed`` / ``failed`` / ``not judged``.
    """
    wrong = [p for p in probes if not p.passed]
    must_wrong = [p for p in wrong if p.must_pass]
    scored = [p for p in probes if not p.must_pass]
    right = sum(1 for p in scored if p.passed)
    evidence = [
        Evidence("correctness_passed", float(len(probes) - len(wrong)), metric="correctness_passed",
                 line=tally_line(len(probes) - len(wrong), len(probes))),
        Evidence("correctness_total", float(len(probes)), line="", metric="correctness_total"),
    ]  # fmt: skip
    evidence += [Evidence.note(failure_line(p.name, ", ".join(p.failed_checks()))) for p in wrong[:5]]
    if len(wrong) > 5:
        evidence.append(Evidence.note(f"... and {len(wrong) - 5} more"))
    paired = paired or {}
    ok: bool | None = not must_wrong
    if scored and ok:
        if "p_value" in paired:
            ok = bool(paired.get("ok"))
            n, alpha = paired.get("scored"), 1 - paired.get("confidence", 0.95)
            evidence.append(
                Evidence(
                    "correctness_mcnemar_p", paired.get("p_value"), confidence=paired.get("confidence"),
                    needed=f"> {alpha:.4g}",
                    line=f"scored probes against the stable's: candidate {paired.get('candidate_right')}/{n}, stable "
                    f"{paired.get('stable_right')}/{n}; only the stable right on {paired.get('only_stable')}, only the "
                    f"candidate on {paired.get('only_candidate')}: McNemar's exact p = {paired.get('p_value', 1):.4g} "
                    f"(fewer right beyond chance: p <= {alpha:.4g})",
                )
            )  # fmt: skip
        elif suite_paired:
            ok = None  # judged against the stable's, but the comparison did not run (the gate failed first)
            evidence.append(
                Evidence("correctness_scored_right", float(right),
                         line=f"scored probes: {right}/{len(scored)} right; not compared with the stable's")
            )  # fmt: skip
        else:
            ok = right >= suite_min_score * len(scored)
            evidence.append(
                Evidence("correctness_scored_right", float(right), needed=f">= {suite_min_score:g} of {len(scored)}",
                         line=f"scored probes: {right}/{len(scored)} right (needed {suite_min_score:g} of them, "
                         "suite_min_score)")
            )  # fmt: skip
    return Answer(
        "correctness", decision_of(ok), question=QUESTION_CORRECTNESS, against="the suite's expected answers",
        said={True: "passed", False: "failed", None: "not judged"}[ok], evidence=evidence, reasons=list(reasons),
    )  # fmt: skip


def recovery_answer(
    against: str,
    *,
    agreement: float | None,
    min_token_agreement: float | None,
    ratio_checks: Sequence[CheckResult] = (),
    reasons: Sequence[str] = (),
) -> Answer:
    """Recovery against the uncompressed original: greedy token agreement and the ratio checks.

    Args:
        against: The original's URL.
        agreement: Greedy token agreement (None: not measured).
        min_token_agreement: What was needed.
        ratio_checks: The ``*_ratio_vs_baseline`` checks at each judged level.
        reasons: The phase's and the ratio checks' lines.

    Returns:
        ``recovery``: ``kept`` / ``lost`` (outputs) / ``speed-up missed`` / ``inconclusive``.
    """
    evidence: list[Evidence] = []
    failed = unknown = outputs_lost = False
    if agreement is None:
        unknown = True
        evidence.append(Evidence("token_agreement_ratio", None, unmeasured="not measured",
                                 line="greedy token agreement: not measured"))  # fmt: skip
    else:
        ok = min_token_agreement is None or agreement >= min_token_agreement
        failed |= not ok
        outputs_lost = not ok
        needed = f">= {min_token_agreement:g}" if min_token_agreement is not None else ""
        evidence.append(
            Evidence("token_agreement_ratio", agreement, needed=needed, metric="token_agreement_ratio",
                     line=f"greedy token agreement {agreement:.3f}" + (f" (needed {needed})" if needed else ""))
        )  # fmt: skip
    for r in ratio_checks:
        evidence.append(_check_evidence(r, digits=".3f"))
        failed |= r.status == "fail"
        unknown |= r.status == "inconclusive"
    # "lost" only when the outputs were (token agreement); a missed speed-up with the same outputs
    # is said as such, not as a quality loss (issue 32).
    said = ("lost" if outputs_lost else "speed-up missed") if failed else "inconclusive" if unknown else "kept"
    return Answer(
        "recovery", decision_of(False if failed else None if unknown else True), question=QUESTION_RECOVERY,
        against=against, said=said, evidence=evidence, reasons=list(reasons),
    )  # fmt: skip


def _check_evidence(r: CheckResult, *, digits: str = ".4g") -> Evidence:
    """One check at one level: its measured value (or why it is unmeasured) and what it needed."""
    if r.measured is None:
        why = r.note if r.note and r.note != "not measured" else ""
        shown = "unmeasured" + (f", {why}" if why else "")
    else:
        shown = format(r.measured, digits)
    return Evidence(
        r.metric, r.measured, needed=r.check, level=r.level,
        unmeasured=(r.note or "not measured") if r.measured is None else "",
        line=f"{r.level}: {r.check}: {shown} ({r.status})",
        metric=f"{r.level}_{r.metric}" if r.metric.endswith("_ratio_vs_baseline") else "",
    )  # fmt: skip


def quality_answer(quality: QualityResult) -> Answer:
    """The quality question's answer (likelihood of the reference texts against the stable and guessing)."""
    q = quality
    evidence = [
        Evidence("quality_texts_scored", float(q.texts_scored), metric="quality_texts_scored",
                 line=f"{q.texts_scored} texts scored from {q.source}"),
        Evidence("quality_margin_bits_per_byte", float(q.margin or 0), metric="quality_margin_bits_per_byte"),
    ]  # fmt: skip
    if q.note:
        evidence.append(Evidence.note(q.note))
    sides = []
    for side, value in (("candidate", q.candidate_bpb), ("stable", q.stable_bpb)):
        if value is not None:
            sides.append(f"{side} {value:.3f}")
            evidence.append(Evidence(f"quality_{side}_bits_per_byte", value, metric=f"quality_{side}_bits_per_byte"))
    if sides:
        evidence.append(Evidence.note("bits per byte: " + ", ".join(sides)))
    comp = q.comparison
    if comp is not None:
        names = {
            "metric": "quality_difference_median_bits_per_byte",
            "metric_low": "quality_difference_low_bits_per_byte",
            "metric_high": "quality_difference_high_bits_per_byte",
        }
        if comp.ratio is None or comp.low is None or comp.high is None:
            evidence.append(
                Evidence("quality_difference_median_bits_per_byte", None, unmeasured=comp.note or "not measured",
                         line=f"candidate - stable per text: undecided ({comp.note or 'not measured'})", **names)
            )  # fmt: skip
        else:
            evidence.append(
                Evidence(
                    "quality_difference_median_bits_per_byte", comp.ratio, low=comp.low, high=comp.high,
                    confidence=comp.confidence, needed=f"<= {q.margin:+.4f}", **names,
                    line=f"candidate - stable per text: median {comp.ratio:+.4f} [{comp.low:+.4f}, {comp.high:+.4f}] "
                    f"at {pct(comp.confidence)}, needed <= {q.margin:+.4f} (validation.quality.margin), "
                    f"{q.looks} looks: " + comp.word,
                )
            )  # fmt: skip
    if q.uniform_bpb is not None:
        beaten = "beaten" if q.floor_ok else "NOT beaten"
        evidence.append(
            Evidence("quality_uniform_bits_per_byte", q.uniform_bpb, metric="quality_uniform_bits_per_byte",
                     line=f"floor: uniform guessing over {q.vocab_size} tokens = {q.uniform_bpb:.3f} bits per byte: "
                     f"{beaten}")
        )  # fmt: skip
    evidence += [Evidence.note(str(r)) for r in q.inconclusive]
    decision = q.decision
    if q.stable_url:
        against = q.stable_url
        said = {"pass": "non-inferior", "fail": "inferior"}.get(decision, "inconclusive")
        if q.floor_ok is False:
            said = "worse than guessing"
    else:
        against = "uniform guessing over its vocabulary"
        said = {"pass": "beats guessing", "fail": "worse than guessing"}.get(decision, "inconclusive")
    return Answer(
        "quality", decision, question=QUESTION_QUALITY, against=against, said=said, evidence=evidence,
        reasons=[*q.failures, *inconclusive_lines(q.inconclusive)],
    )  # fmt: skip


def comparison_answer(comparison: StableComparison) -> Answer:
    """The comparison with the stable revision: the suite side by side and non-inferiority of the speeds."""
    c = comparison
    evidence = [
        Evidence("vs_stable_not_worse", 1.0 if c.decision == "pass" else 0.0, metric="vs_stable_not_worse"),
        Evidence("vs_stable_blocks", float(c.blocks or 0), metric="vs_stable_blocks"),
    ]
    q = c.quality or {}
    if q:
        evidence.append(
            Evidence.note(
                f"quality: correctness suite passed by the candidate {q.get('candidate_passed')}/{q.get('total')}, "
                f"by the stable {q.get('stable_passed')}/{q.get('total')}"
            )
        )
    for s in c.speed:
        names = {
            "metric": f"vs_stable_{s.metric}_ratio", "metric_low": f"vs_stable_{s.metric}_low",
            "metric_high": f"vs_stable_{s.metric}_high",
        }  # fmt: skip
        if s.ratio is None or s.low is None or s.high is None:
            evidence.append(
                Evidence(s.metric, None, unmeasured=s.note or "not measured", **names,
                         line=f"{s.metric}: {s.word} ({s.note or 'not measured'})")
            )  # fmt: skip
            continue
        sign = "<=" if s.better == "lower" else ">="
        evidence.append(
            Evidence(
                s.metric, s.ratio, low=s.low, high=s.high, confidence=s.confidence, needed=f"{sign} {s.limit:.3f}",
                **names,
                line=f"{s.metric}: candidate/stable {s.ratio:.3f} [{s.low:.3f}, {s.high:.3f}] at {pct(s.confidence)}, "
                f"needed {sign} {s.limit:.3f}: " + s.word,
            )
        )  # fmt: skip
    decision = c.decision
    return Answer(
        "comparison", decision, question=QUESTION_COMPARISON, against=c.stable_url,
        said={"pass": "non-inferior", "fail": "inferior"}.get(decision, "inconclusive"), evidence=evidence,
        reasons=[*c.failures, *inconclusive_lines(c.inconclusive)],
    )  # fmt: skip


def slo_answer(checks: Sequence[CheckResult], reasons: Sequence[str], decision: Decision) -> Answer:
    """The SLO's answer: the absolute checks at every judged level.

    Args:
        checks: Every SLO check at every judged level (no ratio checks: those are recovery's).
        reasons: The judgement's lines (failed checks with their values, inconclusive levels).
        decision: The judgement's (:func:`~llm_rollout.validation.slo.judge`): fail when a level
            failed, inconclusive when one was or none was judged.

    Returns:
        ``slo``: ``met`` / ``missed`` / ``inconclusive``; named in the summary when a check was judged.
    """
    failed = [r for r in checks if r.status == "fail"]
    unknown = [r for r in checks if r.status == "inconclusive"]
    shown = failed or unknown or list(checks)
    return Answer(
        "slo", decision, question=QUESTION_SLO, against="slo.checks",
        said={"pass": "met", "fail": "missed"}.get(decision, "inconclusive"),
        evidence=[_check_evidence(r) for r in shown], reasons=list(reasons), summarized=bool(checks),
    )  # fmt: skip


def readiness_answer(readiness: Readiness | None, reason: str = "") -> Answer:
    """Readiness: the model listed and one streamed completion within the bound."""
    if readiness is None:
        return Answer("readiness", "fail", reasons=[f"readiness: {reason}"], summarized=False)
    return Answer(
        "readiness", "pass", summarized=False, against=", ".join(readiness.served_models),
        evidence=[Evidence("readiness_s", readiness.seconds, metric="readiness_s",
                           line=f"ready in {readiness.seconds:.1f} s")],
    )  # fmt: skip


def capacity_answer(capacity: CapacityResult | None, rate_capacity: RateCapacityResult | None) -> Answer:
    """The capacity searches' findings (never judged: evidence for sizing and the autoscaler's target)."""
    evidence: list[Evidence] = []
    if capacity is not None:
        evidence.append(
            Evidence("capacity_max_concurrency", float(capacity.max_concurrency), low=_num(capacity.low),
                     high=_num(capacity.high), metric="capacity_max_concurrency",
                     metric_low="capacity_max_concurrency_low", metric_high="capacity_max_concurrency_high",
                     line=f"highest concurrency meeting the SLO: {capacity.max_concurrency}")
        )  # fmt: skip
    if rate_capacity is not None:
        evidence.append(
            Evidence("capacity_max_request_rate_req_s", float(rate_capacity.max_request_rate),
                     low=_num(rate_capacity.low), high=_num(rate_capacity.high),
                     metric="capacity_max_request_rate_req_s", metric_low="capacity_max_request_rate_low_req_s",
                     metric_high="capacity_max_request_rate_high_req_s",
                     line=f"highest request rate meeting the SLO: {rate_capacity.max_request_rate:g} req/s")
        )  # fmt: skip
    return Answer("capacity", "pass", evidence=evidence, summarized=False)


def sizing_answer(sizing: Sizing) -> Answer:
    """Replicas and GPUs for the stated peak; a peak ``max_replicas`` cannot carry fails."""
    sz = sizing
    evidence = [
        Evidence("sizing_capacity_per_replica_req_s", sz.capacity_rps, low=sz.capacity_rps_low,
                 high=sz.capacity_rps_high, metric="sizing_capacity_per_replica_req_s", line=sz.source),
        Evidence("sizing_expected_peak_req_s", sz.expected_peak_rps, metric="sizing_expected_peak_req_s"),
        Evidence("sizing_replicas_needed", float(sz.replicas_needed), metric="sizing_replicas_needed",
                 needed=f"<= {sz.max_replicas} ({sz.field}.max_replicas)"),
        Evidence("sizing_gpus_needed", float(sz.gpus_needed), metric="sizing_gpus_needed"),
        Evidence("sizing_fits", 1.0 if sz.fits else 0.0, metric="sizing_fits"),
    ]  # fmt: skip
    reasons = [sz.reason] if not sz.fits and sz.reason else []
    return Answer("sizing", "pass" if sz.fits else "fail", evidence=evidence, reasons=reasons, summarized=False)


def proof_answer(name: str, proof: Proof) -> Answer:
    """An llm-d proof from the roles' counters (``disaggregation``, ``prefix_cache``)."""
    fail = proof.verdict == "fail"
    reasons = list(proof.reasons) if fail else inconclusive_lines(proof.reasons)
    # A proof with reasons is never a pass (as before: its reasons made the gate inconclusive).
    decision = "fail" if fail else "inconclusive" if proof.reasons or proof.verdict != "pass" else "pass"
    return Answer(name, decision, evidence=[Evidence.note(n) for n in proof.notes], reasons=reasons, summarized=False)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# The step's outputs ------------------------------------------------------------------------------


def summary_line(verdict: Verdict, judged_levels: Sequence[str]) -> str:
    """The step's ``summary``: which question failed, then one line per reason; or one pass line.

    The first line answers each question asked, e.g. ``fail: comparison with the stable
    revision: inferior (recovery: not asked; slo: met)``.
    """
    questions = [a for a in verdict.answers if a.summarized]
    reasons = verdict.reasons

    def name(a: Answer) -> str:
        return f"{QUESTION_NAMES.get(a.key, a.key.replace('_', ' '))}: {a.word}"

    if reasons:
        failed = [a for a in questions if a.decision == "fail"] or [
            a for a in questions if a.decision == "inconclusive"
        ]
        others = [a for a in questions if a not in failed]
        head = f"{verdict.decision}: " + ("; ".join(name(a) for a in failed) or "validation")
        if others:
            head += " (" + "; ".join(name(a) for a in others) + ")"
        return "\n".join([head, *reasons])
    head = f"pass: every check met at {', '.join(judged_levels) or 'no level'}"
    answers = [name(a) for a in questions if a.key != "slo"]
    return head + (f" ({'; '.join(answers)})" if answers else "")


def kfp_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The flat metrics for KFP's ``Metrics`` artifact (unit in every name, numbers only).

    The answers' evidence gives the judged numbers; the raw measurements (levels, the baseline's
    levels, the server view) are copied beside them.

    Args:
        result: ``ValidationResult.to_dict()`` (its ``answers`` are the gate's).

    Returns:
        ``verdict_pass`` (1/0), ``<question>_ok`` per question named in the summary (1 yes, 0 no,
        -1 inconclusive), every number the answers' evidence names (``readiness_s``,
        ``correctness_passed``/``_total``, ``token_agreement_ratio``, ``capacity_max_concurrency``
        (and ``_low``/``_high``, its interval), ``capacity_max_request_rate_req_s`` (and
        ``capacity_max_request_rate_{low,high}_req_s``),
        ``sizing_{capacity_per_replica_req_s,expected_peak_req_s,replicas_needed,gpus_needed,fits}``,
        ``quality_texts_scored``, ``quality_{candidate,stable,uniform}_bits_per_byte``,
        ``quality_difference_{median,low,high}_bits_per_byte`` and ``quality_margin_bits_per_byte``,
        ``vs_stable_not_worse``, ``vs_stable_blocks`` and ``vs_stable_<metric>_{ratio,low,high}``,
        ``<level>_<check metric>`` for each judged ratio), ``<level>_<metric>`` for
        :data:`KFP_LEVEL_METRICS` (an unmeasured metric is left out, never 0),
        ``baseline_<level>_<metric>`` for the baseline's throughput and TTFT, and ``server_<name>``
        (the single server) or ``server_<role>_<name>`` (each role of an llm-d service) for the
        server view. None values are left out.
    """
    out: dict[str, float] = {"verdict_pass": 1.0 if result.get("verdict") == "pass" else 0.0}
    answers = [Answer.from_dict(a) for a in result.get("answers") or []]
    for answer in answers:
        if answer.summarized:
            # 1 yes, 0 no, -1 inconclusive: "correctness_ok", "quality_ok", "recovery_ok", "comparison_ok", "slo_ok".
            out[f"{answer.key}_ok"] = {True: 1.0, False: 0.0, None: -1.0}[answer.ok]
        for e in answer.evidence:
            out.update(e.metrics())
    for level in result.get("levels") or []:
        for name in KFP_LEVEL_METRICS:
            value = level["metrics"].get(name)
            if value is not None:
                out[f"{level['label']}_{name}"] = float(value)
    for level in result.get("baseline_levels") or []:
        for name in ("output_throughput_tok_s", "request_throughput_req_s", "p50_ttft_ms", "p95_ttft_ms"):
            value = level["metrics"].get(name)
            if value is not None:
                out[f"baseline_{level['label']}_{name}"] = float(value)
    for role, view in (result.get("server") or {}).items():
        # One "server_" prefix: the default role is itself named "server", and some view names
        # (server_ttft_mean_ms) already start with it.
        prefix = "server_" if role == "server" else f"server_{role}_"
        for name, value in view.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[prefix + name.removeprefix("server_")] = float(value)
    return {k: v for k, v in out.items() if math.isfinite(v)}
