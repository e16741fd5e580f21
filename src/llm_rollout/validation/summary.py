"""What a validation answered, for machines: the gate's questions and the flat KFP metrics.

:func:`gate_questions` puts the gate's questions side by side (the correctness suite, recovery
against the uncompressed original, the quality of the reference texts, comparison with the
stable revision, the SLO), each with its
evidence and its answer; :func:`kfp_metrics` flattens the result into KFP's ``Metrics``
artifact. Both work on the result's plain data (``ValidationResult.to_dict()``);
:mod:`llm_rollout.validation.report` shows the same in the HTML report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from llm_rollout.slo_expr import RATIO_SUFFIX
from llm_rollout.validation.probes import failure_line, tally_line
from llm_rollout.validation.stats import pct

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


def gate_questions(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The gate's questions side by side: what each compared, its evidence and its answer.

    Args:
        result: ``ValidationResult.to_dict()``.

    Returns:
        One entry per question asked (the suite when its probes ran, recovery only with an
        original served beside the candidate, comparison only with a stable revision, the SLO
        always): ``{"key", "question", "against", "decision", "ok", "evidence"}``. ``decision`` is
        ``passed``/``failed`` (correctness), ``kept``/``lost``/``inconclusive``
        (recovery), ``non-inferior``/``inferior``/``inconclusive`` (comparison), ``met``/``missed``/
        ``inconclusive`` (SLO); ``ok`` is True, False or None (inconclusive); ``evidence`` lines
        carry the measured values, intervals and what was needed.
    """
    out: list[dict[str, Any]] = []
    probes = result.get("correctness") or []
    if probes:
        out.append(_correctness_question(result, probes))
    results = ((result.get("judgement") or {}).get("results")) or []
    ratio_checks = [r for r in results if str(r.get("metric", "")).endswith(RATIO_SUFFIX)]
    baseline = result.get("baseline")
    if baseline:
        evidence: list[str] = []
        failed, unknown, outputs_lost = False, False, False
        agreement = (result.get("agreement") or {}).get("agreement")
        need = ((result.get("spec") or {}).get("recovery") or {}).get("min_token_agreement")
        if agreement is None:
            unknown = True
            evidence.append("greedy token agreement: not measured")
        else:
            ok = need is None or agreement >= need
            failed |= not ok
            outputs_lost = not ok
            needed = f" (needed >= {need:g})" if need is not None else ""
            evidence.append(f"greedy token agreement {agreement:.3f}{needed}")
        for r in ratio_checks:
            measured = r.get("measured")
            evidence.append(
                f"{r.get('level')}: {r.get('check')}: " + ("not measured" if measured is None else f"{measured:.3f}")
                + f" ({r.get('status')})"
            )  # fmt: skip
            failed |= r.get("status") == "fail"
            unknown |= r.get("status") == "not_judged"
        # "lost" only when the outputs were (token agreement); a missed speed-up with the same outputs
        # is said as such, not as a quality loss (issue 32).
        decision = ("lost" if outputs_lost else "speed-up missed") if failed else "inconclusive" if unknown else "kept"
        out.append({
            "key": "recovery", "question": QUESTION_RECOVERY, "against": baseline.get("url"), "decision": decision,
            "ok": False if failed else None if unknown else True, "evidence": evidence,
        })  # fmt: skip
    quality = result.get("quality")
    if quality:
        out.append(quality_question(quality))
    comparison = result.get("comparison")
    if comparison:
        evidence = []
        q = comparison.get("quality") or {}
        if q:
            evidence.append(
                f"quality: correctness suite passed by the candidate {q.get('candidate_passed')}/{q.get('total')}, "
                f"by the stable {q.get('stable_passed')}/{q.get('total')}"
            )
        for c in comparison.get("speed") or []:
            if c.get("ratio") is None:
                decision = str(c.get("decision", "undecided")).replace("_", " ")
                evidence.append(f"{c.get('metric')}: {decision} ({c.get('note') or 'not measured'})")
                continue
            sign = "<=" if c.get("better") == "lower" else ">="
            evidence.append(
                f"{c.get('metric')}: candidate/stable {c['ratio']:.3f} [{c['low']:.3f}, {c['high']:.3f}] at "
                f"{pct(c.get('confidence', 0))}, needed {sign} {c.get('limit', 0):.3f}: "
                + str(c.get("decision", "")).replace("_", " ")
            )  # fmt: skip
        decision = {"not_worse": "non-inferior", "worse": "inferior"}.get(comparison.get("decision"), "inconclusive")
        out.append({
            "key": "comparison", "question": QUESTION_COMPARISON, "against": comparison.get("stable_url"),
            "decision": decision, "ok": {"non-inferior": True, "inferior": False}.get(decision), "evidence": evidence,
        })  # fmt: skip
    slo = [r for r in results if not str(r.get("metric", "")).endswith(RATIO_SUFFIX)]
    if slo:
        failed = [r for r in slo if r.get("status") == "fail"]
        unknown = [r for r in slo if r.get("status") == "not_judged"]
        evidence = [
            f"{r.get('level')}: {r.get('check')}: "
            + ("not measured" if r.get("measured") is None else f"{r['measured']:.4g}") + f" ({r.get('status')})"
            for r in (failed or unknown or slo)
        ]  # fmt: skip
        decision = "missed" if failed else "inconclusive" if unknown else "met"
        out.append({
            "key": "slo", "question": QUESTION_SLO, "against": "slo.checks", "decision": decision,
            "ok": False if failed else None if unknown else True, "evidence": evidence,
        })  # fmt: skip
    return out


def _correctness_question(result: Mapping[str, Any], probes: list[dict[str, Any]]) -> dict[str, Any]:
    """The suite's entry: must-pass probes each, scored probes as a proportion (paired with the stable's)."""
    wrong = [p for p in probes if not p.get("passed")]
    must_wrong = [p for p in wrong if p.get("must_pass")]
    scored = [p for p in probes if not p.get("must_pass")]
    right = sum(1 for p in scored if p.get("passed"))
    evidence = [tally_line(len(probes) - len(wrong), len(probes))]
    evidence += [failure_line(str(p.get("name")), ", ".join(p.get("failed_checks") or [])) for p in wrong[:5]]
    if len(wrong) > 5:
        evidence.append(f"... and {len(wrong) - 5} more")
    paired = ((result.get("comparison") or {}).get("quality")) or {}
    ok: bool | None = not must_wrong
    if scored and ok:
        if "p_value" in paired:
            ok = bool(paired.get("ok"))
            n, alpha = paired.get("scored"), 1 - paired.get("confidence", 0.95)
            evidence.append(
                f"scored probes against the stable's: candidate {paired.get('candidate_right')}/{n}, stable "
                f"{paired.get('stable_right')}/{n}; only the stable right on {paired.get('only_stable')}, only the "
                f"candidate on {paired.get('only_candidate')}: McNemar's exact p = {paired.get('p_value', 1):.4g} "
                f"(fewer right beyond chance: p <= {alpha:.4g})"
            )
        elif result.get("suite_paired"):
            ok = None  # judged against the stable's, but the comparison did not run (the gate failed first)
            evidence.append(f"scored probes: {right}/{len(scored)} right; not compared with the stable's")
        else:
            need = (result.get("spec") or {}).get("suite_min_score", 1.0)
            ok = right >= need * len(scored)
            evidence.append(f"scored probes: {right}/{len(scored)} right (needed {need:g} of them, suite_min_score)")
    decision = {True: "passed", False: "failed", None: "not judged"}[ok]
    return {
        "key": "correctness", "question": QUESTION_CORRECTNESS, "against": "the suite's expected answers",
        "decision": decision, "ok": ok, "evidence": evidence,
    }  # fmt: skip


def quality_question(quality: Mapping[str, Any]) -> dict[str, Any]:
    """The quality question's entry of :func:`gate_questions` (``QualityResult.to_dict()``)."""
    evidence = [f"{quality.get('texts_scored')} texts scored from {quality.get('source')}"]
    if quality.get("note"):
        evidence.append(str(quality["note"]))
    cand, stable, uniform = quality.get("candidate_bpb"), quality.get("stable_bpb"), quality.get("uniform_bpb")
    sides = []
    if cand is not None:
        sides.append(f"candidate {cand:.3f}")
    if stable is not None:
        sides.append(f"stable {stable:.3f}")
    if sides:
        evidence.append("bits per byte: " + ", ".join(sides))
    comp = quality.get("comparison")
    if comp:
        if comp.get("ratio") is None:
            evidence.append(f"candidate - stable per text: undecided ({comp.get('note') or 'not measured'})")
        else:
            evidence.append(
                f"candidate - stable per text: median {comp['ratio']:+.4f} [{comp['low']:+.4f}, {comp['high']:+.4f}] "
                f"at {pct(comp.get('confidence', 0))}, needed <= {quality.get('margin', 0):+.4f} (validation.quality"
                f".margin), {quality.get('looks')} looks: " + str(comp.get("decision", "")).replace("_", " ")
            )
    if uniform is not None:
        beaten = "beaten" if quality.get("floor_ok") else "NOT beaten"
        evidence.append(
            f"floor: uniform guessing over {quality.get('vocab_size')} tokens = {uniform:.3f} bits per byte: {beaten}"
        )
    evidence += [str(r) for r in quality.get("inconclusive") or []]
    decision_of = quality.get("decision")
    if quality.get("stable_url"):
        against = quality["stable_url"]
        decision = {"not_worse": "non-inferior", "worse": "inferior"}.get(decision_of, "inconclusive")
        if quality.get("floor_ok") is False:
            decision = "worse than guessing"
    else:
        against = "uniform guessing over its vocabulary"
        decision = {"not_worse": "beats guessing", "worse": "worse than guessing"}.get(decision_of, "inconclusive")
    ok = {"not_worse": True, "worse": False}.get(decision_of)
    return {
        "key": "quality", "question": QUESTION_QUALITY, "against": against, "decision": decision, "ok": ok,
        "evidence": evidence,
    }  # fmt: skip


# KFP metrics ------------------------------------------------------------------------------------


def kfp_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The flat metrics for KFP's ``Metrics`` artifact (unit in every name, numbers only).

    Args:
        result: ``ValidationResult.to_dict()``.

    Returns:
        ``verdict_pass`` (1/0), ``readiness_s``, ``correctness_passed``/``_total``,
        ``token_agreement_ratio``, ``capacity_max_concurrency`` (and ``_low``/``_high``, its
        interval), ``capacity_max_request_rate_req_s`` (and ``capacity_max_request_rate_{low,high}_req_s``),
        ``sizing_{capacity_per_replica_req_s,expected_peak_req_s,replicas_needed,gpus_needed,fits}``,
        ``<question>_ok`` per question of :func:`gate_questions` (1 yes, 0 no, -1 inconclusive),
        ``quality_texts_scored``, ``quality_{candidate,stable,uniform}_bits_per_byte``,
        ``quality_difference_{median,low,high}_bits_per_byte`` and ``quality_margin_bits_per_byte``
        (the quality question),
        ``vs_stable_not_worse``, ``vs_stable_blocks`` and
        ``vs_stable_<metric>_{ratio,low,high}`` (the comparison with the stable), ``<level>_<metric>`` for
        :data:`KFP_LEVEL_METRICS`, ``baseline_<level>_<metric>`` for the baseline's throughput and
        TTFT, ``<level>_<check metric>`` for each judged ratio, and ``server_<name>`` (the single
        server) or ``server_<role>_<name>`` (each role of an llm-d service) for the server view.
        None values are left out.
    """
    out: dict[str, float] = {"verdict_pass": 1.0 if result.get("verdict") == "pass" else 0.0}
    readiness = result.get("readiness") or {}
    if readiness.get("seconds") is not None:
        out["readiness_s"] = float(readiness["seconds"])
    probes = result.get("correctness") or []
    if probes:
        out["correctness_passed"] = float(sum(1 for p in probes if p.get("passed")))
        out["correctness_total"] = float(len(probes))
    agreement = (result.get("agreement") or {}).get("agreement")
    if agreement is not None:
        out["token_agreement_ratio"] = float(agreement)
    capacity = result.get("capacity")
    if capacity:
        out["capacity_max_concurrency"] = float(capacity["max_concurrency"])
        for end in ("low", "high"):
            if capacity.get(end) is not None:
                out[f"capacity_max_concurrency_{end}"] = float(capacity[end])
    rate_capacity = result.get("rate_capacity")
    if rate_capacity:
        out["capacity_max_request_rate_req_s"] = float(rate_capacity["max_request_rate"])
        for end in ("low", "high"):
            if rate_capacity.get(end) is not None:
                out[f"capacity_max_request_rate_{end}_req_s"] = float(rate_capacity[end])
    sizing = result.get("sizing")
    if sizing:
        out["sizing_capacity_per_replica_req_s"] = float(sizing["capacity_rps"])
        out["sizing_expected_peak_req_s"] = float(sizing["expected_peak_rps"])
        out["sizing_replicas_needed"] = float(sizing["replicas_needed"])
        out["sizing_gpus_needed"] = float(sizing["gpus_needed"])
        out["sizing_fits"] = 1.0 if sizing.get("fits") else 0.0
    for question in gate_questions(result):
        # 1 yes, 0 no, -1 inconclusive: "correctness_ok", "quality_ok", "recovery_ok", "comparison_ok", "slo_ok".
        out[f"{question['key']}_ok"] = {True: 1.0, False: 0.0, None: -1.0}[question["ok"]]
    quality = result.get("quality")
    if quality:
        out["quality_texts_scored"] = float(quality.get("texts_scored") or 0)
        out["quality_margin_bits_per_byte"] = float(quality.get("margin") or 0)
        for side in ("candidate", "stable", "uniform"):
            if quality.get(f"{side}_bpb") is not None:
                out[f"quality_{side}_bits_per_byte"] = float(quality[f"{side}_bpb"])
        comp = quality.get("comparison") or {}
        for key, name in (("ratio", "median"), ("low", "low"), ("high", "high")):
            if comp.get(key) is not None:
                out[f"quality_difference_{name}_bits_per_byte"] = float(comp[key])
    comparison = result.get("comparison")
    if comparison:
        out["vs_stable_not_worse"] = 1.0 if comparison.get("decision") == "not_worse" else 0.0
        out["vs_stable_blocks"] = float(comparison.get("blocks") or 0)
        for c in comparison.get("speed") or []:
            for key in ("ratio", "low", "high"):
                if c.get(key) is not None:
                    out[f"vs_stable_{c['metric']}_{key}"] = float(c[key])
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
    for check in (result.get("judgement") or {}).get("results") or []:
        if check["metric"].endswith("_ratio_vs_baseline") and check.get("measured") is not None:
            out[f"{check['level']}_{check['metric']}"] = float(check["measured"])
    for role, view in (result.get("server") or {}).items():
        # One "server_" prefix: the default role is itself named "server", and some view names
        # (server_ttft_mean_ms) already start with it.
        prefix = "server_" if role == "server" else f"server_{role}_"
        for name, value in view.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[prefix + name.removeprefix("server_")] = float(value)
    return {k: v for k, v in out.items() if math.isfinite(v)}
